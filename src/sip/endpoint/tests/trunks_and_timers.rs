//! Trunk targets and failover (RFC 3263), reliable provisional responses (RFC 3262) and
//! session timers on our legs (RFC 4028), driven with bytes and a fake clock.

use super::*;

/// The demo tenant's trunk at `address`, with a route sending every +1 number to it.
fn route_all_to_trunk_at(h: &Harness, address: &str) {
    let mut cfg = h.tenant();
    cfg.trunks[0].address = Some(address.into());
    cfg.trunks[0].allowed_prefixes = vec!["+1".into()];
    cfg.outbound_routes = vec![crate::tenant::model::OutboundRoute {
        name: "all".into(),
        prefix: "+1".into(),
        trunk: cfg.trunks[0].id.clone(),
        strip: 0,
        prepend: String::new(),
    }];
    h.put_tenant(cfg);
}

/// The trunk name `carrier.example` resolved (for a minute) to `targets`, in order.
fn resolve_carrier_to(h: &mut Harness, targets: Vec<locate::Target>) {
    let mut table = locate::TargetTable::default();
    table.by_key.insert(
        locate::TargetKey {
            address: "carrier.example".into(),
            transport: None,
        },
        locate::Resolved {
            targets: Arc::from(targets),
            refresh_at: h.now.instant + Duration::from_secs(60),
        },
    );
    h.ep.set_trunk_targets(Arc::new(arc_swap::ArcSwap::from_pointee(table)));
}

/// A trunk by name with four targets (RFC 3263 order): the first stays silent, the second
/// (TCP) cannot be reached, the third answers 503, the fourth takes the call. Each move is
/// a new INVITE transaction to the next target with the same dialog identifiers; the caller
/// hears of none of them.
#[test]
fn a_trunk_leg_moves_through_its_targets_until_one_takes_the_call() {
    let mut h = Harness::new();
    route_all_to_trunk_at(&h, "carrier.example");
    let target = |addr: &str, transport| locate::Target {
        addr: addr.parse().expect("addr"),
        transport,
        server_name: Arc::from("sip.carrier.example"),
    };
    let targets = vec![
        target("192.0.2.61:5060", TransportKind::Udp),
        target("192.0.2.62:5060", TransportKind::Tcp),
        target("192.0.2.63:5060", TransportKind::Udp),
        target("192.0.2.64:5060", TransportKind::Udp),
    ];
    resolve_carrier_to(&mut h, targets);
    let parent = answered_trunk_call(&mut h, "failover-1");
    let caller = CallerId {
        user: "+15550100".into(),
        display: None,
        fixed: false,
    };
    assert_eq!(
        h.ep.dial_number(h.now, parent, "demo", "+15551234567", &caller),
        1
    );
    let first = h.drain();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first_line(&first[0]).starts_with("INVITE sip:+15551234567@carrier.example "));
    assert_eq!(h.sent_to.last(), Some(&"192.0.2.61:5060".parse().unwrap()));
    let call_id = header(&first[0], "Call-ID").expect("Call-ID").to_string();

    // Silence (not even 100 Trying) for 8 T1: the next target, over TCP.
    let out = h.advance(Duration::from_millis(3900));
    assert!(
        out.iter().all(|m| first_line(m).starts_with("INVITE")),
        "{out:?}"
    );
    assert!(
        h.sent_to.iter().all(|a| a.ip().to_string() == "192.0.2.61"),
        "retransmissions only so far"
    );
    let out = h.advance(Duration::from_millis(200));
    let second = out.last().expect("an INVITE to the second target");
    assert!(
        header(second, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TCP ")),
        "{second}"
    );
    assert!(
        header(second, "Contact").is_some_and(|c| c.contains("transport=tcp")),
        "{second}"
    );
    assert_eq!(header(second, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(h.sent_to.last(), Some(&"192.0.2.62:5060".parse().unwrap()));

    // Its connection cannot be opened: the third at once.
    h.ep.peer_unreachable(
        h.now,
        TransportKind::Tcp,
        "192.0.2.62:5060".parse().unwrap(),
    );
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(h.sent_to.last(), Some(&"192.0.2.63:5060".parse().unwrap()));
    let third = out[0].clone();

    // 503 from the third: ACKed, and the fourth is tried.
    let reply = |inv: &str, code: u16, reason: &str, body: &str| {
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=c1\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:192.0.2.64:5060>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            header(inv, "Via").expect("Via"),
            header(inv, "From").expect("From"),
            header(inv, "To").expect("To"),
            header(inv, "Call-ID").expect("Call-ID"),
            header(inv, "CSeq").expect("CSeq"),
            body.len()
        )
    };
    let out = h.send(
        udp_peer("192.0.2.63:5060"),
        &reply(&third, 503, "Service Unavailable", ""),
    );
    let firsts: Vec<&str> = out.iter().map(|m| first_line(m)).collect();
    assert_eq!(firsts.len(), 2, "{out:?} {:?}", h.told);
    assert!(firsts[0].starts_with("ACK "), "{firsts:?}");
    assert!(firsts[1].starts_with("INVITE "), "{firsts:?}");
    assert_eq!(h.sent_to.last(), Some(&"192.0.2.64:5060".parse().unwrap()));
    let fourth = out[1].clone();
    assert!(
        !h.told.iter().any(|t| t.starts_with("LegFailed")),
        "the caller hears of no failed target: {:?}",
        h.told
    );

    // The fourth answers: the call goes on with it.
    // The first target's transaction stopped when it was given up (no retransmissions to
    // it); the fourth's INVITE is retransmitted on UDP until answered.
    let later = h.advance(Duration::from_secs(1));
    assert!(!later.is_empty(), "the fourth's INVITE is retransmitted");
    assert!(
        h.sent_to
            .iter()
            .all(|a| *a == "192.0.2.64:5060".parse::<SocketAddr>().unwrap()),
        "{:?}",
        h.sent_to
    );
    let out = h.send(udp_peer("192.0.2.64:5060"), &reply(&fourth, 200, "OK", SDP));
    assert!(first_line(&out[0]).starts_with("ACK "), "{out:?}");
    assert!(
        h.told.iter().any(|t| t.starts_with("LegAnswered")),
        "{:?}",
        h.told
    );
    assert_eq!(h.ep.stats().trunk_failovers, 3);
}

/// A trunk by name that DNS has not (or never) answered for: the call fails at once, counted,
/// without a message on the wire.
#[test]
fn a_trunk_name_without_targets_fails_the_call_at_once() {
    let mut h = Harness::new();
    route_all_to_trunk_at(&h, "nowhere.example");
    let parent = answered_trunk_call(&mut h, "unresolved-1");
    let caller = CallerId {
        user: "+15550100".into(),
        display: None,
        fixed: false,
    };
    assert_eq!(
        h.ep.dial_number(h.now, parent, "demo", "+15551234567", &caller),
        0
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.ep.stats().trunk_unresolved, 1);
}

/// A caller that requires 100rel (RFC 3262) gets a reliable 180: resent at T1, 2·T1, … until
/// its PRACK (a PRACK naming another RSeq gets 481 and changes nothing); a caller that never
/// sends one has its call refused with 500 after 64·T1.
#[test]
fn reliable_ringing_is_resent_until_prack_and_refused_without_one() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    ring_test_at_15550509(&h);
    let require = "Require: 100rel\r\n";
    let out = h.send(peer, &invite("+15550509", "z9hG4bKr1", "r1", require, SDP));
    assert_eq!(codes(&out), vec![100, 180]);
    assert_eq!(header(&out[1], "Require"), Some("100rel"));
    assert_eq!(header(&out[1], "RSeq"), Some("1"));
    let tag = to_tag(&out[1]);
    // Resent at T1 (500 ms), then 1 s later.
    assert_eq!(codes(&h.advance(Duration::from_millis(500))), vec![180]);
    assert!(h.advance(Duration::from_millis(900)).is_empty());
    let again = h.advance(Duration::from_millis(100));
    assert_eq!(codes(&again), vec![180]);
    assert_eq!(header(&again[0], "RSeq"), Some("1"), "the same RSeq");
    let prack = |rack: &str, cseq: u32, branch: &str| {
        in_dialog("PRACK", cseq, branch, "r1", &tag, "")
            .replace("Content-Length", &format!("RAck: {rack}\r\nContent-Length"))
    };
    assert_eq!(
        codes(&h.send(peer, &prack("2 1 INVITE", 2, "z9hG4bKp2"))),
        vec![481]
    );
    assert_eq!(
        codes(&h.send(peer, &prack("1 1 INVITE", 3, "z9hG4bKp3"))),
        vec![200]
    );
    assert!(
        h.advance(Duration::from_secs(10)).is_empty(),
        "no more 180s"
    );

    // Never acknowledged: 500 after 64·T1.
    let out = h.send(peer, &invite("+15550509", "z9hG4bKr2", "r2", require, SDP));
    assert_eq!(codes(&out), vec![100, 180]);
    let mut finals = Vec::new();
    for _ in 0..40 {
        finals.extend(
            codes(&h.advance(Duration::from_secs(1)))
                .into_iter()
                .filter(|c| *c >= 200),
        );
    }
    assert_eq!(finals.first(), Some(&500), "{finals:?}");
    // A caller that only supports 100rel gets an ordinary 180.
    let out = h.send(
        peer,
        &invite("+15550509", "z9hG4bKr3", "r3", "Supported: 100rel\r\n", SDP),
    );
    assert_eq!(codes(&out), vec![100, 180]);
    assert_eq!(header(&out[1], "RSeq"), None);
}

/// A leg we placed, answered with `Session-Expires` (RFC 4028): with `refresher=uac` we send
/// an UPDATE at half the interval, again after it is accepted, and hang up (BYE) when one
/// goes unanswered; with `refresher=uas` we hang up when the phone's refresh does not come.
#[test]
fn a_leg_refreshes_its_session_by_update_and_ends_when_refreshes_stop() {
    // (we refresh, the phone's 2xx allows UPDATE): without UPDATE in Allow the refresh is a
    // re-INVITE (RFC 4028 §7.4).
    for (we_refresh, allows_update) in [(true, true), (true, false), (false, true)] {
        let mut h = Harness::new();
        let phone = udp_peer("192.0.2.10:5999");
        register_100(&mut h, phone);
        let parent = answered_trunk_call(&mut h, "leg-timer");
        let caller = CallerId {
            user: "+15557654321".into(),
            display: None,
            fixed: false,
        };
        assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 1);
        let inv = h.drain().remove(0);
        assert!(
            header(&inv, "Supported").is_some_and(|s| s.contains("timer") && s.contains("100rel")),
            "{inv}"
        );
        let refresher = if we_refresh { "uac" } else { "uas" };
        let (allow, method) = if allows_update {
            ("Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n", "UPDATE ")
        } else {
            ("", "INVITE ")
        };
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=ph1\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:100@192.0.2.10:5999>\r\n{allow}Session-Expires: 90;refresher={refresher}\r\nRequire: timer\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            header(&inv, "Via").expect("Via"),
            header(&inv, "From").expect("From"),
            header(&inv, "To").expect("To"),
            header(&inv, "Call-ID").expect("Call-ID"),
            SDP.len()
        );
        let out = h.send(phone, &ok);
        assert!(first_line(&out[0]).starts_with("ACK "), "{out:?}");
        if !we_refresh {
            // The phone never refreshes: BYE at 90 - 30 s.
            assert!(h.advance(Duration::from_secs(59)).is_empty());
            let out = h.advance(Duration::from_secs(2));
            assert!(
                out.iter().any(|m| first_line(m).starts_with("BYE ")),
                "{out:?}"
            );
            continue;
        }
        assert!(h.advance(Duration::from_secs(44)).is_empty());
        let out = h.advance(Duration::from_secs(2));
        let update = out
            .iter()
            .find(|m| first_line(m).starts_with(method))
            .unwrap_or_else(|| panic!("a refresh ({method}) at half the interval: {out:?}"))
            .clone();
        assert!(header(&update, "Session-Expires").is_some_and(|v| v.starts_with("90")));
        let accepted = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nSession-Expires: 90;refresher=uac\r\nContent-Length: 0\r\n\r\n",
            header(&update, "Via").expect("Via"),
            header(&update, "From").expect("From"),
            header(&update, "To").expect("To"),
            header(&update, "Call-ID").expect("Call-ID"),
            header(&update, "CSeq").expect("CSeq"),
        );
        let out = h.send(phone, &accepted);
        if !allows_update {
            assert!(
                out.iter().any(|m| first_line(m).starts_with("ACK ")),
                "a refresh re-INVITE's 2xx is acknowledged: {out:?}"
            );
        }
        // The next refresh 45 s on; unanswered (Timer F or B, 64 T1): BYE.
        let out = h.advance(Duration::from_secs(46));
        assert!(
            out.iter().any(|m| first_line(m).starts_with(method)),
            "{out:?}"
        );
        let out = h.advance(Duration::from_secs(40));
        assert!(
            out.iter().any(|m| first_line(m).starts_with("BYE ")),
            "{out:?}"
        );
        assert!(
            h.told.iter().any(|t| t.contains("SessionExpired")),
            "{:?}",
            h.told
        );
    }
}

/// A peer certificate in a test: the names it holds.
#[derive(Debug)]
struct CertFor(&'static str);

impl CertifiedPeer for CertFor {
    fn certifies(&self, host: &str) -> bool {
        host.eq_ignore_ascii_case(self.0)
    }
}

/// RFC 5923: a carrier that opened a TLS connection, proved its name with a certificate and
/// offered the connection (`alias`) gets our new requests for that name down it; an offer
/// from a connection without a certificate, or for a name the certificate does not hold,
/// changes nothing; once the connection closes, we open our own again.
#[test]
fn a_carrier_that_proved_its_name_is_reached_over_the_connection_it_offered() {
    let mut h = Harness::new();
    route_all_to_trunk_at(&h, "carrier.example");
    resolve_carrier_to(
        &mut h,
        vec![locate::Target {
            addr: "192.0.2.70:5061".parse().expect("addr"),
            transport: TransportKind::Tls,
            server_name: Arc::from("sip.carrier.example"),
        }],
    );
    let caller = CallerId {
        user: "+15550100".into(),
        display: None,
        fixed: false,
    };
    let tls_peer = |conn: u64, port: u16| Peer {
        transport: TransportKind::Tls,
        addr: format!("192.0.2.70:{port}").parse().expect("addr"),
        conn: Some(conn),
    };
    let options = |n: u32, sent_by: &str| {
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {sent_by};branch=z9hG4bKal{n};alias\r\n\
             From: <sip:carrier@sip.carrier.example>;tag=a{n}\r\nTo: <sip:127.0.0.1>\r\n\
             Call-ID: alias-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let parent = answered_trunk_call(&mut h, "alias-parent");
    let dial = |h: &mut Harness| {
        assert_eq!(
            h.ep.dial_number(h.now, parent, "demo", "+15551234567", &caller),
            1
        );
        let out = h.drain();
        let at = out
            .iter()
            .position(|m| first_line(m).starts_with("INVITE sip:+15551234567@"))
            .expect("the INVITE to the carrier");
        (h.sent_to[at], h.sent_on[at])
    };

    // No certificate on connection 41: its alias is not taken (routine: PJSIP phones offer
    // every TLS connection), the request answered as ever.
    let out = h.send(tls_peer(41, 40001), &options(1, "sip.carrier.example:5061"));
    assert_eq!(codes(&out), vec![200]);
    assert_eq!(h.ep.stats().aliases_refused, 0);
    let (to, on) = dial(&mut h);
    assert_eq!((to, on), ("192.0.2.70:5061".parse().unwrap(), None));

    // Connection 42 proved another name: offering the carrier's is refused too.
    h.ep.connection_certified(42, Arc::new(CertFor("imposter.example")));
    h.send(tls_peer(42, 40002), &options(2, "sip.carrier.example:5061"));
    assert_eq!(h.ep.stats().aliases_refused, 1);
    assert_eq!(dial(&mut h).1, None);

    // Connection 43 proved the carrier's name: the next INVITE goes down it.
    h.ep.connection_certified(43, Arc::new(CertFor("sip.carrier.example")));
    h.send(tls_peer(43, 40003), &options(3, "SIP.carrier.example:5061"));
    assert_eq!(h.ep.stats().aliases_refused, 1);
    assert_eq!(h.ep.stats().aliases, 1);
    assert_eq!(dial(&mut h).1, Some(43));

    // It closes: our own connection again.
    h.ep.connection_closed(h.now, 43);
    assert_eq!(h.ep.stats().aliases, 0);
    assert_eq!(dial(&mut h).1, None);
}

/// Our own Via offers the connections we open over TLS for requests back, but only when we
/// present a certificate there (the peer can check the name); never over UDP or TCP.
#[test]
fn our_via_offers_a_tls_connection_only_when_we_present_a_certificate() {
    for alias in [false, true] {
        let mut h = Harness::with(|c| {
            c.tls_port = Some(5061);
            c.tls_alias = alias;
        });
        assert_eq!(
            h.ep.via_for(TransportKind::Tls, "z9hG4bKx")
                .ends_with(";alias"),
            alias
        );
        assert!(!h
            .ep
            .via_for(TransportKind::Udp, "z9hG4bKx")
            .contains("alias"));
        assert!(!h
            .ep
            .via_for(TransportKind::Tcp, "z9hG4bKx")
            .contains("alias"));
        h.drain();
    }
}
