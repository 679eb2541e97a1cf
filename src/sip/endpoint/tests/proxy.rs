//! Requests relayed by a trusted SIP proxy (Kamailio in front of the nodes): Path kept on
//! REGISTER and followed to the phone, the client's own address from its Via for trust and
//! the digest failure limiter, and nobody else speaking for clients.

use super::*;

/// The proxy in front of the node in these tests, and where it says the phone is.
const PROXY: &str = "192.0.2.50:5060";
const PHONE_BEHIND_PROXY: &str = "198.51.100.7:40001";

/// The MD5 `WWW-Authenticate` line of the first response in `out`.
fn md5_challenge(out: &[String], what: &str) -> String {
    out[0]
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("MD5"))
        .expect(what)
        .to_string()
}

fn behind_proxy() -> Harness {
    Harness::with(|cfg| cfg.trusted_proxies = vec![("192.0.2.50".parse().expect("ip"), 32)])
}

/// `msg` as the proxy relays it: its own Via on top, the client's Via stamped with where the
/// client really is, and `extra` headers (a Path) added.
fn relayed(msg: &str, client_via_params: &str, extra: &str) -> String {
    let mut lines: Vec<String> = msg.split("\r\n").map(str::to_string).collect();
    let via = lines
        .iter()
        .position(|l| l.starts_with("Via: "))
        .expect("Via");
    lines[via] = format!("{}{client_via_params}", lines[via]);
    // Each relayed request its own transaction at the proxy, as a real one does.
    static BRANCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BRANCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lines.insert(
        via,
        format!("Via: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKproxy{n}"),
    );
    let text = lines.join("\r\n");
    text.replacen("Content-Length:", &format!("{extra}Content-Length:"), 1)
}

#[test]
fn a_register_through_a_trusted_proxy_keeps_its_path_and_calls_to_the_phone_follow_it() {
    let mut h = behind_proxy();
    let proxy = udp_peer(PROXY);
    let path = "Path: <sip:192.0.2.50;lr;received=sip:198.51.100.7:40001>\r\n";
    let stamp = ";received=198.51.100.7;rport=40001";
    let out = h.send(proxy, &relayed(&register(1, None, 3600), stamp, path));
    let challenge = md5_challenge(&out, "challenge");
    let auth = register_digest(&challenge, DigestAlgorithm::Md5, 1);
    let out = h.send(
        proxy,
        &relayed(&register(2, Some(&auth), 3600), stamp, path),
    );
    assert_eq!(codes(&out), vec![200], "{out:?}");
    assert_eq!(
        header(&out[0], "Path"),
        Some("<sip:192.0.2.50;lr;received=sip:198.51.100.7:40001>"),
        "the registrar returns the Path it stored"
    );
    let bindings = h.ep.registrations_of("demo", "100", h.now.unix);
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].path.len(), 1);
    assert_eq!(bindings[0].source, PROXY.parse().expect("addr"));

    // A call to the phone goes to the proxy, routed along the Path.
    let parent = answered_trunk_call(&mut h, "via-proxy");
    let caller = CallerId {
        user: "+15557654321".into(),
        display: None,
        fixed: false,
    };
    assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 1);
    let out = h.drain();
    assert!(
        first_line(&out[0]).starts_with("INVITE sip:100@10.9.9.9:5999"),
        "{out:?}"
    );
    assert_eq!(
        header(&out[0], "Route"),
        Some("<sip:192.0.2.50;lr;received=sip:198.51.100.7:40001>")
    );
    assert_eq!(h.sent_to, vec![PROXY.parse::<SocketAddr>().expect("addr")]);
}

#[test]
fn only_a_trusted_proxy_speaks_for_its_clients() {
    // Path from a phone itself (not a trusted proxy) is not honoured.
    let mut h = behind_proxy();
    let phone = udp_peer("192.0.2.10:5999");
    let forged = "Path: <sip:203.0.113.66;lr>\r\n";
    let out = h.send(
        phone,
        &register(1, None, 3600).replacen(
            "Content-Length:",
            &format!("{forged}Content-Length:"),
            1,
        ),
    );
    let challenge = md5_challenge(&out, "challenge");
    let auth = register_digest(&challenge, DigestAlgorithm::Md5, 1);
    let msg = register(2, Some(&auth), 3600).replacen(
        "Content-Length:",
        &format!("{forged}Content-Length:"),
        1,
    );
    assert_eq!(codes(&h.send(phone, &msg)), vec![200]);
    assert!(h.ep.registrations_of("demo", "100", h.now.unix)[0]
        .path
        .is_empty());

    // A trunk is trusted by its own address behind the proxy (127.0.0.1 is the demo's
    // carrier), not by the proxy's; an untrusted relay's Vias mean nothing.
    let carrier = ";received=127.0.0.1;rport=5999";
    let call = invite("+15550100", "z9hG4bKt1", "trunk-via-proxy", "", SDP);
    let out = h.send(udp_peer(PROXY), &relayed(&call, carrier, ""));
    assert_eq!(
        codes(&out),
        vec![100, 180, 200],
        "trusted by the carrier's address"
    );
    let stranger = ";received=203.0.113.9;rport=5999";
    let call = invite("+15550100", "z9hG4bKt2", "stranger-via-proxy", "", SDP);
    let out = h.send(udp_peer(PROXY), &relayed(&call, stranger, ""));
    assert_eq!(
        codes(&out),
        vec![100, 407],
        "a stranger behind the proxy is challenged"
    );
    let call = invite("+15550100", "z9hG4bKt3", "carrier-via-stranger", "", SDP);
    let out = h.send(udp_peer("192.0.2.51:5060"), &relayed(&call, carrier, ""));
    assert_eq!(
        codes(&out),
        vec![100, 407],
        "an untrusted relay cannot claim the carrier"
    );
}

#[test]
fn password_guessing_behind_the_proxy_blocks_the_guesser_not_the_proxy() {
    let mut h = behind_proxy();
    let proxy = udp_peer(PROXY);
    let guesser = ";received=203.0.113.9;rport=5999";
    for cseq in 1..=6 {
        let out = h.send(proxy, &relayed(&register(cseq, None, 3600), guesser, ""));
        let challenge = md5_challenge(&out, "challenge");
        let wrong = digest_header(
            &challenge,
            "100",
            "wrong",
            "REGISTER",
            "sip:127.0.0.1",
            DigestAlgorithm::Md5,
            1,
        );
        h.send(
            proxy,
            &relayed(&register(cseq + 100, Some(&wrong), 3600), guesser, ""),
        );
    }
    // The guesser is refused; user 100's own phone behind the same proxy still registers.
    let out = h.send(proxy, &relayed(&register(50, None, 3600), guesser, ""));
    let challenge = md5_challenge(&out, "challenge");
    let right_but_blocked = register_digest(&challenge, DigestAlgorithm::Md5, 1);
    let out = h.send(
        proxy,
        &relayed(&register(51, Some(&right_but_blocked), 3600), guesser, ""),
    );
    assert_eq!(codes(&out), vec![403], "{out:?}");
    let own = ";received=198.51.100.7;rport=40001";
    let out = h.send(proxy, &relayed(&register(60, None, 3600), own, ""));
    let challenge = md5_challenge(&out, "the phone is challenged, not blocked");
    let auth = register_digest(&challenge, DigestAlgorithm::Md5, 1);
    let out = h.send(proxy, &relayed(&register(61, Some(&auth), 3600), own, ""));
    assert_eq!(codes(&out), vec![200], "{out:?}");
    let _ = PHONE_BEHIND_PROXY;
}
