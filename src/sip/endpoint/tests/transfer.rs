//! Attended transfer refusals (RFC 3891 via REFER): a phone may only hand over a call it
//! placed through us and that was answered; anything else gets NOTIFY 481 and changes
//! nothing.

use super::*;

/// A phone (100, at 192.0.2.10) that answered a leg of a carrier's call, and the call: the
/// leg's id, its INVITE, and our to-tag on the carrier's dialog (Call-ID `xfer-a`, its
/// from-tag `f1`).
fn phone_on_a_carriers_call(h: &mut Harness) -> (u64, String, String) {
    let phone = udp_peer("192.0.2.10:5999");
    register_100(h, phone);
    let carrier = udp_peer(&format!("{CARRIER_IP}:5999"));
    let out = h.send(
        carrier,
        &invite("+15550100", "z9hG4bKx1", "xfer-a", "", SDP),
    );
    let ok = out.iter().find(|m| code(m) == 200).expect("200");
    let carrier_tag = to_tag(ok);
    h.send(
        carrier,
        &in_dialog("ACK", 1, "z9hG4bKx1a", "xfer-a", &carrier_tag, ""),
    );
    let parent = *h.started.iter().next().expect("the call's media started");
    let caller = CallerId {
        user: "+15557654321".into(),
        display: None,
        fixed: false,
    };
    assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 1);
    let out = h.drain();
    let inv = out[0].clone();
    let leg = first_leg_started(h);
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=ph1\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:100@192.0.2.10:5999>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        header(&inv, "Via").expect("Via"),
        header(&inv, "From").expect("From"),
        header(&inv, "To").expect("To"),
        header(&inv, "Call-ID").expect("Call-ID"),
        SDP.len()
    );
    let acked = h.send(phone, &ok);
    assert!(first_line(&acked[0]).starts_with("ACK "), "{acked:?}");
    (leg, inv, carrier_tag)
}

/// The phone's REFER on its leg, with `Replaces` naming `call_id`, `to_tag`, `from_tag`.
fn refer_replacing(inv: &str, n: u32, call_id: &str, to_tag: &str, from_tag: &str) -> String {
    format!(
        "REFER sip:+15557654321@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5999;branch=z9hG4bKrf{n}\r\nFrom: {};tag=ph1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} REFER\r\nContact: <sip:100@192.0.2.10:5999>\r\nRefer-To: <sip:200@127.0.0.1?Replaces={call_id}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}>\r\nContent-Length: 0\r\n\r\n",
        header(inv, "To").expect("To"),
        header(inv, "From").expect("From"),
        header(inv, "Call-ID").expect("Call-ID"),
        n + 1
    )
}

/// The final NOTIFY's sipfrag status line among `out`.
fn final_notify(out: &[String]) -> &str {
    out.iter()
        .filter(|m| first_line(m).starts_with("NOTIFY "))
        .find(|m| m.contains("terminated"))
        .and_then(|m| m.split("\r\n\r\n").nth(1))
        .unwrap_or("")
}

#[test]
fn a_phone_cannot_hand_over_another_phones_call_or_one_that_does_not_exist() {
    let mut h = Harness::new();
    let (leg, inv, carrier_tag) = phone_on_a_carriers_call(&mut h);
    let phone = udp_peer("192.0.2.10:5999");

    // The carrier's own call (placed from another address): not the phone's to give away.
    let out = h.send(
        phone,
        &refer_replacing(&inv, 1, "xfer-a", &carrier_tag, "f1"),
    );
    assert_eq!(code(&out[0]), 202, "{out:?}");
    assert!(final_notify(&out).starts_with("SIP/2.0 481"), "{out:?}");
    // A dialog nobody has.
    let out = h.send(phone, &refer_replacing(&inv, 2, "nowhere", "t", "f"));
    assert!(final_notify(&out).starts_with("SIP/2.0 481"), "{out:?}");
    // The right dialog with a wrong from-tag.
    let out = h.send(
        phone,
        &refer_replacing(&inv, 3, "xfer-a", &carrier_tag, "forged"),
    );
    assert!(final_notify(&out).starts_with("SIP/2.0 481"), "{out:?}");

    assert_eq!(h.ep.stats().replaces_refused, 3);
    assert!(
        !h.told.iter().any(|t| t.starts_with("AttendedTransfer")),
        "{:?}",
        h.told
    );
    assert!(h.started.contains(&leg), "the phone's call goes on");
}
