//! SRTP policy on calls that come in without an offer (late offer): under `required` our
//! offer in the 200 carries RTP/SAVP and our key (over TLS only), and the ACK's answer is
//! held to it.

use super::*;

/// An SDP answer with SRTP (`savp`) or plain RTP, in the suite we offer.
fn answer(savp: bool) -> String {
    if savp {
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6002 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
            .into()
    } else {
        SDP.into()
    }
}

#[test]
fn a_late_offer_under_required_srtp_gets_our_key_and_a_plain_answer_ends_the_call() {
    let mut h = Harness::new();
    let mut cfg = h.tenant();
    cfg.settings.srtp = crate::tenant::model::SrtpPolicy::Required;
    h.put_tenant(cfg);
    let tls = Peer {
        transport: TransportKind::Tls,
        addr: format!("{CARRIER_IP}:5999").parse().expect("addr"),
        conn: Some(9),
    };

    // Over UDP our offer could carry no key: refused.
    let udp = udp_peer(&format!("{CARRIER_IP}:5999"));
    let out = h.send(udp, &invite("+15550100", "z9hG4bKl0", "late-0", "", ""));
    assert!(codes(&out).contains(&488), "{out:?}");

    // Over TLS: our offer has SRTP and a key; answered with SRTP, the media starts.
    let offer_and_ack = |h: &mut Harness, n: u32, savp: bool| {
        let call_id = format!("late-{n}");
        let out = h.send(
            tls,
            &invite("+15550100", &format!("z9hG4bKl{n}"), &call_id, "", ""),
        );
        let ok = out.iter().find(|m| code(m) == 200).expect("200").clone();
        assert!(ok.contains("m=audio ") && ok.contains(" RTP/SAVP "), "{ok}");
        assert!(
            ok.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{ok}"
        );
        let tag = to_tag(&ok);
        let ack = in_dialog(
            "ACK",
            1,
            &format!("z9hG4bKl{n}a"),
            &call_id,
            &tag,
            &answer(savp),
        );
        h.send(tls, &ack)
    };
    let out = offer_and_ack(&mut h, 1, true);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.started.len(), 1, "the SRTP call's media started");

    // Answered plain in the ACK: the call ends (BYE), no media for it.
    let out = offer_and_ack(&mut h, 2, false);
    assert!(
        out.iter().any(|m| first_line(m).starts_with("BYE ")),
        "{out:?}"
    );
    assert_eq!(h.started.len(), 1, "only the first call has media");
}
