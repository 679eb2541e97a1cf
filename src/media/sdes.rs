//! SRTP for a phone or trunk leg keyed by SDES (RFC 4568): the engine unprotects what
//! arrives before the leg sees it, and protects what the leg sends, so everything else
//! (jitter buffer, DTMF, recording, bridging to a plain or browser leg) works on plain RTP.
//!
//! The cryptography is webrtc-rs' `rtc-srtp` (RFC 3711, RFC 7714) on the AWS-LC provider,
//! the one str0m's DTLS-SRTP uses for browser legs. One context per direction: ours is keyed
//! with the key our SDP gave, the peer's with the key its SDP gave.
//!
//! Packets that fail authentication (or replay) are dropped and counted, never passed on.
//! The receiving context keeps state per SSRC, created before authentication: so that
//! someone spraying forged SSRCs at the port cannot grow it without bound, it is rebuilt
//! after [`REBUILD_AFTER_FAILURES`] failures in a row (a genuine stream only loses its
//! rollover estimate, which starts again at 0 as it does for every new stream).

use rtc_crypto::RTCCryptoProvider as _;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use switchyard_sdp::{SrtpKeys, SrtpSuite};

/// Failed packets in a row after which the receiving context starts afresh.
const REBUILD_AFTER_FAILURES: u32 = 1024;

/// Packets remembered for replay detection (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 128;

static PROVIDER: rtc_crypto::providers::AwsLcRsProvider =
    rtc_crypto::providers::AwsLcRsProvider::new();

/// Why a leg's SRTP could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("SRTP keys refused: {0}")]
pub struct SdesError(String);

/// What became of a packet that arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Unprotected {
    /// Authentic: the plain packet.
    Plain(Vec<u8>),
    /// Dropped: failed authentication, a replay, or not SRTP at all.
    Refused(String),
}

/// One leg's SRTP contexts. See the module documentation.
pub struct SdesCrypto {
    keys: SrtpKeys,
    send: Context,
    recv: Context,
    failures_in_a_row: u32,
}

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn context(material: &[u8], suite: SrtpSuite, replay: bool) -> Result<Context, SdesError> {
    if material.len() != suite.material_len() {
        return Err(SdesError(format!(
            "{} needs {} bytes of key and salt, got {}",
            suite.name(),
            suite.material_len(),
            material.len()
        )));
    }
    let (key, salt) = material.split_at(suite.key_len());
    let (rtp, rtcp) = if replay {
        (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
    } else {
        (None, None)
    };
    Context::new(key, salt, profile(suite), rtp, rtcp, PROVIDER.crypto())
        .map_err(|e| SdesError(e.to_string()))
}

impl SdesCrypto {
    /// Contexts for `keys` (ours sends, the peer's receives).
    pub fn new(keys: &SrtpKeys) -> Result<SdesCrypto, SdesError> {
        Ok(SdesCrypto {
            send: context(&keys.local, keys.suite, false)?,
            recv: context(&keys.remote, keys.suite, true)?,
            keys: keys.clone(),
            failures_in_a_row: 0,
        })
    }

    /// New keys from a later offer/answer (a re-INVITE): a direction whose key changed starts
    /// a new context; one whose key stayed keeps its rollover and replay state.
    pub fn rekey(&mut self, keys: &SrtpKeys) -> Result<(), SdesError> {
        if keys.suite != self.keys.suite || keys.local != self.keys.local {
            self.send = context(&keys.local, keys.suite, false)?;
        }
        if keys.suite != self.keys.suite || keys.remote != self.keys.remote {
            self.recv = context(&keys.remote, keys.suite, true)?;
        }
        self.keys = keys.clone();
        Ok(())
    }

    /// Protects an RTP packet the leg made (`None` only for a packet too short to be RTP).
    pub fn protect_rtp(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        self.send.encrypt_rtp(pkt).ok().map(Vec::from)
    }

    /// Protects an RTCP packet the leg made.
    pub fn protect_rtcp(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        self.send.encrypt_rtcp(pkt).ok().map(Vec::from)
    }

    /// Checks and decrypts an SRTP packet.
    pub fn unprotect_rtp(&mut self, pkt: &[u8]) -> Unprotected {
        let r = self.recv.decrypt_rtp(pkt).map(Vec::from);
        self.outcome(r.map_err(|e| e.to_string()))
    }

    /// Checks and decrypts an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, pkt: &[u8]) -> Unprotected {
        let r = self.recv.decrypt_rtcp(pkt).map(Vec::from);
        self.outcome(r.map_err(|e| e.to_string()))
    }

    fn outcome(&mut self, r: Result<Vec<u8>, String>) -> Unprotected {
        match r {
            Ok(p) => {
                self.failures_in_a_row = 0;
                Unprotected::Plain(p)
            }
            Err(why) => {
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= REBUILD_AFTER_FAILURES {
                    self.failures_in_a_row = 0;
                    if let Ok(fresh) = context(&self.keys.remote, self.keys.suite, true) {
                        self.recv = fresh;
                    }
                }
                Unprotected::Refused(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::write_packet;

    fn keys(suite: SrtpSuite, local: u8, remote: u8) -> SrtpKeys {
        SrtpKeys {
            tag: 1,
            suite,
            local: vec![local; suite.material_len()],
            remote: vec![remote; suite.material_len()],
        }
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_packet(
            &mut out,
            false,
            0,
            seq,
            u32::from(seq) * 160,
            ssrc,
            &[0x55; 160],
        );
        out
    }

    #[test]
    fn each_suite_round_trips_and_refuses_forgeries_and_replays() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
        ] {
            let mut us = SdesCrypto::new(&keys(suite, 1, 2)).expect("ours");
            let mut peer = SdesCrypto::new(&keys(suite, 2, 1)).expect("peer's");
            let plain = rtp(7, 42);
            let wire = us.protect_rtp(&plain).expect("protected");
            assert_ne!(&wire[12..172], &plain[12..172], "payload encrypted");
            assert_eq!(peer.unprotect_rtp(&wire), Unprotected::Plain(plain.clone()));
            assert!(
                matches!(peer.unprotect_rtp(&wire), Unprotected::Refused(_)),
                "replay refused"
            );
            let mut forged = us.protect_rtp(&rtp(8, 42)).expect("protected");
            forged[20] ^= 1;
            assert!(matches!(
                peer.unprotect_rtp(&forged),
                Unprotected::Refused(_)
            ));
            assert!(matches!(
                peer.unprotect_rtp(&plain),
                Unprotected::Refused(_)
            ));
            assert!(matches!(
                peer.unprotect_rtp(b"\x80"),
                Unprotected::Refused(_)
            ));
        }
    }

    #[test]
    fn a_flood_of_forged_ssrcs_resets_the_receiving_state() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut us = SdesCrypto::new(&keys(suite, 1, 2)).expect("ours");
        let mut peer = SdesCrypto::new(&keys(suite, 2, 1)).expect("peer's");
        for i in 0..(REBUILD_AFTER_FAILURES * 2) {
            let mut p = rtp(1, i);
            p.extend_from_slice(&[0; 10]);
            assert!(matches!(peer.unprotect_rtp(&p), Unprotected::Refused(_)));
        }
        let wire = us.protect_rtp(&rtp(9, 5)).expect("protected");
        assert!(matches!(peer.unprotect_rtp(&wire), Unprotected::Plain(_)));
    }

    #[test]
    fn a_rekey_keeps_the_direction_whose_key_stayed() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut us = SdesCrypto::new(&keys(suite, 1, 2)).expect("ours");
        let mut peer = SdesCrypto::new(&keys(suite, 2, 1)).expect("peer's");
        let first = peer.protect_rtp(&rtp(1, 9)).expect("protected");
        assert!(matches!(us.unprotect_rtp(&first), Unprotected::Plain(_)));
        us.rekey(&keys(suite, 1, 3)).expect("rekeyed");
        peer.rekey(&keys(suite, 3, 1)).expect("rekeyed");
        let second = peer.protect_rtp(&rtp(2, 9)).expect("protected");
        assert!(matches!(us.unprotect_rtp(&second), Unprotected::Plain(_)));
        let back = us.protect_rtp(&rtp(3, 10)).expect("protected");
        assert!(matches!(peer.unprotect_rtp(&back), Unprotected::Plain(_)));
        assert!(SdesCrypto::new(&SrtpKeys {
            local: vec![1; 3],
            ..keys(suite, 1, 2)
        })
        .is_err());
    }
}
