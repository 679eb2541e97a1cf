//! Whether an offer's media may be answered as it asks: SRTP keyed in the SDP (SDES, RFC
//! 4568) only over TLS, and as the tenant's [`SrtpPolicy`] says. An answer that uses SRTP
//! gets our key here: made once per call from the OS's random source, then kept for every
//! later answer in the call, so a re-INVITE (hold, resume) does not restart our stream.

use super::TransportKind;
use crate::sdp::{NegotiatedAudio, SrtpKeys};
use crate::tenant::model::SrtpPolicy;
use rand::RngCore as _;

/// Why an offer's media was refused (answered 488 with this as the Warning text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpRefused {
    /// `RTP/SAVP` with its keys readable on the wire.
    #[error("SRTP keys must not be offered without TLS")]
    NotOverTls,
    /// The tenant turned SRTP off.
    #[error("SRTP is not used for this tenant")]
    Off,
    /// The tenant requires SRTP and the offer (or its absence, or an answer) is plain RTP.
    #[error("this service requires SRTP (RTP/SAVP over TLS)")]
    Required,
    /// An answer with SRTP to an offer of plain RTP.
    #[error("SRTP in an answer to a plain RTP offer")]
    NotOffered,
}

/// True for transports whose signalling keys stay secret.
pub(super) fn secure(transport: TransportKind) -> bool {
    matches!(transport, TransportKind::Tls | TransportKind::Wss)
}

/// Checks `audio`, negotiated from an offer that came over `transport`, and gives it our
/// key: `previous` (the one this call already sends with) when its suite is the same, else a
/// new one.
pub(super) fn admit(
    audio: &mut NegotiatedAudio,
    transport: TransportKind,
    policy: SrtpPolicy,
    previous: Option<&SrtpKeys>,
) -> Result<(), SrtpRefused> {
    if audio.browser {
        return Ok(()); // DTLS-SRTP, always encrypted
    }
    let Some(keys) = audio.srtp.as_mut() else {
        return match policy {
            SrtpPolicy::Required => Err(SrtpRefused::Required),
            _ => Ok(()),
        };
    };
    if !secure(transport) {
        return Err(SrtpRefused::NotOverTls);
    }
    if policy == SrtpPolicy::Off {
        return Err(SrtpRefused::Off);
    }
    keys.local = match previous.filter(|p| p.suite == keys.suite && !p.local.is_empty()) {
        Some(p) => p.local.clone(),
        None => {
            let mut k = vec![0u8; keys.suite.material_len()];
            rand::rngs::OsRng.fill_bytes(&mut k);
            k
        }
    };
    Ok(())
}

/// Keys for an offer of ours (on a leg we place, or in the 200 to an INVITE that came
/// without one): under a policy that requires SRTP, a new
/// key (`AES_CM_128_HMAC_SHA1_80`, the suite every SRTP phone runs), and only towards a
/// target reached over TLS; otherwise plain RTP.
pub(super) fn for_our_offer(
    transport: TransportKind,
    policy: SrtpPolicy,
) -> Result<Option<SrtpKeys>, SrtpRefused> {
    let browser = matches!(transport, TransportKind::Ws | TransportKind::Wss);
    if policy != SrtpPolicy::Required || browser {
        return Ok(None); // browsers: DTLS-SRTP, as for calls they place (`admit`)
    }
    if !secure(transport) {
        return Err(SrtpRefused::Required);
    }
    let suite = crate::sdp::SrtpSuite::AesCm128HmacSha1_80;
    let mut local = vec![0u8; suite.material_len()];
    rand::rngs::OsRng.fill_bytes(&mut local);
    Ok(Some(SrtpKeys {
        tag: 1,
        suite,
        remote: Vec::new(),
        local,
    }))
}

/// The answer to an offer of ours: SRTP exactly when we offered it, in the suite we offered;
/// our key goes with the peer's into the negotiated audio.
pub(super) fn accept_answer(
    answer: &mut NegotiatedAudio,
    offered: Option<&SrtpKeys>,
) -> Result<(), SrtpRefused> {
    if answer.browser {
        return Ok(());
    }
    match (answer.srtp.as_mut(), offered) {
        (None, None) => Ok(()),
        (Some(k), Some(ours)) if k.suite == ours.suite => {
            k.local = ours.local.clone();
            Ok(())
        }
        (Some(_), None) => Err(SrtpRefused::NotOffered),
        _ => Err(SrtpRefused::Required),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{negotiate, SessionDescription, SrtpSuite};

    fn offer(savp: bool) -> NegotiatedAudio {
        let m = if savp {
            "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        } else {
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        };
        let sdp = format!("v=0\r\nc=IN IP4 10.0.0.5\r\n{m}");
        negotiate(&SessionDescription::parse(sdp.as_bytes()).expect("sdp")).expect("neg")
    }

    #[test]
    fn srtp_only_over_tls_and_as_the_tenant_says() {
        use SrtpPolicy::*;
        use TransportKind::*;
        for (savp, transport, policy, want) in [
            (true, Udp, Optional, Err(SrtpRefused::NotOverTls)),
            (true, Tcp, Required, Err(SrtpRefused::NotOverTls)),
            (true, Tls, Off, Err(SrtpRefused::Off)),
            (true, Tls, Optional, Ok(())),
            (true, Tls, Required, Ok(())),
            (false, Tls, Required, Err(SrtpRefused::Required)),
            (false, Udp, Optional, Ok(())),
            (false, Udp, Off, Ok(())),
        ] {
            let mut a = offer(savp);
            assert_eq!(
                admit(&mut a, transport, policy, None),
                want,
                "{savp} {transport:?} {policy:?}"
            );
            if want.is_ok() && savp {
                assert_eq!(a.srtp.as_ref().map(|k| k.local.len()), Some(30));
            }
        }
    }

    #[test]
    fn our_offers_carry_a_key_only_when_required_and_answers_must_match() {
        use SrtpPolicy::*;
        use TransportKind::*;
        assert_eq!(for_our_offer(Tls, Optional), Ok(None));
        assert_eq!(for_our_offer(Udp, Required), Err(SrtpRefused::Required));
        assert_eq!(for_our_offer(Wss, Required), Ok(None));
        assert_eq!(for_our_offer(Ws, Required), Ok(None));
        let ours = for_our_offer(Tls, Required).expect("ok").expect("keys");
        let mut answer = offer(true);
        accept_answer(&mut answer, Some(&ours)).expect("accepted");
        assert_eq!(answer.srtp.as_ref().expect("keys").local, ours.local);
        assert_eq!(
            accept_answer(&mut offer(false), Some(&ours)),
            Err(SrtpRefused::Required)
        );
        assert_eq!(
            accept_answer(&mut offer(true), None),
            Err(SrtpRefused::NotOffered)
        );
        accept_answer(&mut offer(false), None).expect("plain for plain");
    }

    #[test]
    fn a_later_offer_keeps_our_key_and_two_calls_do_not_share_one() {
        let mut first = offer(true);
        admit(&mut first, TransportKind::Tls, SrtpPolicy::Optional, None).expect("ok");
        let ours = first.srtp.clone().expect("keys");
        let mut again = offer(true);
        admit(
            &mut again,
            TransportKind::Tls,
            SrtpPolicy::Optional,
            Some(&ours),
        )
        .expect("ok");
        assert_eq!(again.srtp.as_ref().expect("keys").local, ours.local);
        let mut other = offer(true);
        admit(&mut other, TransportKind::Tls, SrtpPolicy::Optional, None).expect("ok");
        assert_ne!(other.srtp.as_ref().expect("keys").local, ours.local);
        assert_eq!(ours.suite, SrtpSuite::AesCm128HmacSha1_80);
    }
}
