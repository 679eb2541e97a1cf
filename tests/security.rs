//! Attacks on the wire, as issue "safe to put on the internet" lists them: each test plays the
//! attacker against the real binary with raw sockets, SIPp or HTTP, and checks that the attack
//! fails while the legitimate peer keeps working.

mod common;

use common::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An RTP packet as an attacker forges it: the payload type we would accept, its own SSRC,
/// consecutive sequence numbers.
fn forged_rtp(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// RTP bleed: an attacker on another host sprays every port of the RTP range (before and
/// during the call) with runs of valid-looking packets and RFC 4733 digits. It must receive
/// nothing, inject no digit, and the caller must still hear its echo.
#[test]
fn rtp_bleed_spraying_the_port_range_gets_no_audio_and_injects_nothing() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let attacker = UdpSocket::bind("127.0.0.66:0").expect("attacker bind");
    attacker
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let spray = {
        let stop = stop.clone();
        let first = p.rtp_first;
        std::thread::spawn(move || {
            let mut received = 0u64;
            let mut seq = 0u16;
            let silence = [0xffu8; 160];
            let digit = [5u8, 10, 0, 160];
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                for port in (first..first + 20).step_by(2) {
                    // A burst that is a perfect run on its own, then a digit event.
                    for k in 0..4u16 {
                        let pkt = forged_rtp(0, seq.wrapping_add(k), 0xbad, &silence);
                        let _ = attacker.send_to(&pkt, ("127.0.0.1", port));
                    }
                    let ev = forged_rtp(96, seq.wrapping_add(4), 0xbad, &digit);
                    let _ = attacker.send_to(&ev, ("127.0.0.1", port));
                    let _ =
                        attacker.send_to(&[0x80, 200, 0, 1, 0, 0, 0, 1], ("127.0.0.1", port + 1));
                }
                seq = seq.wrapping_add(5);
                let mut buf = [0u8; 2048];
                while attacker.recv_from(&mut buf).is_ok() {
                    received += 1;
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            received
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&sine_wave(1000.0, 3.0)),
        &["-s", "+15550600", "-d", "4000"],
    );
    stop.store(true, Ordering::SeqCst);
    let stolen = spray.join().expect("attacker");
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    assert_eq!(
        stolen, 0,
        "the attacker received {stolen} packets of the call"
    );
    // The caller still heard its own tone through the echo test.
    let to_caller: Vec<i16> = cap
        .finish()
        .iter()
        .filter(|d| d.dst_port == p.sipp_media && d.payload.len() == 172)
        .flat_map(|d| {
            d.payload[12..]
                .iter()
                .map(|&b| ulaw_to_linear(b))
                .collect::<Vec<_>>()
        })
        .collect();
    let start = to_caller
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("the caller's tone came back");
    let f = tone_frequency(&to_caller[start + 800..start + 8800]);
    assert!((f - 1000.0).abs() < 10.0, "echo at {f} Hz");
    let log = server.log_text();
    assert!(
        !log.contains("digit received"),
        "a forged digit reached the call:\n{log}"
    );
}

/// A caller whose SDP names someone else's address (a flood aimed at a victim) and who never
/// sends media itself: the server stops sending there after its grace period.
#[test]
fn sdp_pointing_at_a_victim_is_not_flooded_past_the_grace_period() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    // SIPp announces 127.0.0.77 (the "victim") and streams nothing; the looping prompt would
    // otherwise be sent there for the whole call.
    let (ok, out) = sipp(
        &server,
        &p,
        "media_silent.xml",
        &[
            "-m",
            "1",
            "-s",
            "+15550601",
            "-d",
            "15000",
            "-mi",
            "127.0.0.77",
        ],
    );
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    let to_victim: Vec<u64> = cap
        .finish()
        .iter()
        .filter(|d| d.dst_port == p.sipp_media && d.src_port % 2 == 0)
        .map(|d| d.at_us)
        .collect();
    assert!(!to_victim.is_empty(), "the server never sent (test broken)");
    let first = to_victim[0];
    let last = *to_victim.last().expect("last");
    let span = (last - first) as f64 / 1e6;
    assert!(
        span < 10.5,
        "media went to a silent peer for {span:.1} s ({} packets)\n{}",
        to_victim.len(),
        server.log_text()
    );
    assert!(
        server.log_text().contains("stopped sending to it"),
        "{}",
        server.log_text()
    );
}

/// Sends `msg` from `sock` to the server and returns the first answer.
fn ask(sock: &UdpSocket, port: u16, msg: &str) -> String {
    let r = udp_exchange(sock, port, msg, Duration::from_millis(1500));
    r.into_iter()
        .find(|m| m.starts_with("SIP/2.0"))
        .unwrap_or_default()
}

fn header_value(msg: &str, name: &str) -> String {
    msg.split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Registers a raw UDP socket as user 101 (digest answered with the library's client code).
fn register_raw_101(sock: &UdpSocket, port: u16) {
    let me = sock.local_addr().expect("addr");
    let req = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKr{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=reg\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: reg-{}@x\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:101@{me}>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n",
            me.port()
        )
    };
    let first = ask(sock, port, &req(1, ""));
    let challenge = header_value(&first, "WWW-Authenticate");
    let auth = switchyard::sip::digest::authorization_for(
        &challenge,
        "REGISTER",
        &format!("sip:127.0.0.1:{port}"),
        "101",
        "demo101",
        rand::random(),
    )
    .expect("answer the challenge");
    let ok = ask(sock, port, &req(2, &format!("Authorization: {auth}\r\n")));
    assert!(ok.starts_with("SIP/2.0 200"), "register: {ok}");
}

/// Number +15550101 rings user 101 (plus `edit`), and a raw UDP phone registers as 101.
fn did_101_with_raw_phone(server: &Server, edit: impl FnOnce(&mut serde_json::Value)) -> UdpSocket {
    edit_demo(server, |doc| {
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(serde_json::json!({"number": "+15550101", "target": {"type": "user", "extension": "101"}}));
        edit(doc);
    });
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    register_raw_101(&phone, server.sip_port);
    phone
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    phone
}

/// A trunk caller's INVITE to +15550101 with `from` as its From header value.
fn invite_101(caller: &UdpSocket, port: u16, from: &str, tag: &str) {
    let me = caller.local_addr().expect("addr");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:+15550101@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{tag}\r\nMax-Forwards: 70\r\nFrom: {from};tag={tag}\r\nTo: <sip:+15550101@127.0.0.1>\r\nCall-ID: {tag}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    caller
        .send_to(invite.as_bytes(), ("127.0.0.1", port))
        .expect("send");
}

/// The first INVITE the phone receives within `wait`.
fn invite_reaching(phone: &UdpSocket, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        if let Ok((n, _)) = phone.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with("INVITE ") {
                return Some(m);
            }
        }
    }
    None
}

/// A caller whose From user carries an escaped CRLF and an auto-answer header: the phone's
/// INVITE must carry it escaped inside the URI, never as a header of its own.
#[test]
fn header_injection_through_the_from_user_never_reaches_the_phone() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let phone = did_101_with_raw_phone(&server, |_| {});
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    let hostile = "x%0d%0aCall-Info:%20%3Csip:a%3E%3Banswer-after=0%0d%0aAlert-Info:%20auto";
    invite_101(
        &caller,
        p.sip,
        &format!("\"Eve \\\"the boss\\\"\" <sip:{hostile}@127.0.0.1>"),
        "inj1",
    );
    let to_phone = invite_reaching(&phone, Duration::from_secs(5)).unwrap_or_else(|| {
        let answer = udp_exchange(&caller, p.sip, "", Duration::from_millis(200));
        panic!(
            "the phone was not called; caller got {answer:?}\n{}",
            server.log_text()
        )
    });
    let (head, _) = to_phone.split_once("\r\n\r\n").expect("head");
    for line in head.split("\r\n") {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        assert!(
            !matches!(name.as_str(), "call-info" | "alert-info" | "x"),
            "injected header reached the phone: {line:?}\n{to_phone}"
        );
    }
    let from = header_value(&to_phone, "From");
    // Never decoded into raw CR/LF: the user reaches the phone still escaped (its `%` escaped
    // once more for the URI).
    assert!(
        from.to_ascii_lowercase().contains("%250d%250a"),
        "the user stays escaped: {from}"
    );
    assert!(!server.log_text().contains("x\r\nCall-Info"));
    // Hang the call up: the phone refuses it.
    let via = header_value(&to_phone, "Via");
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\nVia: {via}\r\nFrom: {from}\r\nTo: {};tag=ph\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header_value(&to_phone, "To"),
        header_value(&to_phone, "Call-ID"),
        header_value(&to_phone, "CSeq")
    );
    let _ = phone.send_to(busy.as_bytes(), ("127.0.0.1", p.sip));
}

/// Password guesses for 101 from one address get that username refused there, without
/// locking out user 100 behind the same address; the blocks show in /metrics.
#[test]
fn guessing_one_users_password_blocks_that_user_not_the_office() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_SIP_AUTH_MAX_FAILURES", "5")]);
    let (ok, out) = sipp(
        &server,
        &p,
        "register_wrong_password.xml",
        &[
            "-m", "12", "-r", "50", "-s", "101", "-au", "101", "-ap", "guess",
        ],
    );
    assert!(ok, "guesses must all be refused:\n{out}");
    let log = server.log_text();
    assert!(
        log.contains("too many failed authentications") && log.contains("username=\"101\""),
        "{log}"
    );
    assert!(!log.contains("guess"), "a password reached the log");
    // The real 100 behind the same address still registers; 101 itself is refused for now.
    let (ok, out) = sipp(
        &server,
        &p,
        "register_only.xml",
        &["-m", "1", "-s", "100", "-au", "100", "-ap", "demo100"],
    );
    assert!(ok, "user 100 was locked out by 101's guesses:\n{out}");
    let (ok, _) = sipp(
        &server,
        &p,
        "register_only.xml",
        &[
            "-m", "1", "-s", "101", "-au", "101", "-ap", "demo101", "-timeout", "5s",
        ],
    );
    assert!(!ok, "101 must be refused from the guessing address for now");
    let m = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", server.api_port))
        .expect("metrics")
        .text()
        .expect("text");
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(value("switchyard_sip_auth_blocks_total") >= 1, "{m}");
    assert!(value("switchyard_sip_auth_refused_total") >= 1, "{m}");
}

/// Junk keys from one address get 429, but the valid admin key from that same address (every
/// admin behind a proxy) keeps working.
#[test]
fn junk_api_keys_never_lock_out_the_valid_key() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let http = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/tenants", server.api_port);
    let mut limited = false;
    for i in 0..30 {
        let r = http
            .get(&url)
            .bearer_auth(format!("junk-{i}"))
            .send()
            .expect("junk");
        limited |= r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(limited, "junk keys were never throttled");
    let r = http.get(&url).bearer_auth(ADMIN_KEY).send().expect("admin");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

fn tenant_etag(server: &Server) -> String {
    let r = reqwest::blocking::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/v1/tenants/demo",
            server.api_port
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("get");
    r.headers()["etag"].to_str().expect("etag").to_string()
}

/// ETags are keyed: the same document gives different tags under different node secrets (so a
/// tag reveals nothing about the hashes inside), and the same tag on nodes sharing one.
#[test]
fn etags_are_keyed_by_the_node_secret() {
    let a = "aa".repeat(32);
    let b = "bb".repeat(32);
    let tag = |secret: &str| {
        let p = ports();
        let s = Server::start(&p, &[("SWITCHYARD_SIP_NONCE_SECRET", secret)]);
        tenant_etag(&s)
    };
    let (ta, tb, ta2) = (tag(&a), tag(&b), tag(&a));
    assert_ne!(ta, tb, "the tag must depend on the secret");
    assert_eq!(ta, ta2, "nodes sharing the secret agree");
}

/// A tenant's own write key cannot take domains, realms or numbers, or raise its limits; and
/// even the operator cannot give a tenant the node's address or another tenant's realm.
#[test]
fn tenant_keys_cannot_take_what_is_the_operators() {
    use serde_json::{json, Value};
    let p = ports();
    let server = Server::start(&p, &[]);
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{}/v1/tenants", server.api_port);
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/demo-tenant.json")).expect("demo"),
    )
    .expect("json");
    let mut acme = demo.clone();
    acme["id"] = json!("acme");
    acme["name"] = json!("Acme");
    acme["domains"] = json!(["acme.example"]);
    acme["realm"] = json!("acme.example");
    acme["numbers"] = json!([]);
    let r = http
        .post(&base)
        .bearer_auth(ADMIN_KEY)
        .json(&acme)
        .send()
        .expect("create");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::CREATED,
        "{}",
        r.text().unwrap_or_default()
    );
    let key: Value = http
        .post(format!("{base}/acme/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "ops"}))
        .send()
        .expect("key")
        .json()
        .expect("json");
    let key = key["key"].as_str().expect("key").to_string();
    let get = |path: &str| {
        let r = http
            .get(format!("{base}/acme{path}"))
            .bearer_auth(&key)
            .send()
            .expect("get");
        let tag = r.headers()["etag"].to_str().expect("etag").to_string();
        (tag, r.json::<Value>().expect("json"))
    };
    let put = |path: &str, body: &Value, tag: &str| {
        http.put(format!("{base}/acme{path}"))
            .bearer_auth(&key)
            .header("If-Match", tag)
            .json(body)
            .send()
            .expect("put")
    };
    // Raise its own limits, claim the demo DID, take demo's domain: 403 each, naming the field.
    let (tag, mut limits) = get("/limits");
    limits["max_concurrent_calls"] = json!(1_000_000);
    let r = put("/limits", &limits, &tag);
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let (tag, _) = get("/numbers");
    let r = put(
        "/numbers",
        &json!([{"number": "+15559990000", "target": {"type": "echo"}}]),
        &tag,
    );
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let (tag, mut doc) = get("");
    doc["domains"] = json!(["demo.switchyard.test"]);
    let r = put("", &doc, &tag);
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let body: Value = r.json().expect("problem");
    assert_eq!(body["errors"][0]["path"], "domains", "{body}");
    // What is the tenant's own still works through its key.
    let (tag, mut doc) = get("");
    doc["name"] = json!("Acme Inc");
    assert_eq!(put("", &doc, &tag).status(), reqwest::StatusCode::OK);
    // Not even the operator may give a tenant the node's address or demo's realm.
    for (field, value) in [
        ("domains", json!(["127.0.0.1"])),
        ("realm", json!("demo.switchyard.test")),
    ] {
        let r = http
            .get(format!("{base}/acme"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("get");
        let tag = r.headers()["etag"].to_str().expect("etag").to_string();
        let mut doc: Value = r.json().expect("json");
        doc[field] = value;
        let r = http
            .put(format!("{base}/acme"))
            .bearer_auth(ADMIN_KEY)
            .header("If-Match", tag)
            .json(&doc)
            .send()
            .expect("put");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{field}"
        );
    }
}

/// `limits.max_call_secs` ends a call that runs longer (the caller gets our BYE), with the
/// cause in the log.
#[test]
fn calls_end_at_the_tenants_maximum_length() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    edit_demo(&server, |doc| {
        doc["limits"]["max_call_secs"] = serde_json::json!(2);
    });
    let started = Instant::now();
    // SIPp would hang up after 8 s; our BYE after 2 s comes first (an unexpected BYE for SIPp).
    let (ok, _) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&sine_wave(440.0, 6.0)),
        &["-s", "+15550600", "-d", "8000", "-timeout", "15s"],
    );
    assert!(!ok, "SIPp should have been hung up on");
    assert!(started.elapsed() < Duration::from_secs(7));
    let log = server.log_text();
    assert!(log.contains("maximum call length reached"), "{log}");
}

/// Outgoing legs count toward the tenant's concurrent calls: with a limit of one, the
/// incoming call is that one and the phone is never rung.
#[test]
fn outgoing_legs_count_toward_the_tenant_call_limit() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let phone = did_101_with_raw_phone(&server, |doc| {
        doc["limits"]["max_concurrent_calls"] = serde_json::json!(1);
    });
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    invite_101(&caller, p.sip, "<sip:+15557654321@127.0.0.1>", "lim1");
    assert!(
        invite_reaching(&phone, Duration::from_secs(3)).is_none(),
        "the phone was rung past the limit"
    );
    let log = server.log_text();
    assert!(
        log.contains("tenant call limit reached: outgoing leg refused"),
        "{log}"
    );
}

/// Trunk fields end up in REGISTER and INVITE lines: control characters are refused, and so
/// is a trunk pointing back at the node (loopback) unless the operator allows local trunks.
#[test]
fn trunk_fields_that_would_reach_the_wire_are_validated() {
    use serde_json::{json, Value};
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_TENANT_ALLOW_LOCAL_TRUNKS", "false")]);
    let http = reqwest::blocking::Client::new();
    let url = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/trunks",
        server.api_port
    );
    let good = json!({"id": "carrier", "address": "192.0.2.10:5060", "username": "acct1",
        "password": "pw", "caller_id": "+15550100", "allowed_prefixes": ["+1"]});
    let attempts = [
        ("address", json!("127.0.0.1:5060")),
        ("address", json!("169.254.169.254:80")),
        ("address", json!("0.0.0.0:5060")),
        ("address", json!("sip.example\r\nX-Evil: 1")),
        ("address", json!("under_score.example")),
        ("address", json!("sip.example:0")),
        ("username", json!("acct\r\nX-Evil: 1")),
        (
            "caller_id",
            json!("+1555\r\nCall-Info: <sip:a>;answer-after=0"),
        ),
        ("username", json!("a b")),
    ];
    for (field, value) in attempts {
        let r = http.get(&url).bearer_auth(ADMIN_KEY).send().expect("get");
        let tag = r.headers()["etag"].to_str().expect("etag").to_string();
        let mut trunk = good.clone();
        trunk[field] = value.clone();
        let r = http
            .put(&url)
            .bearer_auth(ADMIN_KEY)
            .header("If-Match", tag)
            .json(&json!([trunk]))
            .send()
            .expect("put");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{field} = {value} was accepted"
        );
        let body: Value = r.json().expect("problem");
        assert!(
            body.to_string().contains(&format!("0.{field}")),
            "the problem names the field: {body}"
        );
    }
    let r = http.get(&url).bearer_auth(ADMIN_KEY).send().expect("get");
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let r = http
        .put(&url)
        .bearer_auth(ADMIN_KEY)
        .header("If-Match", tag)
        .json(&json!([good]))
        .send()
        .expect("put");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

/// An unauthenticated INVITE over UDP gets one 407, not a train of Timer G retransmissions:
/// a spoofed source cannot turn us into an amplifier.
#[test]
fn challenges_to_unverified_sources_are_not_retransmitted() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:101@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKamp1\r\nMax-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=amp\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: amp-1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:100@{me}>\r\nContent-Length: 0\r\n\r\n",
        port = p.sip
    );
    // Sent once, never ACKed; whatever comes back in 5 s is counted (Timer G would have
    // repeated the 407 at 0.5, 1.5, 3.5 s).
    let got = udp_exchange(&sock, p.sip, &invite, Duration::from_secs(5));
    let finals: Vec<&String> = got
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 407"))
        .collect();
    assert_eq!(finals.len(), 1, "{got:?}\n{}", server.log_text());
    let bytes: usize = got.iter().map(String::len).sum();
    assert!(
        bytes < 3 * invite.len(),
        "{bytes} bytes back for a {}-byte INVITE",
        invite.len()
    );
}

/// An OPTIONS from `sock` to the server, its own transaction and dialog named by `tag`.
fn options(sock: &UdpSocket, port: u16, tag: &str) -> String {
    let me = sock.local_addr().expect("addr");
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{tag}\r\nMax-Forwards: 70\r\nFrom: <sip:o@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {tag}@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One address cannot hold more server transactions than its share: past the bound its new
/// requests go unanswered, while another address is served.
#[test]
fn one_source_cannot_fill_the_transaction_table() {
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_SIP_MAX_TRANSACTIONS_PER_SOURCE", "20")]);
    // Not 127.0.0.1: the demo tenant's sandbox trunk is there, and trunks are exempt.
    let flood = UdpSocket::bind("127.0.0.3:0").expect("bind");
    for i in 0..60 {
        flood
            .send_to(
                options(&flood, p.sip, &format!("fl{i}")).as_bytes(),
                ("127.0.0.1", p.sip),
            )
            .expect("send");
    }
    let answered = udp_exchange(&flood, p.sip, "", Duration::from_millis(1500))
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 200"))
        .count();
    assert_eq!(answered, 20, "{}", server.log_text());
    let other = UdpSocket::bind("127.0.0.2:0").expect("bind");
    let got = udp_exchange(
        &other,
        p.sip,
        &options(&other, p.sip, "ok"),
        Duration::from_millis(1500),
    );
    assert!(got.iter().any(|m| m.starts_with("SIP/2.0 200")), "{got:?}");
}

/// TCP connections per address are bounded, and a connection that never sends a SIP message
/// is closed long before the normal idle timeout.
#[test]
fn tcp_connections_are_bounded_per_address_and_silent_ones_closed() {
    use std::io::Read;
    use std::net::TcpStream;
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_SIP_TCP_MAX_CONNECTIONS_PER_IP", "5")]);
    let open = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| TcpStream::connect(("127.0.0.1", p.sip)).expect("connect"))
            .collect()
    };
    let conns = open(8);
    std::thread::sleep(Duration::from_millis(300));
    // Closed by the server: a read returns 0 (EOF) or an error at once.
    let closed = |c: &TcpStream| {
        let mut c = c.try_clone().expect("clone");
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut b = [0u8; 16];
        matches!(c.read(&mut b), Ok(0))
            || matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    };
    let refused = conns.iter().filter(|c| closed(c)).count();
    assert_eq!(refused, 3, "{}", server.log_text());
    // The five accepted ones said nothing: they are closed within the first-message window
    // (10 s), not the 600 s idle timeout.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut all_closed = false;
    while Instant::now() < deadline && !all_closed {
        std::thread::sleep(Duration::from_millis(500));
        all_closed = conns.iter().all(&closed);
    }
    assert!(all_closed, "silent connections were kept open");
}

/// The data directory holds trunk passwords and HA1 hashes: it is the owner's alone, and so is
/// every file the server writes there.
#[test]
fn data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let p = ports();
    let data = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = Server::start_in(&p, &[], data);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(server.data_path()), 0o700, "data_dir");
    let mut checked = 0;
    let mut stack = vec![server.data_path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = e.path();
            // The test harness writes the server's log itself, with its own umask.
            if path.file_name().is_some_and(|n| n == "server.log") {
                continue;
            }
            let m = mode(&path);
            assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
            checked += 1;
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(checked > 3, "only {checked} entries checked");
}

/// `/metrics` is open on loopback by default; with `api.metrics = "key"` it needs a key.
#[test]
fn metrics_need_a_key_when_so_configured() {
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_API_METRICS", "key")]);
    let http = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", server.api_port);
    let r = http.get(&url).send().expect("metrics");
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = http
        .get(&url)
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("metrics");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(r.text().expect("text").contains("switchyard_calls_active"));
}

/// A sniffed Proxy-Authorization header works for nothing else: not for another call to
/// another destination, not again.
#[test]
fn a_sniffed_digest_answer_cannot_be_replayed() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let sock = UdpSocket::bind("127.0.0.5:0").expect("bind");
    let me = sock.local_addr().expect("addr");
    let invite = |to: &str, cid: &str, cseq: u32, auth: &str| {
        format!(
            "INVITE sip:{to}@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag={cid}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: {cid}@x\r\nCSeq: {cseq} INVITE\r\nContact: <sip:100@{me}>\r\n{auth}Content-Length: 0\r\n\r\n",
            port = p.sip
        )
    };
    let first = udp_exchange(
        &sock,
        p.sip,
        &invite("500", "r1", 1, ""),
        Duration::from_millis(500),
    );
    let challenge = first
        .iter()
        .find(|m| m.starts_with("SIP/2.0 407"))
        .map(|m| header_value(m, "Proxy-Authenticate"))
        .expect("challenged");
    let answer = switchyard::sip::digest::authorization_for(
        &challenge,
        "INVITE",
        &format!("sip:500@127.0.0.1:{}", p.sip),
        "100",
        "demo100",
        rand::random(),
    )
    .expect("answer");
    let auth = format!("Proxy-Authorization: {answer}\r\n");
    // The legitimate call goes through (the echo test, extension 500, answers).
    let ok = udp_exchange(
        &sock,
        p.sip,
        &invite("500", "r1", 2, &auth),
        Duration::from_millis(800),
    );
    assert!(ok.iter().any(|m| m.starts_with("SIP/2.0 200")), "{ok:?}");
    // The same header on a new call, to the same place or elsewhere: challenged again.
    for (to, cid) in [("500", "r2"), ("101", "r3")] {
        let replay = udp_exchange(
            &sock,
            p.sip,
            &invite(to, cid, 1, &auth),
            Duration::from_millis(800),
        );
        // The first call's 200 is still retransmitted (we never ACK it): only this call counts.
        let replay: Vec<&String> = replay
            .iter()
            .filter(|m| m.contains(&format!("Call-ID: {cid}@x")))
            .collect();
        assert!(
            replay.iter().any(|m| m.starts_with("SIP/2.0 407"))
                && !replay.iter().any(|m| m.starts_with("SIP/2.0 200")),
            "replayed answer accepted for {to}: {replay:?}"
        );
    }
    assert!(server.log_text().contains("digest credentials rejected"));
}

/// Message-waiting subscriptions hold state and draw NOTIFYs: one user cannot pile them up.
#[test]
fn subscriptions_per_user_are_bounded() {
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_SIP_MAX_SUBSCRIPTIONS_PER_USER", "2")]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr");
    let subscribe = |cid: &str, cseq: u32, auth: &str| {
        format!(
            "SUBSCRIBE sip:100@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKs{cid}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag={cid}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {cid}@x\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:100@{me}>\r\nEvent: message-summary\r\nAccept: application/simple-message-summary\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n",
            port = p.sip
        )
    };
    let mut codes = Vec::new();
    for cid in ["m1", "m2", "m3"] {
        let first = ask(&sock, p.sip, &subscribe(cid, 1, ""));
        let challenge = header_value(&first, "WWW-Authenticate");
        let auth = switchyard::sip::digest::authorization_for(
            &challenge,
            "SUBSCRIBE",
            &format!("sip:100@127.0.0.1:{}", p.sip),
            "100",
            "demo100",
            rand::random(),
        )
        .expect("answer");
        let answer = udp_exchange(
            &sock,
            p.sip,
            &subscribe(cid, 2, &format!("Authorization: {auth}\r\n")),
            Duration::from_millis(800),
        );
        let code = answer
            .iter()
            .find(|m| m.starts_with("SIP/2.0") && m.contains(&format!("Call-ID: {cid}@x")))
            .and_then(|m| m.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_default();
        codes.push(code);
    }
    assert_eq!(codes, ["200", "200", "403"], "{}", server.log_text());
}

/// A SIPp scenario for `*97` that enters `pins` (each ended by `#`) by SIP INFO, one after
/// another, and then takes the server's BYE (three wrong PINs end the call).
fn wrong_pins_scenario(dir: &std::path::Path, pins: &[&str]) -> std::path::PathBuf {
    let listen =
        std::fs::read_to_string(repo().join("integration/sipp/mailbox_listen.xml")).expect("xml");
    let head_end = listen
        .find("  <pause milliseconds=\"1200\"/>")
        .expect("the PIN part of mailbox_listen.xml");
    let mut xml = listen[..head_end].to_string();
    xml.push_str("  <pause milliseconds=\"1200\"/>\n");
    let mut cseq = 3;
    for pin in pins {
        for digit in pin.chars().chain(std::iter::once('#')) {
            xml.push_str(&format!(
                "  <send retrans=\"500\">\n    <![CDATA[\n\n      INFO [next_url] SIP/2.0\n      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n      [routes]\n      Max-Forwards: 70\n      From: <sip:[caller]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag04[call_number]\n      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n      Call-ID: [call_id]\n      CSeq: {cseq} INFO\n      Content-Type: application/dtmf-relay\n      Content-Length: [len]\n\n      Signal={digit}\n      Duration=160\n\n    ]]>\n  </send>\n  <recv response=\"200\">\n  </recv>\n  <pause milliseconds=\"150\"/>\n"
            ));
            cseq += 1;
        }
        xml.push_str("  <pause milliseconds=\"400\"/>\n");
    }
    xml.push_str("  <recv request=\"BYE\" timeout=\"30000\">\n  </recv>\n  <send>\n    <![CDATA[\n\n      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n\n    ]]>\n  </send>\n</scenario>\n");
    let path = dir.join("wrong_pins.xml");
    std::fs::write(&path, xml).expect("write scenario");
    path
}

/// Guessing a mailbox PIN takes more than calling again: after five wrong PINs over two calls
/// the mailbox refuses even the right PIN, and the PIN never appears in the log.
#[test]
fn voicemail_pin_guesses_lock_the_mailbox_across_calls() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let guesses = wrong_pins_scenario(dir.path(), &["0000", "1111", "2222"]);
    let guesses = guesses.to_str().expect("path");
    let args = [
        "-s", "*97", "-key", "caller", "100", "-au", "100", "-ap", "demo100",
    ];
    for call in 0..2 {
        let (ok, out) = sipp_with_audio(&server, &p, guesses, Some(&vec![0i16; 8000 * 30]), &args);
        assert!(ok, "guessing call {call}: {out}\n{}", server.log_text());
    }
    let log = server.log_text();
    assert!(
        log.contains("too many wrong PINs: PIN entry locked"),
        "{log}"
    );
    // The owner's right PIN, in a third call, does not open it while the lock lasts.
    let right = wrong_pins_scenario(dir.path(), &["1234", "1234", "1234"]);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        right.to_str().expect("path"),
        Some(&vec![0i16; 8000 * 30]),
        &args,
    );
    assert!(ok, "locked call: {out}\n{}", server.log_text());
    let log = server.log_text();
    assert!(!log.contains("mailbox opened"), "{log}");
    assert!(log.contains("PIN entry locked (too many wrong PINs)"));
    // Every key pressed in these calls was PIN entry: the log shows none of them.
    let shown = logged_digits(&log);
    assert!(
        !shown.is_empty() && shown.iter().all(|d| *d == "*"),
        "{shown:?}"
    );
}

/// A `tls:` listener can't be held by connections that never finish their handshake (closed
/// after 10 s), and bytes that are no ClientHello (plain SIP sent to the TLS port) are
/// refused at once; both are counted in `/metrics`, and a real TLS client still gets in.
#[test]
fn stalled_or_garbage_tls_handshakes_are_closed_and_counted() {
    use std::io::{Read, Write};
    if !peer_available("openssl") {
        return;
    }
    let p = ports();
    let tls_port = p.sip + 7;
    let work = tempfile::tempdir().expect("tmp");
    let (cert, key) = self_signed_cert(work.path(), "127.0.0.1");
    let listen = format!("udp:127.0.0.1:{s},tls:127.0.0.1:{tls_port}", s = p.sip);
    let server = start_with_certificate(&p, &listen, &cert, &key);
    let closed_within = |s: &mut std::net::TcpStream, secs: u64| {
        s.set_read_timeout(Some(Duration::from_secs(secs)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                // A TLS alert before the close.
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    };
    let mut garbage = std::net::TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    garbage
        .write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    assert!(closed_within(&mut garbage, 5), "plain SIP on the TLS port");
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    assert!(
        closed_within(&mut stalled, 15),
        "a connection that never handshakes must be closed"
    );
    // A real client gets in meanwhile and after.
    assert!(presented_subject(tls_port).contains("127.0.0.1"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", server.api_port))
            .and_then(|r| r.text())
            .unwrap_or_default();
        if m.contains("switchyard_sip_tls_handshake_failures_total 2") {
            break;
        }
        assert!(Instant::now() < deadline, "metrics: {m}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = server.log_text();
    assert!(log.contains("TLS handshake failed"), "{log}");
}
