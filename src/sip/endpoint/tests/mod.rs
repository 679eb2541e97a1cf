//! Endpoint behaviour driven with bytes and a fake clock: no sockets, no sleeps.

use super::*;
use crate::sip::digest::{ha1, DigestCredentials};
use crate::sip::registrar::RegistrarConfig;
use crate::tenant::TenantConfig;

struct Harness {
    ep: Endpoint,
    /// The media backend: what the endpoint reserved and did not release.
    media: FakeMedia,
    /// Calls whose media the stand-in call layer took (until they end).
    started: std::collections::HashSet<u64>,
    digits: Vec<char>,
    /// Disk work the endpoint asked for.
    work: Vec<Work>,
    /// Every call event, as debug text (what the call layer was told).
    told: Vec<String>,
    /// Where each message `drain` returned was sent, in the same order.
    sent_to: Vec<SocketAddr>,
    /// The stream connection each went on (`None`: one this node opens, or UDP).
    sent_on: Vec<Option<u64>>,
    tenants: SnapshotCell,
    now: Now,
}

const PHONE: &str = "127.0.0.1:5999";
const CARRIER_IP: &str = "127.0.0.1";

fn udp_peer(addr: &str) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: addr.parse().expect("addr"),
        conn: None,
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    /// A harness whose endpoint settings `edit` changes.
    fn with(edit: impl FnOnce(&mut EndpointConfig)) -> Harness {
        let demo = crate::server::demo_tenant().expect("demo");
        let tenants = SnapshotCell::new(crate::tenant::Snapshot::new(
            1,
            vec![demo],
            Some("demo".into()),
        ));
        let media = FakeMedia::default();
        let registrar = Registrar::new(RegistrarConfig::default(), Vec::new());
        let mut cfg = EndpointConfig::default();
        cfg.auth_limits.max_failures = 3;
        // Randomness is an input: the same tags and branches on every run.
        cfg.id_seed = [1; 32];
        cfg.nonce_secret = [2; 32];
        edit(&mut cfg);
        // The call layer's real policy: routing and limits are part of what these tests check.
        let ep = Endpoint::new(
            cfg,
            tenants.clone(),
            Box::new(media.clone()),
            Box::new(crate::call::policy::TenantPolicy),
            registrar,
        );
        Harness {
            ep,
            media,
            started: Default::default(),
            digits: Vec::new(),
            work: Vec::new(),
            told: Vec::new(),
            sent_to: Vec::new(),
            sent_on: Vec::new(),
            tenants,
            now: Now {
                instant: Instant::now(),
                unix: 1_700_000_000,
            },
        }
    }

    /// RTP port pairs held: reserved by the endpoint or taken by the call layer.
    fn media_in_use(&self) -> usize {
        self.media.reserved().len() + self.started.len()
    }

    /// The demo tenant's document as the endpoint sees it now.
    fn tenant(&self) -> TenantConfig {
        self.tenants
            .load()
            .tenant("demo")
            .expect("demo")
            .config
            .clone()
    }

    /// Swaps in a new snapshot with `cfg` as the demo tenant (what the store does on a write).
    fn put_tenant(&self, cfg: TenantConfig) {
        let revision = self.tenants.revision() + 1;
        self.tenants.store(crate::tenant::Snapshot::new(
            revision,
            vec![cfg],
            Some("demo".into()),
        ));
    }

    fn advance(&mut self, d: Duration) -> Vec<String> {
        let target = self.now.instant + d;
        while let Some(at) = self.ep.poll_timeout() {
            if at > target {
                break;
            }
            self.now.instant = at;
            self.ep.handle_timeout(self.now);
        }
        self.now.instant = target;
        self.now.unix += d.as_secs();
        self.drain()
    }

    fn send(&mut self, peer: Peer, msg: &str) -> Vec<String> {
        self.ep.handle_incoming(self.now, peer, msg.as_bytes());
        self.drain()
    }

    fn drain(&mut self) -> Vec<String> {
        // Stand in for the call layer and the media engine: ring the ring test, refuse users
        // and external numbers the way the apps do without a B2BUA, answer the rest, and hold
        // each call's port pair until the call ends.
        while let Some(ev) = self.ep.poll_event() {
            self.told.push(format!("{ev:?}"));
            match ev {
                CallEvent::Incoming { call, target, .. } => {
                    use crate::tenant::model::Target;
                    match target {
                        Target::RingTest => self.ep.ring_call(self.now, call),
                        Target::User { .. } => {
                            self.ep
                                .reject_call(self.now, call, 480, "Temporarily Unavailable")
                        }
                        Target::External { .. } => {
                            self.ep.reject_call(self.now, call, 403, "Forbidden")
                        }
                        _ => {
                            self.ep.ring_call(self.now, call);
                            self.ep.answer_call(self.now, call);
                        }
                    }
                }
                CallEvent::MediaStart { call, .. } => {
                    assert!(self.media.take(call), "media starts on what was reserved");
                    self.started.insert(call);
                }
                CallEvent::Ended { call, .. } => {
                    self.started.remove(&call);
                }
                CallEvent::MediaUpdate { .. }
                | CallEvent::LegStarted { .. }
                | CallEvent::LegProgress { .. }
                | CallEvent::LegAnswered { .. }
                | CallEvent::LegFailed { .. }
                | CallEvent::Transfer { .. }
                | CallEvent::AttendedTransfer { .. }
                | CallEvent::HoldChanged { .. }
                | CallEvent::LegEarlyMedia { .. } => {}
                CallEvent::Digit { digit, .. } => self.digits.push(digit),
            }
        }
        while let Some(w) = self.ep.poll_work() {
            self.work.push(w);
        }
        let mut out = Vec::new();
        self.sent_to.clear();
        self.sent_on.clear();
        while let Some(t) = self.ep.poll_transmit() {
            out.push(String::from_utf8_lossy(&t.payload).into_owned());
            self.sent_to.push(t.peer.addr);
            self.sent_on.push(t.peer.conn);
        }
        out
    }
}

fn code(msg: &str) -> u16 {
    msg.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn codes(msgs: &[String]) -> Vec<u16> {
    msgs.iter().map(|m| code(m)).collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

fn to_tag(msg: &str) -> String {
    let to = header(msg, "To").expect("To");
    to.split(";tag=").nth(1).expect("tag").to_string()
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn invite(ruri_user: &str, branch: &str, call_id: &str, extra: &str, body: &str) -> String {
    format!(
        "INVITE sip:{ruri_user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=f1\r\nTo: <sip:{ruri_user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@127.0.0.1:5999>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(
    method: &str,
    cseq: u32,
    branch: &str,
    call_id: &str,
    tag: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:+15550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=f1\r\nTo: <sip:+15550100@127.0.0.1>;tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn options_is_answered() {
    let mut h = Harness::new();
    let out = h.send(
        udp_peer(PHONE),
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKo1\r\nFrom: <sip:lb@x>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(codes(&out), vec![200]);
    assert!(header(&out[0], "Allow").is_some_and(|a| a.contains("INVITE")));
}

#[test]
fn trunk_call_is_answered_and_2xx_retransmitted_until_ack() {
    let mut h = Harness::new();
    let peer = udp_peer(&format!("{CARRIER_IP}:5999"));
    let out = h.send(peer, &invite("+15550100", "z9hG4bKi1", "c1", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert!(out[2].contains("m=audio "));
    assert_eq!(h.media_in_use(), 1);
    let tag = to_tag(&out[2]);
    // RFC 3261 §13.3.1.4: the 200 is resent at T1, 2·T1, … while no ACK arrives.
    assert_eq!(codes(&h.advance(Duration::from_millis(500))), vec![200]);
    assert_eq!(codes(&h.advance(Duration::from_millis(1000))), vec![200]);
    // A retransmitted INVITE after the 2xx is absorbed (RFC 6026).
    assert!(h
        .send(peer, &invite("+15550100", "z9hG4bKi1", "c1", "", SDP))
        .is_empty());
    assert!(h
        .send(peer, &in_dialog("ACK", 1, "z9hG4bKa1", "c1", &tag, ""))
        .is_empty());
    assert!(h.advance(Duration::from_secs(10)).is_empty());
    let out = h.send(peer, &in_dialog("BYE", 2, "z9hG4bKb1", "c1", &tag, ""));
    assert_eq!(codes(&out), vec![200]);
    assert_eq!(h.ep.live_calls(), 0);
    assert_eq!(
        h.media_in_use(),
        0,
        "the RTP port is returned when the call ends"
    );
    // BYE retransmission answered from its transaction; a BYE for an unknown dialog gets 481.
    assert_eq!(
        codes(&h.send(peer, &in_dialog("BYE", 2, "z9hG4bKb1", "c1", &tag, ""))),
        vec![200]
    );
    assert_eq!(
        codes(&h.send(peer, &in_dialog("BYE", 3, "z9hG4bKb2", "c1", &tag, ""))),
        vec![481]
    );
}

#[test]
fn missing_ack_hangs_up_with_bye_after_64_t1() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKi2", "c2", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    let out = h.advance(Duration::from_secs(33));
    let byes: Vec<_> = out.iter().filter(|m| m.starts_with("BYE ")).collect();
    assert!(!byes.is_empty(), "a BYE after 64*T1 without ACK");
    // Retransmissions of that one BYE (Timer E) carry the same branch.
    let vias: std::collections::HashSet<_> = byes.iter().map(|m| header(m, "Via")).collect();
    assert_eq!(vias.len(), 1);
    assert!(out.iter().filter(|m| code(m) == 200).count() >= 7);
    assert_eq!(h.ep.live_calls(), 0);
    assert_eq!(h.media_in_use(), 0);
}

/// The ring test (rings, never answers) reachable as the DID +15550509.
fn ring_test_at_15550509(h: &Harness) {
    let mut cfg: TenantConfig = h.tenant();
    cfg.numbers.push(crate::tenant::model::Number {
        number: "+15550509".into(),
        target: crate::tenant::model::Target::RingTest,
    });
    h.put_tenant(cfg);
}

#[test]
fn retransmitted_invite_while_ringing_gets_the_180_again_and_cancel_gives_487() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    // 509 is reached by users only: use a DID-less target through a user login instead.
    ring_test_at_15550509(&h);
    let out = h.send(peer, &invite("+15550509", "z9hG4bKi3", "c3", "", SDP));
    assert_eq!(codes(&out), vec![100, 180]);
    assert_eq!(
        codes(&h.send(peer, &invite("+15550509", "z9hG4bKi3", "c3", "", SDP))),
        vec![180]
    );
    let cancel = "CANCEL sip:+15550509@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKi3;rport\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=f1\r\nTo: <sip:+15550509@127.0.0.1>\r\nCall-ID: c3\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.send(peer, cancel);
    assert_eq!(codes(&out), vec![200, 487]);
    assert_eq!(h.media_in_use(), 0);
    // The 487 is retransmitted (Timer G) until the ACK, which ends it.
    assert_eq!(codes(&h.advance(Duration::from_millis(500))), vec![487]);
    let tag = to_tag(&out[1]);
    let ack = in_dialog("ACK", 1, "z9hG4bKi3", "c3", &tag, "").replace("+15550100", "+15550509");
    assert!(h.send(peer, &ack).is_empty());
    assert!(h.advance(Duration::from_secs(40)).is_empty());
    assert_eq!(
        h.ep.stats().server_transactions,
        0,
        "every transaction ends"
    );
}

#[test]
fn reinvite_hold_and_resume() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKi4", "c4", "", SDP));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKa4", "c4", &tag, ""));
    let hold = SDP.replace(
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n",
    );
    let out = h.send(
        peer,
        &in_dialog("INVITE", 2, "z9hG4bKr4", "c4", &tag, &hold),
    );
    assert_eq!(codes(&out), vec![200]);
    assert!(out[0].contains("a=recvonly"), "{}", out[0]);
    h.send(peer, &in_dialog("ACK", 2, "z9hG4bKa5", "c4", &tag, ""));
    let out = h.send(peer, &in_dialog("INVITE", 3, "z9hG4bKr5", "c4", &tag, SDP));
    assert!(out[0].contains("a=sendrecv"));
    // Same port throughout, and the o= version increases.
    assert_eq!(h.media_in_use(), 1);
}

fn digest_header(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    alg: DigestAlgorithm,
    nc: u32,
) -> String {
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("nonce");
    let realm = challenge
        .split("realm=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("realm");
    let mut c = DigestCredentials {
        username: user.into(),
        realm: realm.into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: String::new(),
        algorithm: alg.token().into(),
        cnonce: Some("abcdef".into()),
        nc: Some(format!("{nc:08x}")),
        qop: Some("auth".into()),
        opaque: None,
    };
    c.response = c.expected_response(alg, method, &ha1(alg, user, realm, password));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm={}, cnonce=\"abcdef\", nc={:08x}, qop=auth",
        c.response,
        alg.token(),
        nc
    )
}

/// User 100's (password `demo100`) answer to a REGISTER challenge.
fn register_digest(challenge: &str, alg: DigestAlgorithm, nc: u32) -> String {
    digest_header(
        challenge,
        "100",
        "demo100",
        "REGISTER",
        "sip:127.0.0.1",
        alg,
        nc,
    )
}

fn register(cseq: u32, auth: Option<&str>, expires: u32) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bKreg{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=r1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:100@10.9.9.9:5999>\r\nExpires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn register_with_md5_and_sha256_and_offer_order() {
    let mut h = Harness::new();
    let peer = udp_peer("192.0.2.10:5999");
    let out = h.send(peer, &register(1, None, 3600));
    assert_eq!(codes(&out), vec![401]);
    let challenges: Vec<&str> = out[0]
        .split("\r\n")
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].contains("algorithm=MD5") && challenges[1].contains("algorithm=SHA-256"));
    let auth = register_digest(challenges[1], DigestAlgorithm::Sha256, 1);
    let out = h.send(peer, &register(2, Some(&auth), 3600));
    assert_eq!(codes(&out), vec![200]);
    assert!(header(&out[0], "Contact").is_some_and(|c| c.contains("expires=3600")));
    assert_eq!(h.ep.registrations(), 1);
    // Replaying the same credentials (same nc) is refused with a fresh challenge.
    assert_eq!(
        codes(&h.send(peer, &register(3, Some(&auth), 3600))),
        vec![401]
    );
    // MD5 on the same nonce, next nc: accepted. Too brief an interval: 423.
    let auth = register_digest(challenges[0], DigestAlgorithm::Md5, 2);
    let out = h.send(peer, &register(4, Some(&auth), 10));
    assert_eq!(codes(&out), vec![423]);
    assert_eq!(header(&out[0], "Min-Expires"), Some("60"));
    // Expired nonce: stale=true.
    h.advance(Duration::from_secs(600));
    let auth = register_digest(challenges[0], DigestAlgorithm::Md5, 3);
    let out = h.send(peer, &register(5, Some(&auth), 0));
    assert_eq!(codes(&out), vec![401]);
    assert!(out[0].contains("stale=true"));
}

#[test]
fn brute_force_is_cut_off_with_403() {
    let mut h = Harness::new();
    let peer = udp_peer("192.0.2.66:5999");
    let mut last = Vec::new();
    for i in 0..6 {
        let out = h.send(peer, &register(10 + i * 2, None, 3600));
        let ch = out[0]
            .split("\r\n")
            .find(|l| l.starts_with("WWW-Authenticate:"))
            .unwrap_or("")
            .to_string();
        if ch.is_empty() {
            last = codes(&out);
            break;
        }
        let auth = digest_header(
            &ch,
            "100",
            "guess",
            "REGISTER",
            "sip:127.0.0.1",
            DigestAlgorithm::Md5,
            1,
        );
        last = codes(&h.send(peer, &register(11 + i * 2, Some(&auth), 3600)));
    }
    assert_eq!(last, vec![403]);
    // Even the right password for 100 is refused from that address for now...
    let right = |h: &mut Harness, peer, user: &str, cseq: u32| {
        let req = |auth: Option<&str>, cseq| {
            register(cseq, auth, 3600).replace("100@", &format!("{user}@"))
        };
        let out = h.send(peer, &req(None, cseq));
        let ch = header(&out[0], "WWW-Authenticate").unwrap_or_default();
        let auth = digest_header(
            &format!("WWW-Authenticate: {ch}"),
            user,
            &format!("demo{user}"),
            "REGISTER",
            "sip:127.0.0.1",
            DigestAlgorithm::Md5,
            1,
        );
        codes(&h.send(peer, &req(Some(&auth), cseq + 1)))
    };
    assert_eq!(right(&mut h, peer, "100", 40), vec![403]);
    // ...but the other users behind that address (an office NAT) still register, and 100 from
    // another address is fine.
    assert_eq!(right(&mut h, peer, "101", 42), vec![200]);
    assert_eq!(
        right(&mut h, udp_peer("192.0.2.67:5999"), "100", 44),
        vec![200]
    );
}

#[test]
fn forged_nonces_and_other_requests_digests_lock_nobody_out() {
    let mut h = Harness::new();
    let peer = udp_peer("192.0.2.70:5999");
    // Far more junk than the limit allows: foreign nonces, a digest for another URI.
    for i in 0..20u32 {
        let forged = "Digest username=\"100\", realm=\"demo\", nonce=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\", uri=\"sip:127.0.0.1\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5";
        assert_eq!(
            codes(&h.send(peer, &register(100 + i, Some(forged), 3600))),
            vec![401]
        );
    }
    let out = h.send(peer, &register(200, None, 3600));
    let ch = header(&out[0], "WWW-Authenticate").unwrap_or_default();
    for i in 0..20u32 {
        let elsewhere = digest_header(
            &format!("WWW-Authenticate: {ch}"),
            "100",
            "guess",
            "REGISTER",
            "sip:elsewhere.example",
            DigestAlgorithm::Md5,
            i + 1,
        );
        assert_eq!(
            codes(&h.send(peer, &register(201 + i, Some(&elsewhere), 3600))),
            vec![401]
        );
    }
    assert_eq!(
        h.ep.stats().auth_failures,
        0,
        "none of that was a password guess"
    );
    let ok = register_digest(&format!("WWW-Authenticate: {ch}"), DigestAlgorithm::Md5, 1);
    assert_eq!(
        codes(&h.send(peer, &register(300, Some(&ok), 3600))),
        vec![200]
    );
}

#[test]
fn user_invite_needs_407_and_unknown_extension_is_404() {
    let mut h = Harness::new();
    let peer = udp_peer("192.0.2.20:5999");
    let inv = invite("500", "z9hG4bKu1", "u1", "", SDP);
    let out = h.send(peer, &inv);
    assert_eq!(codes(&out), vec![100, 407]);
    let ch = header(&out[1], "Proxy-Authenticate")
        .expect("challenge")
        .to_string();
    let auth = digest_header(
        &ch,
        "101",
        "demo101",
        "INVITE",
        "sip:500@127.0.0.1:5060",
        DigestAlgorithm::Md5,
        1,
    );
    let inv2 = invite(
        "500",
        "z9hG4bKu2",
        "u1",
        &format!("Proxy-Authorization: {auth}\r\n"),
        SDP,
    )
    .replace("CSeq: 1", "CSeq: 2");
    assert_eq!(codes(&h.send(peer, &inv2)), vec![100, 180, 200]);
    let auth = digest_header(
        &ch,
        "101",
        "demo101",
        "INVITE",
        "sip:777@127.0.0.1:5060",
        DigestAlgorithm::Md5,
        2,
    );
    let inv3 = invite(
        "777",
        "z9hG4bKu3",
        "u3",
        &format!("Proxy-Authorization: {auth}\r\n"),
        SDP,
    );
    assert_eq!(codes(&h.send(peer, &inv3)), vec![100, 404]);
    // A trunk source calling a non-DID is not trusted: challenged like anyone.
    assert_eq!(
        codes(&h.send(
            udp_peer("127.0.0.1:5999"),
            &invite("500", "z9hG4bKu4", "u4", "", SDP)
        )),
        vec![100, 407]
    );
}

#[test]
fn no_common_codec_is_488_and_late_offer_gets_our_offer() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let g729 = SDP.replace("RTP/AVP 0 8 101", "RTP/AVP 18");
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKn1", "n1", "", &g729))),
        vec![100, 488]
    );
    let out = h.send(peer, &invite("+15550100", "z9hG4bKn2", "n2", "", ""));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert!(out[2].contains("m=audio") && out[2].contains("a=rtpmap:8 PCMA/8000"));
}

#[test]
fn draining_refuses_new_calls_with_retry_after_and_hangs_up_the_rest() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKd1", "d1", "", SDP));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKda", "d1", &tag, ""));
    h.ep.begin_drain();
    let out = h.send(peer, &invite("+15550100", "z9hG4bKd2", "d2", "", SDP));
    assert_eq!(codes(&out), vec![100, 503]);
    assert_eq!(header(&out[1], "Retry-After"), Some("30"));
    h.ep.hangup_all(h.now);
    let out = h.drain();
    assert!(
        out[0].starts_with("BYE sip:carrier@127.0.0.1:5999 SIP/2.0"),
        "{}",
        out[0]
    );
    assert!(out[0].contains(&format!("From: <sip:+15550100@127.0.0.1>;tag={tag}")));
    assert_eq!(h.ep.live_calls(), 0);
    assert_eq!(h.ep.stats().client_transactions, 1);
    let via = header(&out[0], "Via").expect("via");
    let branch = via
        .split("branch=")
        .nth(1)
        .and_then(|b| b.split(';').next())
        .expect("branch");
    let ok = format!("SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:+15550100@127.0.0.1>;tag={tag}\r\nTo: <sip:carrier@127.0.0.1>;tag=f1\r\nCall-ID: d1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
    assert!(branch.starts_with("z9hG4bK"));
    h.send(peer, &ok);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.ep.stats().client_transactions, 0);
}

/// Drained without stopping: a balancer's OPTIONS probe gets 503 (so it sends new calls
/// elsewhere), and ended, the node answers probes and takes calls again.
#[test]
fn a_drained_node_refuses_probes_until_the_drain_ends() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let probe = |n: u32| {
        format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKp{n}\r\nFrom: <sip:lb@x>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: p{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    };
    assert_eq!(codes(&h.send(peer, &probe(1))), vec![200]);
    h.ep.begin_drain();
    assert!(h.ep.is_draining());
    let out = h.send(peer, &probe(2));
    assert_eq!(codes(&out), vec![503]);
    assert_eq!(header(&out[0], "Retry-After"), Some("30"));
    h.ep.end_drain();
    assert_eq!(codes(&h.send(peer, &probe(3))), vec![200]);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKp4", "p4", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
}

#[test]
fn config_change_reaches_new_calls_not_calls_in_progress() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKc1", "k1", "", SDP));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKca", "k1", &tag, ""));
    let mut cfg: TenantConfig = h.tenant();
    cfg.numbers.retain(|n| n.number != "+15550100");
    h.put_tenant(cfg);
    // New call: the number is gone.
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKc2", "k2", "", SDP))),
        vec![100, 407]
    );
    // The call in progress is untouched.
    assert_eq!(
        codes(&h.send(peer, &in_dialog("BYE", 2, "z9hG4bKcb", "k1", &tag, ""))),
        vec![200]
    );
}

#[test]
fn malformed_requests_get_400_with_a_warning_and_junk_is_dropped() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let bad = invite("+15550100", "z9hG4bKm1", "m1", "", SDP)
        .replace("Content-Length: ", "Content-Length: 9");
    let out = h.send(peer, &bad);
    assert_eq!(codes(&out), vec![400]);
    assert!(header(&out[0], "Warning").is_some_and(|w| w.starts_with("399 ")));
    assert!(h.send(peer, "\u{1}\u{2}garbage\r\n\r\n").is_empty());
    let unknown = "FOO sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: f1\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(codes(&h.send(peer, unknown)), vec![501]);
    // SUBSCRIBE is known, but only to the message-summary event package.
    let sub = unknown.replace("FOO", "SUBSCRIBE");
    assert_eq!(codes(&h.send(peer, &sub)), vec![489]);
    let req = unknown
        .replace("FOO", "OPTIONS")
        .replace("Content-Length", "Require: 100rel\r\nContent-Length");
    let out = h.send(peer, &req);
    assert_eq!(codes(&out), vec![420]);
    assert_eq!(header(&out[0], "Unsupported"), Some("100rel"));
}

/// RFC 4475 and our own broken messages: never a panic; invalid requests are answered with an
/// error or dropped, never with a 2xx; valid requests get an answer that is not 400.
#[test]
fn torture_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut seen = 0;
    let mut failures = Vec::new();
    for (dir, expect_valid) in [
        ("valid", Some(true)),
        ("invalid", Some(false)),
        ("ours", Some(false)),
        ("transaction", None),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("sip") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            let mut h = Harness::new();
            h.ep.handle_incoming(h.now, udp_peer(PHONE), &bytes);
            let out = h.drain();
            h.advance(Duration::from_secs(40));
            seen += 1;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            let is_request = !bytes.starts_with(b"SIP/");
            match expect_valid {
                Some(true) if is_request => {
                    let first_final = out.iter().map(|m| code(m)).find(|&c| c >= 200);
                    if first_final.is_none_or(|c| c == 400) {
                        failures.push(format!(
                            "{name}: valid message answered {:?} {:?}",
                            codes(&out),
                            out.first()
                        ));
                    }
                }
                Some(false) if out.iter().any(|m| (200..300).contains(&code(m))) => {
                    failures.push(format!(
                        "{name}: invalid message accepted: {:?}",
                        codes(&out)
                    ));
                }
                _ => {}
            }
        }
    }
    assert!(seen >= 40, "torture corpus not found ({seen} files)");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tenant_call_limit_answers_503() {
    let mut h = Harness::new();
    let mut cfg: TenantConfig = h.tenant();
    cfg.limits.max_concurrent_calls = 1;
    h.put_tenant(cfg);
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKl1", "l1", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    let tag = to_tag(&out[2]);
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKl2", "l2", "", SDP))),
        vec![100, 503]
    );
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKla", "l1", &tag, ""));
    h.send(peer, &in_dialog("BYE", 2, "z9hG4bKlb", "l1", &tag, ""));
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKl3", "l3", "", SDP))),
        vec![100, 180, 200]
    );
}

/// In a cluster the limit counts the other nodes' calls too (their heartbeats' figures).
#[test]
fn tenant_call_limit_counts_other_nodes_calls() {
    let mut h = Harness::new();
    let mut cfg: TenantConfig = h.tenant();
    cfg.limits.max_concurrent_calls = 2;
    let tenant = cfg.id.clone();
    h.put_tenant(cfg);
    let peer = udp_peer(PHONE);
    h.ep.set_remote_calls([(tenant.clone(), 2)].into_iter().collect());
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKr1", "r1", "", SDP))),
        vec![100, 503]
    );
    h.ep.set_remote_calls([(tenant.clone(), 1)].into_iter().collect());
    let (before, _) = h.ep.tenant_calls();
    let out = h.send(peer, &invite("+15550100", "z9hG4bKr2", "r2", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    let (after, counts) = h.ep.tenant_calls();
    assert!(after > before, "a started call moves the version");
    assert_eq!(counts.get(&tenant), Some(&1));
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKr3", "r3", "", SDP))),
        vec![100, 503]
    );
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKra", "r2", &tag, ""));
    h.send(peer, &in_dialog("BYE", 2, "z9hG4bKrb", "r2", &tag, ""));
    assert!(
        h.ep.tenant_calls().1.is_empty(),
        "ended calls leave the table"
    );
}

#[test]
fn sip_info_digits_join_the_call() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKf1", "f1", "", SDP));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKfa", "f1", &tag, ""));
    let info = |cseq: u32, ct: &str, body: &str| {
        in_dialog("INFO", cseq, &format!("z9hG4bKfi{cseq}"), "f1", &tag, body).replace(
            "Content-Type: application/sdp",
            &format!("Content-Type: {ct}"),
        )
    };
    assert_eq!(
        codes(&h.send(
            peer,
            &info(2, "application/dtmf-relay", "Signal=4\r\nDuration=160\r\n")
        )),
        vec![200]
    );
    assert_eq!(
        codes(&h.send(peer, &info(3, "application/dtmf", "#"))),
        vec![200]
    );
    assert_eq!(
        codes(&h.send(peer, &info(4, "application/dtmf-relay", "Duration=160"))),
        vec![400]
    );
    assert_eq!(h.digits, vec!['4', '#']);
    // INFO outside a dialog.
    let stray = info(5, "application/dtmf", "1").replace(&tag, "nope");
    assert_eq!(codes(&h.send(peer, &stray)), vec![481]);
}

/// Registers user 100 from `peer` (challenge, then an MD5 digest).
fn register_100(h: &mut Harness, peer: Peer) {
    assert_eq!(codes(&register_100_as(h, peer, 1, |r| r)), vec![200]);
}

/// Registers user 100 from `peer` with REGISTERs `edit` changes (CSeq `cseq`, then the one
/// above with an MD5 digest); what the second brought.
fn register_100_as(
    h: &mut Harness,
    peer: Peer,
    cseq: u32,
    edit: impl Fn(String) -> String,
) -> Vec<String> {
    let out = h.send(peer, &edit(register(cseq, None, 3600)));
    let challenge = out[0]
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("MD5"))
        .expect("challenge")
        .to_string();
    let auth = register_digest(&challenge, DigestAlgorithm::Md5, 1);
    h.send(peer, &edit(register(cseq + 1, Some(&auth), 3600)))
}

#[test]
fn registrations_are_written_through_work_not_by_the_endpoint() {
    let mut h = Harness::new();
    register_100(&mut h, udp_peer("192.0.2.10:5999"));
    let saved: Vec<_> = h
        .work
        .iter()
        .filter_map(|w| match w {
            Work::SaveBindings(c) => Some(c.clone()),
            Work::CountMailbox { .. } => None,
        })
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].bindings.len(), 1);
    assert_eq!(saved[0].bindings[0].uri, "sip:100@10.9.9.9:5999");
    // Expiry (housekeeping) writes the emptied list.
    h.work.clear();
    h.advance(Duration::from_secs(3700));
    h.advance(Duration::from_secs(20));
    assert!(h
        .work
        .iter()
        .any(|w| matches!(w, Work::SaveBindings(c) if c.bindings.is_empty())));
}

fn subscribe(cseq: u32, auth: Option<&str>, tag: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let to_tag = tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "SUBSCRIBE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bKsub{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=s1\r\nTo: <sip:100@127.0.0.1>{to_tag}\r\nCall-ID: sub-1\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:100@10.9.9.9:5999>\r\nEvent: message-summary\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn message_waiting_counts_come_in_as_input_and_the_endpoint_reads_no_mailbox() {
    let mut h = Harness::new();
    let peer = udp_peer("192.0.2.10:5999");
    // Without a counting runtime message waiting is not offered.
    assert_eq!(codes(&h.send(peer, &subscribe(1, None, None))), vec![489]);
    h.ep.enable_message_waiting();
    register_100(&mut h, peer);
    h.work.clear();
    let out = h.send(peer, &subscribe(2, None, None));
    assert_eq!(codes(&out), vec![401]);
    let challenge = header(&out[0], "WWW-Authenticate").expect("challenge");
    let auth = digest_header(
        &format!("WWW-Authenticate: {challenge}"),
        "100",
        "demo100",
        "SUBSCRIBE",
        "sip:100@127.0.0.1",
        DigestAlgorithm::Md5,
        1,
    );
    let out = h.send(peer, &subscribe(3, Some(&auth), None));
    assert_eq!(codes(&out), vec![200], "the NOTIFY waits for the counts");
    assert_eq!(
        h.work,
        vec![Work::CountMailbox {
            tenant: "demo".into(),
            mailbox: "100".into(),
            changed: false
        }]
    );
    h.work.clear();
    h.ep.mailbox_counts(h.now, "demo", "100", (2, 5), false);
    let out = h.drain();
    // The subscription's first NOTIFY, and the phone that registered before the counts were
    // known (there are new messages).
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out
        .iter()
        .all(|m| m.starts_with("NOTIFY ") && m.contains("Voice-Message: 2/5 (0/0)")));
    // A message arrives: counted again, then the subscription and the registered phone are
    // both told.
    h.ep.mailbox_changed("demo", "100");
    assert!(h.drain().is_empty());
    assert!(matches!(
        &h.work[..],
        [Work::CountMailbox { changed: true, .. }]
    ));
    h.ep.mailbox_counts(h.now, "demo", "100", (3, 5), true);
    let out = h.drain();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out
        .iter()
        .all(|m| m.starts_with("NOTIFY ") && m.contains("Voice-Message: 3/5")));
    // Counts for a mailbox nobody has are not kept (the table is bounded by the config).
    h.ep.mailbox_counts(h.now, "demo", "nobody", (1, 0), true);
    assert!(h.drain().is_empty());
}

#[test]
fn a_phone_that_registers_anew_is_told_its_mailbox_state_and_a_refresh_is_not() {
    let mut h = Harness::new();
    h.ep.enable_message_waiting();
    let peer = udp_peer("192.0.2.10:5999");
    // Counts not known yet: asked for, and the phone told when they come (there is a new
    // message).
    register_100(&mut h, peer);
    assert!(h.work.iter().any(|w| matches!(
        w,
        Work::CountMailbox { mailbox, changed: false, .. } if mailbox == "100"
    )));
    h.ep.mailbox_counts(h.now, "demo", "100", (1, 0), false);
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].starts_with("NOTIFY sip:100@10.9.9.9:5999 "),
        "{}",
        out[0]
    );
    assert!(out[0].contains("Messages-Waiting: yes"), "{}", out[0]);
    // The phone reboots and registers from a new port: that contact is told at once (the
    // counts are known now).
    h.work.clear();
    let reregister = |h: &mut Harness, cseq: u32, contact: &str| {
        register_100_as(h, peer, cseq, |r| r.replace("10.9.9.9:5999", contact))
    };
    let out = reregister(&mut h, 10, "10.9.9.9:6000");
    assert_eq!(code(&out[0]), 200);
    let notify: Vec<&String> = out.iter().filter(|m| m.starts_with("NOTIFY ")).collect();
    assert_eq!(notify.len(), 1, "the new contact is told: {out:?}");
    assert!(
        notify[0].starts_with("NOTIFY sip:100@10.9.9.9:6000 "),
        "{}",
        notify[0]
    );
    assert!(notify[0].contains("Voice-Message: 1/0"), "{}", notify[0]);
    assert!(h
        .work
        .iter()
        .all(|w| !matches!(w, Work::CountMailbox { .. })));
    // A refresh of a contact it already has: nothing more.
    let out = reregister(&mut h, 20, "10.9.9.9:6000");
    assert_eq!(codes(&out), vec![200], "{out:?}");
    // No new messages: a new phone is not told anything (its lamp is off already).
    h.ep.mailbox_counts(h.now, "demo", "100", (0, 1), true);
    h.drain();
    let out = reregister(&mut h, 30, "10.9.9.9:6001");
    assert_eq!(codes(&out), vec![200], "{out:?}");
}

#[test]
fn a_session_timer_is_granted_refreshed_by_update_and_ends_the_call_when_refreshes_stop() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let timer = "Supported: timer\r\nSession-Expires: 120\r\n";
    // Too brief: 422 with our minimum.
    let brief = "Supported: timer\r\nSession-Expires: 30\r\n";
    let out = h.send(peer, &invite("+15550100", "z9hG4bKst0", "st0", brief, SDP));
    assert_eq!(codes(&out), vec![100, 422]);
    assert_eq!(header(&out[1], "Min-SE"), Some("90"));
    // Granted: the caller refreshes.
    let out = h.send(peer, &invite("+15550100", "z9hG4bKst1", "st1", timer, SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert_eq!(
        header(&out[2], "Session-Expires"),
        Some("120;refresher=uac")
    );
    assert_eq!(header(&out[2], "Require"), Some("timer"));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKst1a", "st1", &tag, ""));
    // A refresh by UPDATE at 60 s: 200 with the interval; the session now ends at 60 + 88 s.
    h.advance(Duration::from_secs(60));
    let update = in_dialog("UPDATE", 2, "z9hG4bKst1u", "st1", &tag, "");
    let out = h.send(peer, &update);
    assert_eq!(codes(&out), vec![200]);
    assert_eq!(
        header(&out[0], "Session-Expires"),
        Some("120;refresher=uac")
    );
    // An offer in an UPDATE is answered in its 200 (RFC 3311), and refreshes too.
    let offer = in_dialog("UPDATE", 3, "z9hG4bKst1o", "st1", &tag, SDP);
    let out = h.send(peer, &offer);
    assert_eq!(codes(&out), vec![200]);
    assert!(out[0].contains("m=audio "), "our answer: {}", out[0]);
    let out = h.advance(Duration::from_secs(87));
    assert!(
        out.iter().all(|m| !m.starts_with("BYE ")),
        "refreshed: still up at 147 s: {out:?}"
    );
    let out = h.advance(Duration::from_secs(2));
    assert!(
        out.iter().any(|m| m.starts_with("BYE ")),
        "not refreshed again: BYE at 148 s: {out:?}"
    );
    // Without Supported: timer, no timer at all.
    let plain = "Session-Expires: 120\r\n";
    let out = h.send(peer, &invite("+15550100", "z9hG4bKst2", "st2", plain, SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert_eq!(header(&out[2], "Session-Expires"), None);
}

#[test]
fn media_is_reserved_through_the_backend_and_released_however_calls_end() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    // Answered and hung up; refused before media (no common codec); cancelled while ringing.
    let out = h.send(peer, &invite("+15550100", "z9hG4bKm1", "m1", "", SDP));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert!(out[2].contains("m=audio 40002 "), "{}", out[2]);
    assert_eq!(
        h.media.reserved(),
        Vec::<u64>::new(),
        "taken at media start"
    );
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKm1a", "m1", &tag, ""));
    h.send(peer, &in_dialog("BYE", 2, "z9hG4bKm1b", "m1", &tag, ""));
    let g729 = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n";
    assert_eq!(
        codes(&h.send(peer, &invite("+15550100", "z9hG4bKm2", "m2", "", g729))),
        vec![100, 488]
    );
    assert_eq!(h.media_in_use(), 0);
    // A browser's offer is answered with the SDP the backend made.
    let browser = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 101\r\na=rtpmap:0 PCMU/8000\r\na=fingerprint:sha-256 AA\r\n";
    let out = h.send(peer, &invite("+15550100", "z9hG4bKm3", "m3", "", browser));
    assert_eq!(codes(&out), vec![100, 180, 200]);
    assert!(out[2].contains("a=fingerprint:sha-256 00"), "{}", out[2]);
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKm3a", "m3", &tag, ""));
    h.send(peer, &in_dialog("BYE", 2, "z9hG4bKm3b", "m3", &tag, ""));
    assert_eq!(h.media_in_use(), 0);
    // No ports: 503 with Retry-After (a balancer tries another node), and nothing is held.
    h.media.exhaust();
    let out = h.send(peer, &invite("+15550100", "z9hG4bKm4", "m4", "", SDP));
    assert_eq!(codes(&out), vec![100, 503]);
    assert_eq!(header(&out[1], "Retry-After"), Some("2"));
    assert_eq!(h.media_in_use(), 0);
}

#[test]
fn digits_are_relayed_by_info_in_the_dialog_and_our_info_round_trips() {
    let mut h = Harness::new();
    let peer = udp_peer(PHONE);
    let out = h.send(peer, &invite("+15550100", "z9hG4bKd1", "d1", "", SDP));
    let tag = to_tag(&out[2]);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKd1a", "d1", &tag, ""));
    let call = h.ep.calls_of("demo", h.now)[0].id;
    h.ep.send_digit_info(h.now, call, '#');
    h.ep.send_digit_info(h.now, call, 'x');
    let out = h.drain();
    assert_eq!(out.len(), 1, "one INFO; a non-digit is not sent");
    let info = &out[0];
    assert!(
        info.starts_with("INFO sip:carrier@127.0.0.1:5999 SIP/2.0"),
        "{info}"
    );
    assert_eq!(header(info, "Call-ID"), Some("d1"));
    assert!(
        header(info, "To").is_some_and(|t| t.contains("tag=f1")),
        "{info}"
    );
    assert_eq!(header(info, "Content-Type"), Some("application/dtmf-relay"));
    // What we send is what we read (the same parser takes INFO from phones).
    let body = info.split("\r\n\r\n").nth(1).expect("body");
    assert_eq!(info_digit("application/dtmf-relay", body), Ok(Some('#')));
    // Unanswered, it is retransmitted (a client transaction, Timer E).
    assert!(h
        .advance(Duration::from_millis(600))
        .iter()
        .any(|m| m.starts_with("INFO ")));
}

/// A trunk call to the IVR number, answered and ACKed: returns its call id.
fn answered_trunk_call(h: &mut Harness, call_id: &str) -> u64 {
    let peer = udp_peer(&format!("{CARRIER_IP}:5999"));
    let out = h.send(peer, &invite("+15550100", "z9hG4bKp1", call_id, "", SDP));
    let ok = out.iter().find(|m| code(m) == 200).expect("200");
    let tag = to_tag(ok);
    h.send(peer, &in_dialog("ACK", 1, "z9hG4bKp1a", call_id, &tag, ""));
    *h.started.iter().next().expect("the call's media started")
}

/// The id of the first leg the call layer was told had started.
fn first_leg_started(h: &Harness) -> u64 {
    h.told
        .iter()
        .find_map(|t| {
            t.strip_prefix("LegStarted { leg: ")
                .and_then(|r| r.split(',').next())
        })
        .and_then(|n| n.parse::<u64>().ok())
        .expect("LegStarted")
}

/// The header block of a request we sent, minus the lines that differ by design.
fn first_line(msg: &str) -> &str {
    msg.split("\r\n").next().unwrap_or("")
}

#[test]
fn an_outgoing_leg_rings_a_registered_phone_is_acked_and_ends_on_its_bye() {
    let mut h = Harness::new();
    let phone = udp_peer("192.0.2.10:5999");
    register_100(&mut h, phone);
    let parent = answered_trunk_call(&mut h, "out-1");
    let caller = CallerId {
        user: "+15557654321".into(),
        display: Some("Carrier \"quoted\"".into()),
        fixed: false,
    };
    assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 1);
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    let inv = &out[0];
    assert!(
        first_line(inv).starts_with("INVITE sip:100@10.9.9.9:5999"),
        "{inv}"
    );
    // The display name is quoted again with its quote escaped; the offer is ours.
    assert!(
        header(inv, "From")
            .is_some_and(|f| f.contains(r#""Carrier \"quoted\"" <sip:+15557654321@"#)),
        "{inv}"
    );
    assert!(inv.contains("m=audio ") && inv.contains("a=rtpmap:101 telephone-event/8000"));
    let leg = first_leg_started(&h);
    assert_eq!(h.media.reserved().len(), 1, "the leg's port is held");

    // 180 then 200 from the phone: the 200 is ACKed and the leg's media starts.
    let via = header(inv, "Via").expect("Via").to_string();
    let call_id = header(inv, "Call-ID").expect("Call-ID").to_string();
    let from = header(inv, "From").expect("From").to_string();
    let to = header(inv, "To").expect("To").to_string();
    let reply = |code: u16, reason: &str, body: &str| {
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "SIP/2.0 {code} {reason}\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag=ph1\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:100@192.0.2.10:5999>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert!(h.send(phone, &reply(180, "Ringing", "")).is_empty());
    let out = h.send(phone, &reply(200, "OK", SDP));
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        first_line(&out[0]).starts_with("ACK sip:100@192.0.2.10:5999"),
        "{}",
        out[0]
    );
    assert!(h
        .told
        .iter()
        .any(|t| t.starts_with(&format!("LegAnswered {{ leg: {leg} }}"))));
    assert!(h.started.contains(&leg), "the leg's media started");
    // A retransmitted 200 is ACKed again (the transaction is over: the core answers).
    let again = h.send(phone, &reply(200, "OK", SDP));
    assert!(first_line(&again[0]).starts_with("ACK "), "{again:?}");

    // The phone hangs up: 200 to its BYE, and the leg is gone.
    let bye = format!(
        "BYE sip:{}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5999;branch=z9hG4bKbye1\r\nFrom: {to};tag=ph1\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        "+15557654321"
    );
    assert_eq!(codes(&h.send(phone, &bye)), vec![200]);
    assert!(
        h.told
            .iter()
            .any(|t| t.starts_with(&format!("Ended {{ call: {leg},"))),
        "{:?}",
        h.told
    );
    assert!(!h.started.contains(&leg));
    assert_eq!(h.media.reserved().len(), 0);
}

#[test]
fn the_same_seed_makes_the_same_messages() {
    let run = || {
        let mut h = Harness::new();
        register_100(&mut h, udp_peer("192.0.2.10:5999"));
        let parent = answered_trunk_call(&mut h, "seed-1");
        let caller = CallerId {
            user: "+15557654321".into(),
            display: None,
            fixed: false,
        };
        h.ep.dial_user(h.now, parent, "demo", "100", &caller);
        h.drain()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "tags, branches, Call-IDs and SDP ids are inputs");
}

#[test]
fn a_trunk_registers_with_digest_and_refreshes_before_expiry() {
    let mut h = Harness::new();
    let mut cfg = h.tenant();
    cfg.trunks[0].address = Some("192.0.2.50:5070".into());
    cfg.trunks[0].username = Some("acct".into());
    cfg.trunks[0].password = Some("s3cret".into());
    cfg.trunks[0].register = true;
    h.put_tenant(cfg);
    h.ep.sync_trunk_registrations(h.now);
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(first_line(&out[0]).starts_with("REGISTER sip:192.0.2.50:5070 "));
    assert!(header(&out[0], "Authorization").is_none());
    let provider = udp_peer("192.0.2.50:5070");
    let answer = |req: &str, status: &str, extra: &str| {
        format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=reg1\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            header(req, "Via").expect("Via"),
            header(req, "From").expect("From"),
            header(req, "To").expect("To"),
            header(req, "Call-ID").expect("Call-ID"),
            header(req, "CSeq").expect("CSeq"),
        )
    };
    let challenge = "WWW-Authenticate: Digest realm=\"carrier.example\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\n";
    let out = h.send(provider, &answer(&out[0], "401 Unauthorized", challenge));
    assert_eq!(out.len(), 1, "{out:?}");
    let auth = header(&out[0], "Authorization").expect("answers the challenge");
    let creds = DigestCredentials::parse(auth).expect("digest");
    let secret = ha1(DigestAlgorithm::Md5, "acct", "carrier.example", "s3cret");
    assert_eq!(
        creds.response,
        creds.expected_response(DigestAlgorithm::Md5, "REGISTER", &secret)
    );
    assert!(creds.cnonce.is_some());
    let out = h.send(provider, &answer(&out[0], "200 OK", "Expires: 120\r\n"));
    assert!(out.is_empty(), "{out:?}");
    assert!(matches!(
        h.ep.trunk_registrations()[..],
        [(_, _, TrunkRegState::Registered { .. })]
    ));
    // Refreshed at 80 % of the granted time, not before.
    assert!(h.advance(Duration::from_secs(90)).is_empty());
    let out = h.advance(Duration::from_secs(10));
    assert!(
        out.iter().any(|m| first_line(m).starts_with("REGISTER ")),
        "{out:?}"
    );
}

#[test]
fn hold_from_one_party_is_passed_to_the_other_as_a_reinvite() {
    let mut h = Harness::new();
    let peer = udp_peer(&format!("{CARRIER_IP}:5999"));
    let call = answered_trunk_call(&mut h, "hold-1");
    h.ep.reinvite_hold(h.now, call, true);
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    let reinvite = &out[0];
    assert!(
        first_line(reinvite).starts_with("INVITE sip:carrier@127.0.0.1:5999"),
        "{reinvite}"
    );
    assert!(reinvite.contains("a=sendonly"), "{reinvite}");
    // The caller answers 200: we ACK it.
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: hold-1\r\nCSeq: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
        header(reinvite, "Via").expect("Via"),
        header(reinvite, "From").expect("From"),
        header(reinvite, "To").expect("To"),
        header(reinvite, "CSeq").expect("CSeq"),
        SDP.len(),
        SDP
    );
    let out = h.send(peer, &ok);
    assert!(
        out.iter().any(|m| first_line(m).starts_with("ACK ")),
        "{out:?}"
    );
}

#[test]
fn a_tcp_phone_whose_connection_closed_is_called_on_a_new_one_at_its_own_address() {
    let mut h = Harness::new();
    let tcp = Peer {
        transport: TransportKind::Tcp,
        addr: "192.0.2.10:40001".parse().expect("addr"),
        conn: Some(5),
    };
    let over_tcp = |r: String, contact: &str| {
        r.replace("SIP/2.0/UDP 10.9.9.9:5999", "SIP/2.0/TCP 192.0.2.10:40001")
            .replace("<sip:100@10.9.9.9:5999>", contact)
    };
    let register_at = |h: &mut Harness, contact: &str, cseq: u32| {
        let out = register_100_as(h, tcp, cseq, |r| over_tcp(r, contact));
        assert_eq!(codes(&out), vec![200], "{out:?}");
    };
    register_at(&mut h, "<sip:100@192.0.2.10:5062;transport=tcp>", 1);
    h.ep.connection_closed(h.now, 5);
    assert_eq!(
        h.ep.registrations_of("demo", "100", h.now.unix).len(),
        1,
        "a TCP contact outlives its connection"
    );
    let caller = CallerId {
        user: "+15557654321".into(),
        display: None,
        fixed: false,
    };
    let parent = answered_trunk_call(&mut h, "tcp-phone");
    assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 1);
    let out = h.drain();
    assert!(
        first_line(&out[0]).starts_with("INVITE sip:100@192.0.2.10:5062;transport=tcp"),
        "{out:?}"
    );
    assert!(header(&out[0], "Via").is_some_and(|v| v.starts_with("SIP/2.0/TCP")));
    assert_eq!(
        h.sent_to,
        vec!["192.0.2.10:5062".parse::<SocketAddr>().expect("addr")],
        "its Contact's port, on the address it registered from"
    );

    // A Contact naming another host is not dialled: a user can't make this node connect to
    // whatever address it likes.
    let mut h = Harness::new();
    register_at(&mut h, "<sip:100@203.0.113.9:6379;transport=tcp>", 1);
    h.ep.connection_closed(h.now, 5);
    let parent = answered_trunk_call(&mut h, "elsewhere");
    assert_eq!(h.ep.dial_user(h.now, parent, "demo", "100", &caller), 0);
}

mod proxy;
mod srtp;
mod transfer;
mod trunks_and_timers;
