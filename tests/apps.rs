//! Call apps end to end with SIPp: the IVR walked with RFC 4733 and SIP INFO digits, invalid
//! input and timeouts, a menu changed through the admin API while a call is in it, and the
//! toll-fraud gate (a destination no route allows gets 403 and no INVITE leaves).

mod common;

use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::time::Duration;

/// Adds the test menus and number +15550700 → menu `t-main` to the demo tenant through the
/// admin API. Prompts are the 0.4 s beep so a test walks a menu in seconds.
fn add_test_menus(server: &Server, main_1: Value) {
    edit_demo(server, |doc| {
        doc["ivrs"]["t-main"] = json!({
            "prompts": ["system/beep"],
            "routes": [
                {"digits": "1", "target": main_1},
                {"digits": "2", "target": {"type": "ivr", "menu": "t-sub"}},
                {"digits": "9", "target": {"type": "hangup"}}
            ],
            "timeout_secs": 3, "max_retries": 1,
            "invalid_prompt": "system/beep",
            "on_exhausted": {"type": "hangup"}
        });
        doc["ivrs"]["t-sub"] = json!({
            "prompts": ["system/beep"],
            "routes": [{"digits": "5", "target": {"type": "echo"}}],
            "timeout_secs": 3, "max_retries": 0
        });
        if !doc["numbers"]
            .as_array()
            .expect("numbers")
            .iter()
            .any(|n| n["number"] == "+15550700")
        {
            doc["numbers"]
                .as_array_mut()
                .expect("numbers")
                .push(json!({"number": "+15550700", "target": {"type": "ivr", "menu": "t-main"}}));
        }
    });
}

/// A trunk call to the test menu that presses `digit` by SIP INFO after `after_ms`.
fn info_digit_call(
    sip_port: u16,
    p: &Ports,
    scenario: &str,
    digit: &str,
    after_ms: &str,
) -> (bool, String) {
    let args = [
        "-m",
        "1",
        "-s",
        "+15550700",
        "-key",
        "digit",
        digit,
        "-d",
        after_ms,
    ];
    sipp_at(sip_port, p, scenario, &args)
}

/// A call recording's audio through the admin API (`name` as in the call record:
/// `TENANT/FILE`), once its metadata has reached the history store.
fn recording_bytes(server: &Server, name: &str) -> Vec<u8> {
    let file = name.rsplit('/').next().expect("file");
    let url = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/recordings/{file}",
        server.api_port
    );
    let http = Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(&url).bearer_auth(ADMIN_KEY).send() {
            if r.status().as_u16() == 200 {
                return r.bytes().expect("bytes").to_vec();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "recording {name} never became available\n{}",
        server.log_text()
    );
}

/// Number +15550101 reaches user 101 (with `edit` for anything else), a SIPp phone registers
/// as 101 and then runs `scenario` from the same port, in a thread.
fn phone_for_101(
    server: &Server,
    scenario: &'static str,
    args: &'static [&'static str],
    edit: impl FnOnce(&mut Value),
) -> std::thread::JoinHandle<(bool, String)> {
    phone_for_101_with(server, &[], scenario, args, edit)
}

/// [`phone_for_101`] with `transport` (SIPp's `-t …`) for both SIPp runs. Over TCP the
/// registering SIPp's connection closes when it exits: the scenario's SIPp is reached by a
/// connection Switchyard opens to the phone's Contact.
fn phone_for_101_with(
    server: &Server,
    transport: &'static [&'static str],
    scenario: &'static str,
    args: &'static [&'static str],
    edit: impl FnOnce(&mut Value),
) -> std::thread::JoinHandle<(bool, String)> {
    edit_demo(server, |doc| {
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(json!({"number": "+15550101", "target": {"type": "user", "extension": "101"}}));
        edit(doc);
    });
    let phone = ports();
    let mut register = vec!["-m", "1", "-s", "101", "-au", "101", "-ap", "demo101"];
    register.extend_from_slice(transport);
    let (ok, out) = sipp(server, &phone, "register_only.xml", &register);
    assert!(ok, "register: {out}");
    let sip_port = server.sip_port;
    let handle = std::thread::spawn(move || {
        let all: Vec<&str> = args.iter().chain(transport).copied().collect();
        sipp_at(sip_port, &phone, scenario, &all)
    });
    std::thread::sleep(Duration::from_millis(300));
    handle
}

/// A trunk `carrier` at 127.0.0.1:`port` (plus `fields`) allowed to dial `+1…`, the route to
/// it, and number +15550555 forwarding to the external +15551234567.
fn route_to_carrier(server: &Server, port: u16, fields: Value) {
    edit_demo(server, |doc| {
        let mut trunk = json!({
            "id": "carrier", "address": format!("127.0.0.1:{port}"), "allowed_prefixes": ["+1"]
        });
        if let (Some(t), Some(extra)) = (trunk.as_object_mut(), fields.as_object()) {
            t.extend(extra.clone());
        }
        doc["trunks"].as_array_mut().expect("trunks").push(trunk);
        doc["outbound_routes"] = json!([{"name": "nanp", "prefix": "+1", "trunk": "carrier"}]);
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(json!({"number": "+15550555", "target": {"type": "external", "number": "+15551234567"}}));
    });
}

fn live_calls(api_port: u16) -> Vec<Value> {
    Client::new()
        .get(format!("http://127.0.0.1:{api_port}/v1/tenants/demo/calls"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("GET calls")
        .json::<Value>()
        .expect("json")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn ivr_rfc4733_digits_walk_two_menus_to_the_echo_test() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    add_test_menus(&server, json!({"type": "echo"}));
    // While SIPp is in the call, the live call list shows where the call went.
    let watcher = {
        let api_port = server.api_port;
        std::thread::spawn(move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(c) = live_calls(api_port)
                    .into_iter()
                    .find(|c| c["app"] == "echo")
                {
                    return Some(c);
                }
            }
            None
        })
    };
    let (ok, out) = sipp(
        &server,
        &p,
        "ivr_dtmf.xml",
        &["-m", "1", "-s", "+15550700", "-d", "2500"],
    );
    assert!(ok, "{out}\n{}", server.log_text());
    let call = watcher.join().expect("watcher").expect("call reached echo");
    assert_eq!(call["path"], "ivr:t-main:2 > ivr:t-sub:5 > echo", "{call}");
}

#[test]
fn ivr_invalid_digit_then_timeout_uses_up_retries_and_hangs_up() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    add_test_menus(&server, json!({"type": "echo"}));
    // 7 is no route: invalid prompt, the menu again, then 3 s of nothing uses up the one
    // retry; the exhausted target hangs up (goodbye, then our BYE), which the scenario awaits.
    let (ok, out) = info_digit_call(server.sip_port, &p, "ivr_info_bye.xml", "7", "600");
    assert!(ok, "{out}\n{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("IVR: invalid choice"), "{log}");
    assert!(log.contains("IVR: no input"), "{log}");
    assert!(log.contains("IVR retries used up"), "{log}");
}

/// Issue 4: a menu changed through the API reaches the next call, while a call already in the
/// menu keeps the menu it started with.
#[test]
fn ivr_change_through_the_api_reaches_new_calls_not_the_call_in_the_menu() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // Before: 1 → echo test (the call stays up).
    add_test_menus(&server, json!({"type": "echo"}));
    let first = {
        let sip_port = server.sip_port;
        let p1 = ports();
        std::thread::spawn(move || info_digit_call(sip_port, &p1, "ivr_info_stay.xml", "1", "2000"))
    };
    std::thread::sleep(Duration::from_millis(700));
    // After: 1 → hang up. The first call is in the menu now and keeps "1 → echo".
    add_test_menus(&server, json!({"type": "hangup"}));
    let (ok, out) = info_digit_call(server.sip_port, &p, "ivr_info_bye.xml", "1", "500");
    assert!(ok, "the new call must follow the new menu:\n{out}");
    let (ok, out) = first.join().expect("first call");
    assert!(
        ok,
        "the call in progress must keep the old menu:\n{out}\n{}",
        server.log_text()
    );
}

/// Toll fraud: a user dialing a number no outbound route allows gets 403, and nothing reaches
/// the provider.
#[test]
fn destination_no_route_allows_is_refused_and_no_invite_leaves() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // A provider that would receive any outbound INVITE.
    let provider = UdpSocket::bind("127.0.0.1:0").expect("provider");
    provider
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let addr = provider.local_addr().expect("addr");
    edit_demo(&server, |doc| {
        doc["trunks"].as_array_mut().expect("trunks").push(json!({
            "id": "provider", "address": addr.to_string(),
            "allowed_prefixes": ["+1"]
        }));
        doc["outbound_routes"] =
            json!([{"name": "north america", "prefix": "+1", "trunk": "provider"}]);
    });
    for number in ["+442071234567", "00442071234567", "+8823451234567"] {
        let (ok, out) = sipp(
            &server,
            &p,
            "invite_auth_forbidden.xml",
            &[
                "-m", "1", "-s", number, "-key", "caller", "100", "-au", "100", "-ap", "demo100",
            ],
        );
        assert!(ok, "{number} must get 403:\n{out}\n{}", server.log_text());
    }
    let mut buf = [0u8; 2048];
    assert!(
        provider.recv_from(&mut buf).is_err(),
        "an INVITE reached the provider"
    );
    let log = server.log_text();
    assert_eq!(
        log.matches("outbound call refused: no outbound route allows this number")
            .count(),
        3,
        "{log}"
    );
    // Each refusal is in the call log.
    let recs = call_records(&server, 3);
    assert_eq!(recs.len(), 3, "{recs:?}");
    for r in &recs {
        assert_eq!(r["disposition"], "rejected", "{r}");
        assert_eq!(r["direction"], "outbound", "{r}");
        assert_eq!(r["sip_code"], 403, "{r}");
        assert_eq!(r["hangup_cause"], "app_refused", "{r}");
        assert_eq!(r["from_user"], "100", "{r}");
    }
    // The same records through the admin API: filters, cursor pages, one by id, aggregates.
    let http = Client::new();
    let url = |q: &str| {
        format!(
            "http://127.0.0.1:{}/v1/tenants/demo/call-logs{q}",
            server.api_port
        )
    };
    let get = |q: &str| http.get(url(q)).bearer_auth(ADMIN_KEY).send().expect("GET");
    let page1: Value = get("?disposition=rejected&limit=2").json().expect("json");
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(2), "{page1}");
    let cursor = page1["next_cursor"].as_str().expect("cursor");
    let page2: Value = get(&format!("?disposition=rejected&limit=2&cursor={cursor}"))
        .json()
        .expect("json");
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1), "{page2}");
    assert!(page2.get("next_cursor").is_none());
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
    let none: Value = get("?disposition=answered").json().expect("json");
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let id = page2["items"][0]["id"].as_str().expect("id");
    assert_eq!(get(&format!("/{id}")).status().as_u16(), 200);
    let bad = get("?direction=sideways");
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().expect("text").contains("direction"));
    assert_eq!(get("?limit=0").status().as_u16(), 422);
    let stats: Value = get("/stats?user=100").json().expect("json");
    assert_eq!(stats["calls"], 3, "{stats}");
    assert_eq!(stats["answered"], 0, "{stats}");
    assert_eq!(stats["per_user"][0]["user"], "100", "{stats}");
    let metrics = http
        .get(format!("http://127.0.0.1:{}/metrics", server.api_port))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("switchyard_calls_finished_total{disposition=\"rejected\"} 3"),
        "{metrics}"
    );
}

/// Message waiting: a subscribed phone is told "0 new" at once and "1 new" when a message is
/// left in its mailbox; a phone that registers afterwards is told "1 new" unasked; the
/// message's audio holds the caller's tone.
#[test]
fn message_waiting_notify_follows_a_new_voicemail() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // A short greeting keeps the test short: beep, "leave a message", beep (~5.4 s).
    short_greeting(&server);
    let subscriber = {
        let sip_port = server.sip_port;
        let p1 = ports();
        std::thread::spawn(move || {
            let args = ["-m", "1", "-s", "100", "-au", "100", "-ap", "demo100"];
            sipp_at(sip_port, &p1, "subscribe_mwi.xml", &args)
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, out) = leave_600hz_message(server.sip_port, &p);
    assert!(ok, "deposit call failed:\n{out}");
    let (ok, out) = subscriber.join().expect("subscriber");
    assert!(
        ok,
        "MWI NOTIFYs wrong or missing:\n{out}\n{}",
        server.log_text()
    );
    // A phone of user 100 that registers now (after a reboot, say) is told at once, unasked
    // (PJSUA2 reports the unsolicited NOTIFY as message-waiting info).
    if pjsua_available() {
        let out = std::process::Command::new("python3")
            .arg(repo().join("integration/pjsua/mwi_on_register.py"))
            .args(["--server", &format!("127.0.0.1:{}", server.sip_port)])
            .args(["--user", "100", "--password", "demo100"])
            .output()
            .expect("run mwi_on_register.py");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && said.contains("Messages-Waiting: yes")
                && said.contains("Voice-Message: 1/0"),
            "a new registration must be told its mailbox: {said}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
    }
    // The message holds the caller's 600 Hz tone.
    let dir = server.data_path().join("voicemail/demo/100");
    let wav = std::fs::read_dir(&dir)
        .expect("mailbox")
        .flatten()
        .find(|f| f.path().extension().is_some_and(|e| e == "wav"))
        .expect("message");
    let b = std::fs::read(wav.path()).expect("read");
    let samples = wav_samples(&b);
    let start = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("tone in the message");
    let f = tone_frequency(&samples[start + 400..start + 8000]);
    assert!((f - 600.0).abs() < 10.0, "message tone {f} Hz");
}

/// B2BUA: a call to a user rings the user's registered phone (SIPp answering and echoing its
/// audio), and the caller's tone comes back through both directions of the bridge.
#[test]
fn user_call_rings_the_registered_phone_and_bridges_audio_both_ways() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101(&server, "uas_answer.xml", &["-m", "1", "-rtp_echo"], |_| {});
    caller_hears_echo_through_101(&server, &p, callee);
}

/// A phone registered over TCP whose connection then closed (the registering SIPp exits) is
/// rung on a new connection Switchyard opens to its Contact, and the call bridges audio.
#[test]
fn a_tcp_phone_whose_connection_closed_is_rung_over_a_new_connection() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101_with(
        &server,
        &["-t", "t1"],
        "uas_answer.xml",
        &["-m", "1", "-rtp_echo"],
        |_| {},
    );
    caller_hears_echo_through_101(&server, &p, callee);
    let log = server.log_text();
    assert!(log.contains("tcp connection opened"), "{log}");
}

/// A carrier's call to +15550101 with a 1000 Hz tone: `callee` (the phone, echoing) must be
/// rung and the caller hear its tone back; the call record tells the phone's leg.
fn caller_hears_echo_through_101(
    server: &Server,
    p: &Ports,
    callee: std::thread::JoinHandle<(bool, String)>,
) {
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let mut audio = sine_wave(1000.0, 2.0);
    audio.extend(vec![0i16; 8000]);
    let (ok, out) = sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550101", "-d", "3500"],
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
    let (ok, out) = callee.join().expect("callee");
    assert!(
        ok,
        "the phone must be called, then hung up by the server:\n{out}"
    );
    // What the caller received: its own tone, after a trip through the phone's echo.
    let heard = heard_by(cap, p);
    let start = heard
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .unwrap_or_else(|| {
            panic!(
                "no tone came back ({} samples)\n{}",
                heard.len(),
                server.log_text()
            )
        });
    let f = tone_frequency(&heard[start + 400..start + 8000]);
    assert!((f - 1000.0).abs() < 10.0, "caller heard {f} Hz");
    let log = server.log_text();
    assert!(log.contains("leg answered"), "{log}");
    // The call record: answered, with the phone's leg and both legs' RTP figures.
    let recs = call_records(server, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["disposition"], "answered", "{r}");
    assert_eq!(r["direction"], "inbound", "{r}");
    assert_eq!(r["ended_by"], "caller", "{r}");
    assert_eq!(r["hangup_cause"], "caller_hangup", "{r}");
    assert_eq!(r["path"], "user:101", "{r}");
    assert!(r["billed_secs"].as_u64().expect("billed") >= 2, "{r}");
    assert!(
        r["quality"]["packets_received"].as_u64().expect("rx") > 100,
        "{r}"
    );
    assert_eq!(r["legs"].as_array().expect("legs").len(), 1, "{r}");
    assert!(r["legs"][0]["answer_unix"].is_u64(), "{r}");
    assert!(
        r["legs"][0]["quality"]["packets_received"]
            .as_u64()
            .expect("leg rx")
            > 100,
        "{r}"
    );
}

/// Digits a caller sends in RTP (RFC 4733) reach a bridged phone that negotiated no
/// telephone-event as SIP INFO (application/dtmf-relay), in order: the engine cannot put them
/// in the phone's RTP, so the runner has the endpoint send INFO in the phone's dialog.
#[test]
fn rfc4733_digits_reach_a_phone_without_telephone_event_as_sip_info() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101(&server, "uas_answer_info.xml", &["-m", "1"], |_| {});
    let (ok, out) = sipp(
        &server,
        &p,
        "media_dtmf.xml",
        &["-m", "1", "-s", "+15550101", "-d", "4000"],
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
    let (ok, out) = callee.join().expect("callee");
    assert!(
        ok,
        "the phone must get INFO 1, 2, 3 and # in order:\n{out}\n{}",
        server.log_text()
    );
}

/// No answer: the phone rings for the user's ring timeout, is cancelled, and the caller goes
/// to the user's mailbox, where the message records the caller's tone.
#[test]
fn unanswered_user_call_is_cancelled_and_goes_to_voicemail() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101(&server, "uas_no_answer.xml", &["-m", "1"], |doc| {
        for u in doc["users"].as_array_mut().expect("users") {
            if u["extension"] == "101" {
                u["ring_timeout_secs"] = json!(2);
            }
        }
        for m in doc["mailboxes"].as_array_mut().expect("mailboxes") {
            if m["id"] == "101" {
                m["greeting"] = json!("system/beep");
            }
        }
    });
    // Answered by voicemail after ~2 s; greeting ~5.4 s; then the tone.
    let mut audio = vec![0i16; 8000 * 6];
    audio.extend(sine_wave(700.0, 2.0));
    audio.extend(vec![0i16; 4000]);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550101", "-d", "8500"],
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
    let (ok, out) = callee.join().expect("callee");
    assert!(
        ok,
        "the phone must be rung and cancelled:\n{out}\n{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let dir = server.data_path().join("voicemail/demo/101");
    let wav = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("mailbox 101: {e}\n{}", server.log_text()))
        .flatten()
        .find(|f| f.path().extension().is_some_and(|e| e == "wav"))
        .expect("message");
    let b = std::fs::read(wav.path()).expect("read");
    let samples = wav_samples(&b);
    let start = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("tone in the message");
    let f = tone_frequency(&samples[start + 400..start + 8000]);
    assert!((f - 700.0).abs() < 10.0, "message tone {f} Hz");
    // The call record: the phone's leg cancelled by us (487), the message referenced.
    let recs = call_records(&server, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["path"], "user:101 > voicemail:101", "{r}");
    assert!(
        r["voicemail"]
            .as_str()
            .expect("voicemail")
            .starts_with("101/"),
        "{r}"
    );
    assert_eq!(r["legs"][0]["sip_code"], 487, "{r}");
    assert_eq!(r["legs"][0]["ended_by"], "callee", "{r}");
}

/// Outbound through a trunk: a user dials a number a route allows; the provider (SIPp)
/// challenges, gets a correct digest answer from the trunk's credentials, sees the number and
/// the trunk's caller ID, answers (PCMA: the bridge transcodes), and the caller's tone comes
/// back through its echo.
#[test]
fn allowed_number_goes_out_through_the_trunk_with_digest_auth() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let provider = ports();
    route_to_carrier(
        &server,
        provider.sipp,
        json!({"username": "acct", "password": "s3cret", "caller_id": "+15550100"}),
    );
    let carrier = {
        let sip_port = server.sip_port;
        std::thread::spawn(move || {
            let args = ["-m", "1", "-rtp_echo"];
            sipp_at(sip_port, &provider, "provider_auth.xml", &args)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    // The demo trunk's caller reaches the external number through a DID forwarding to it.
    let (ok, out) = call_out_with_tone(&server, &p);
    let (provider_ok, provider_out) = carrier.join().expect("carrier");
    assert!(
        provider_ok,
        "provider: {provider_out}\n{}",
        server.log_text()
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
    let heard = heard_by(cap, &p);
    let start = heard
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("tone back through the trunk");
    let f = tone_frequency(&heard[start + 400..start + 8000]);
    assert!((f - 1000.0).abs() < 10.0, "caller heard {f} Hz");
    assert!(server.log_text().contains("provider challenged"));
}

/// A SIPp caller plays 1000 Hz to +15550101 for `secs` while the phone scenario behind
/// `phone` (started with [`phone_for_101`]) answers; both scenarios must pass.
fn call_101_with_tone(
    server: &Server,
    p: &Ports,
    phone: std::thread::JoinHandle<(bool, String)>,
    secs: u32,
) {
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&sine_wave(1000.0, secs as f32)),
        &["-s", "+15550101", "-d", &(secs * 1000).to_string()],
    );
    let (t_ok, t_out) = phone.join().expect("phone");
    assert!(t_ok, "phone: {t_out}\n{}", server.log_text());
    assert!(ok, "caller: {out}\n{}", server.log_text());
}

/// An attended transfer whose `Replaces` names no dialog the transferor has with us: the
/// REFER gets 202, then NOTIFY 100 and a final NOTIFY 481; the call goes on (the caller stays
/// bridged to the phone until it hangs up); the refusal is logged and counted.
#[test]
fn an_attended_transfer_naming_no_dialog_is_refused_and_the_call_goes_on() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let transferor = phone_for_101(
        &server,
        "uas_transfer_unknown_replaces.xml",
        &["-m", "1", "-rtp_echo"],
        |_| {},
    );
    call_101_with_tone(&server, &p, transferor, 3);
    let recs = call_records(&server, 1);
    assert_eq!(recs[0]["hangup_cause"], "caller_hangup", "{recs:?}");
    assert!(server.log_text().contains("attended transfer refused"));
    assert!(metric_reaches(
        server.api_port,
        "switchyard_sip_replaces_refused_total",
        1.0
    ));
}

/// Blind transfer: the called phone answers, then REFERs the caller to the echo test (600);
/// it gets 202 and NOTIFY sipfrag progress and is hung up, and the caller's call goes on in
/// the echo test (seen in the live call list).
#[test]
fn called_phone_transfers_the_caller_with_refer() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let transferor = phone_for_101(
        &server,
        "uas_transfer.xml",
        &["-m", "1", "-s", "600", "-rtp_echo"],
        |doc| {
            doc["settings"]["recording"] = json!("always");
        },
    );
    let watcher = {
        let api_port = server.api_port;
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(c) = live_calls(api_port)
                    .into_iter()
                    .find(|c| c["app"] == "echo")
                {
                    return Some(c);
                }
            }
            None
        })
    };
    call_101_with_tone(&server, &p, transferor, 4);
    let call = watcher
        .join()
        .expect("watcher")
        .expect("caller reached the echo test");
    assert_eq!(call["path"], "user:101 > echo", "{call}");
    // The recording (tenant policy "always") follows the caller across the transfer: the
    // caller's channel holds its tone for the whole call, the other channel the phone's echo
    // only while the phone was bridged (until the REFER, ~1 s).
    let recs = call_records(&server, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let name = recs[0]["recording"]
        .as_str()
        .expect("recording in the call record");
    let b = recording_bytes(&server, name);
    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "stereo");
    let samples = wav_samples(&b);
    let loud_secs = |ch: usize| {
        samples
            .chunks_exact(2)
            .map(|f| f[ch])
            .collect::<Vec<_>>()
            .chunks(80)
            .filter(|w| w.iter().any(|s| s.unsigned_abs() > 2000))
            .count() as f32
            / 100.0
    };
    let (caller, other) = (loud_secs(0), loud_secs(1));
    assert!(caller > 3.0, "caller's channel holds {caller} s of tone");
    assert!(
        other > 0.3 && other < 2.0,
        "other channel holds {other} s of echo"
    );
    let left: Vec<i16> = samples.chunks_exact(2).map(|f| f[0]).collect();
    let start = left
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("tone");
    let f = tone_frequency(&left[start + 400..start + 4400]);
    assert!((f - 1000.0).abs() < 10.0, "recorded {f} Hz");
}

/// Live calls through the admin API: start and stop recording on demand, blind-transfer to
/// another extension; wrong requests get the right problems.
#[test]
fn admin_api_records_and_transfers_a_live_call() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let api_port = server.api_port;
    let driver = std::thread::spawn(move || {
        let http = Client::new();
        let url = |s: &str| format!("http://127.0.0.1:{api_port}/v1/tenants/demo/calls{s}");
        let mut id = None;
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(c) = live_calls(api_port)
                .into_iter()
                .find(|c| c["app"] == "echo")
            {
                id = c["id"].as_u64();
                break;
            }
        }
        let id = id.expect("the call is listed");
        let send = |method: &str, path: &str, body: Option<Value>| {
            let r = match method {
                "POST" => http.post(url(path)),
                _ => http.delete(url(path)),
            }
            .bearer_auth(ADMIN_KEY);
            let r = match body {
                Some(b) => r.json(&b),
                None => r,
            };
            r.send().expect("request").status().as_u16()
        };
        let rec = format!("/{id}/recording");
        let mut statuses = vec![send("POST", &rec, None), send("POST", &rec, None)];
        // One second of the call is recorded.
        std::thread::sleep(Duration::from_millis(1000));
        statuses.extend([
            send("DELETE", &rec, None),
            send("DELETE", &rec, None),
            send("POST", "/999999/recording", None),
            send(
                "POST",
                &format!("/{id}/transfer"),
                Some(json!({"destination": "nope!"})),
            ),
            send(
                "POST",
                &format!("/{id}/transfer"),
                Some(json!({"destination": "777"})),
            ),
            send(
                "POST",
                &format!("/{id}/transfer"),
                Some(json!({"destination": "601"})),
            ),
        ]);
        std::thread::sleep(Duration::from_millis(300));
        let after = live_calls(api_port);
        (statuses, after)
    });
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&sine_wave(1000.0, 3.0)),
        &["-s", "+15550600", "-d", "3000"],
    );
    assert!(ok, "{out}\n{}", server.log_text());
    let (statuses, after) = driver.join().expect("driver");
    assert_eq!(statuses, vec![204, 409, 204, 409, 404, 422, 422, 204]);
    assert_eq!(after[0]["app"], "prompt_loop", "{after:?}");
    let recs = call_records(&server, 1);
    assert_eq!(recs[0]["path"], "echo > prompt_loop", "{:?}", recs[0]);
    let name = recs[0]["recording"].as_str().expect("recording");
    let b = recording_bytes(&server, name);
    // Stereo 8 kHz 16-bit: ~1 s is ~32 kB.
    assert!(
        b.len() > 44 + 24_000 && b.len() < 44 + 48_000,
        "recording is {} bytes",
        b.len()
    );
    // Recordings through the admin API: listed, downloaded, deleted.
    let http = Client::new();
    let base = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/recordings",
        server.api_port
    );
    let list = |http: &Client| -> Value {
        http.get(&base)
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("list")
            .json()
            .expect("json")
    };
    let file = name.rsplit('/').next().expect("file");
    let listed = list(&http);
    assert_eq!(listed["items"][0]["name"], file, "{listed}");
    assert_eq!(listed["items"][0]["call_log"], recs[0]["id"], "{listed}");
    let got = http
        .get(format!("{base}/{file}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("get");
    assert_eq!(got.headers()["content-type"], "audio/wav");
    assert_eq!(got.bytes().expect("bytes").len(), b.len());
    // A browser seeking: the second half of the first second, then an impossible range.
    let part = http
        .get(format!("{base}/{file}"))
        .bearer_auth(ADMIN_KEY)
        .header("Range", "bytes=16044-32043")
        .send()
        .expect("range");
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().expect("text"),
        format!("bytes 16044-32043/{}", b.len())
    );
    assert_eq!(&part.bytes().expect("bytes")[..], &b[16044..32044]);
    let beyond = http
        .get(format!("{base}/{file}"))
        .bearer_auth(ADMIN_KEY)
        .header("Range", format!("bytes={}-", b.len()))
        .send()
        .expect("range");
    assert_eq!(beyond.status().as_u16(), 416);
    let del = http
        .delete(format!("{base}/{file}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("del");
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(list(&http)["items"].as_array().map(Vec::len), Some(0));
}

/// A trunk with `register: true` registers to its provider, answering the digest challenge
/// with the trunk's credentials.
#[test]
fn trunk_registers_to_its_provider_with_digest_auth() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let provider = ports();
    let provider_port = provider.sipp;
    let registrar = {
        let sip_port = server.sip_port;
        std::thread::spawn(move || {
            sipp_at(sip_port, &provider, "provider_register.xml", &["-m", "1"])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    edit_demo(&server, |doc| {
        doc["trunks"].as_array_mut().expect("trunks").push(json!({
            "id": "carrier", "address": format!("127.0.0.1:{provider_port}"),
            "username": "acct", "password": "s3cret", "register": true
        }));
    });
    let (ok, out) = registrar.join().expect("registrar");
    assert!(ok, "provider registrar: {out}\n{}", server.log_text());
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.log_text().contains("registered to the provider"));
}

/// Voicemail end to end: a caller leaves a message (its tone), the admin API lists it and
/// serves its audio, user 100 hears it through *97 (PIN and digits by SIP INFO), after which it
/// is saved; the API deletes it.
#[test]
fn voicemail_is_heard_through_star97_and_managed_through_the_api() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    short_greeting(&server);
    let (ok, out) = leave_600hz_message(server.sip_port, &p);
    assert!(ok, "deposit: {out}");
    std::thread::sleep(Duration::from_millis(300));
    let http = Client::new();
    let base = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/mailboxes/100/messages",
        server.api_port
    );
    let list: Value = http
        .get(&base)
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("list")
        .json()
        .expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert!(list.get("next_cursor").is_none(), "{list}");
    let msg = &list["items"][0];
    assert_eq!(msg["folder"], "new");
    assert_eq!(msg["caller"], "+15557654321");
    let id = msg["id"].as_str().expect("id").to_string();
    let wav = http
        .get(format!("{base}/{id}/audio"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("audio");
    assert_eq!(wav.headers()["content-type"], "audio/wav");
    let b = wav.bytes().expect("bytes");
    let samples = wav_samples(&b);
    let start = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("tone");
    let f = tone_frequency(&samples[start + 400..start + 8000]);
    assert!((f - 600.0).abs() < 10.0, "downloaded message holds {f} Hz");

    // User 100 listens through *97: what the server sends holds the message's tone.
    let (ok, out, heard) = listen_through_star97(server.sip_port, p.rtp_first);
    assert!(ok, "*97: {out}\n{}", server.log_text());
    // The PIN (1234, by SIP INFO) is masked in the log; the menu choice after it is not.
    let log = server.log_text();
    let digits = logged_digits(&log);
    assert!(
        digits.starts_with(&["*", "*", "*", "*"])
            && !digits.iter().any(|d| ["2", "3", "4"].contains(d)),
        "PIN digits in the log: {digits:?}"
    );
    assert!(
        has_a_second_of_600hz(&heard),
        "the message's tone was not played ({} samples heard)\n{}",
        heard.len(),
        server.log_text()
    );
    let after: Value = http
        .get(format!("{base}/{id}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(after["folder"], "saved", "a heard message is saved");
    let st = http
        .delete(format!("{base}/{id}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("delete")
        .status();
    assert_eq!(st.as_u16(), 204);
    let st = http
        .get(format!("{base}/{id}/audio"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("gone")
        .status();
    assert_eq!(st.as_u16(), 404);
}

/// Hold passes through the B2BUA: the caller's re-INVITE with sendonly reaches the called
/// phone as our re-INVITE with sendonly, and the resume as sendrecv.
#[test]
fn caller_hold_and_resume_reach_the_called_phone() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101(&server, "uas_hold.xml", &["-m", "1"], |_| {});
    let (ok, out) = sipp(
        &server,
        &p,
        "hold_resume.xml",
        &["-m", "1", "-s", "+15550101", "-d", "1000"],
    );
    let (c_ok, c_out) = callee.join().expect("callee");
    assert!(
        c_ok,
        "the phone must see hold and resume:\n{c_out}\n{}",
        server.log_text()
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
}

/// Busy: the phone answers 486, and the caller goes to the user's mailbox with the "busy"
/// greeting; the call record keeps the phone's 486.
#[test]
fn busy_phone_sends_the_caller_to_voicemail_with_the_busy_greeting() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let callee = phone_for_101(&server, "uas_busy.xml", &["-m", "1"], |_| {});
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&vec![0i16; 8000]),
        &["-s", "+15550101", "-d", "1500"],
    );
    assert!(ok, "caller: {out}\n{}", server.log_text());
    assert!(callee.join().expect("callee").0);
    let log = server.log_text();
    assert!(log.contains("greeting=Busy"), "{log}");
    let recs = call_records(&server, 1);
    assert_eq!(recs[0]["path"], "user:101 > voicemail:101", "{:?}", recs[0]);
    assert_eq!(recs[0]["legs"][0]["sip_code"], 486, "{:?}", recs[0]);
}

/// Early media: the provider answers 183 with SDP and plays an announcement before it answers
/// 3 s later; the caller hears the announcement (its tone) through our 183 before the answer.
#[test]
fn early_media_from_the_provider_reaches_the_caller_before_the_answer() {
    early_media_through("provider_early.xml");
}

/// Reliable early media (RFC 3262): the provider requires 100rel on its 183 and waits for our
/// PRACK before it streams; the scenario checks `Supported: 100rel`, the RAck and that the
/// dialog's CSeq numbering goes on after the PRACK (the BYE's).
#[test]
fn reliable_early_media_is_acknowledged_with_prack() {
    let log = early_media_through("provider_early_100rel.xml");
    assert!(log.contains("PRACK sent"), "{log}");
}

/// A provider (`scenario`) answers with early media of 500 Hz; the caller must hear it.
/// Returns the server's log.
fn early_media_through(scenario: &'static str) -> String {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return "PRACK sent (skipped)".into();
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let provider = ports();
    let provider_port = provider.sipp;
    route_to_carrier(&server, provider_port, json!({}));
    let carrier = {
        let sip_port = server.sip_port;
        std::thread::spawn(move || {
            // One second of 500 Hz: over long before the 200 at 3 s.
            let announcement = sine_wave(500.0, 1.0);
            sipp_at_with_audio(sip_port, &provider, scenario, &announcement, &[])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&vec![0i16; 8000]),
        &["-s", "+15550555", "-d", "1000"],
    );
    let (c_ok, c_out) = carrier.join().expect("carrier");
    assert!(c_ok, "provider: {c_out}\n{}", server.log_text());
    assert!(ok, "caller: {out}\n{}", server.log_text());
    let heard = heard_by(cap, &p);
    let start = heard
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .unwrap_or_else(|| panic!("no early media reached the caller\n{}", server.log_text()));
    let f = tone_frequency(&heard[start + 400..start + 4000]);
    assert!((f - 500.0).abs() < 10.0, "caller heard {f} Hz");
    let log = server.log_text();
    assert!(log.contains("early media"));
    log
}

/// A trunk's own SRTP policy wins over its tenant's: a trunk marked `required` refuses a
/// plain RTP call from it (488, counted); a trunk marked `optional` takes plain calls in a
/// tenant that requires SRTP everywhere else.
#[test]
fn a_trunks_srtp_policy_overrides_the_tenants() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let plain_call = || {
        sipp(
            &server,
            &p,
            "update_offer.xml",
            &["-m", "1", "-s", "+15550600"],
        )
    };
    edit_demo(&server, |doc| doc["trunks"][0]["srtp"] = json!("required"));
    let (ok, out) = plain_call();
    assert!(
        !ok,
        "a plain call through a trunk that requires SRTP: {out}"
    );
    assert!(server.log_text().contains("media offer refused"));
    assert!(
        metric_reaches(server.api_port, "switchyard_srtp_offers_refused_total", 1.0),
        "the refusal is counted"
    );
    edit_demo(&server, |doc| {
        doc["settings"]["srtp"] = json!("required");
        doc["trunks"][0]["srtp"] = json!("optional");
    });
    let (ok, out) = plain_call();
    assert!(
        ok,
        "the trunk's optional wins: {out}\n{}",
        server.log_text()
    );
}

/// Session timers on a leg we place (RFC 4028): the provider answers with
/// `Session-Expires: 6;refresher=uac`; our refresh comes within the interval and is accepted,
/// the next is refused, and the leg and the caller's call end with BYEs. A provider whose 2xx
/// allows UPDATE is refreshed by UPDATE (the second refused with 481); one that does not say
/// so, by re-INVITE with our SDP (the second refused with 488).
#[test]
fn a_leg_refreshes_its_session_and_ends_when_a_refresh_fails() {
    if !peer_available("sipp") {
        return;
    }
    for scenario in [
        "provider_session_timer.xml",
        "provider_session_timer_reinvite.xml",
    ] {
        let p = ports();
        let server = Server::start(&p, &[("SWITCHYARD_SIP_SESSION_MIN_SECS", "5")]);
        let provider = ports();
        route_to_carrier(&server, provider.sipp, json!({}));
        let carrier = {
            let sip_port = server.sip_port;
            std::thread::spawn(move || sipp_at(sip_port, &provider, scenario, &["-m", "1"]))
        };
        std::thread::sleep(Duration::from_millis(300));
        let (ok, out) = sipp(
            &server,
            &p,
            "wait_for_bye.xml",
            &["-m", "1", "-s", "+15550555"],
        );
        let (c_ok, c_out) = carrier.join().expect("carrier");
        assert!(c_ok, "{scenario}: {c_out}\n{}", server.log_text());
        assert!(ok, "{scenario}: caller: {out}\n{}", server.log_text());
        let log = server.log_text();
        assert!(log.contains("session refresh failed"), "{log}");
    }
}

/// UPDATE with an SDP offer (RFC 3311): SIPp holds and resumes its call to the echo test by
/// UPDATE; each 200 carries our answer (`a=recvonly`, then `a=sendrecv`), and the media side
/// hears of each change.
#[test]
fn a_caller_holds_and_resumes_by_update() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let (ok, out) = sipp(
        &server,
        &p,
        "update_offer.xml",
        &["-m", "1", "-s", "+15550600"],
    );
    assert!(ok, "{out}\n{}", server.log_text());
    let log = server.log_text();
    assert_eq!(log.matches("UPDATE with an offer").count(), 2, "{log}");
}

/// Session timers (RFC 4028) with a real UAC: SIPp asks for a 6 s session, gets it with
/// `refresher=uac` and `Require: timer`, refreshes once by UPDATE (RFC 3311), then stops: the
/// server hangs up (BYE) and the call record says `session_expired`. A request below the
/// minimum gets 422 with `Min-SE`.
#[test]
fn a_session_not_refreshed_in_time_is_hung_up() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    // The RFC's 90 s minimum would make this a minute's wait.
    let server = Server::start(&p, &[("SWITCHYARD_SIP_SESSION_MIN_SECS", "5")]);
    let (ok, out) = sipp(
        &server,
        &p,
        "session_timer.xml",
        &["-m", "1", "-s", "+15550600"],
    );
    assert!(ok, "{out}\n{}", server.log_text());
    let recs = call_records(&server, 1);
    assert_eq!(recs[0]["hangup_cause"], "session_expired", "{:?}", recs[0]);
    assert!(server.log_text().contains("no session refresh in time"));

    // Too short an interval: 422 naming the minimum.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr").port();
    let invite = format!(
        "INVITE sip:+15550600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKse{me}\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@127.0.0.1>;tag=se\r\nTo: <sip:+15550600@127.0.0.1>\r\nCall-ID: se-{me}\r\nCSeq: 1 INVITE\r\nSupported: timer\r\nSession-Expires: 2\r\nContent-Length: 0\r\n\r\n"
    );
    let answers = udp_exchange(&sock, server.sip_port, &invite, Duration::from_millis(1000));
    let last = answers.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("SIP/2.0 422") && last.contains("Min-SE: 5"),
        "{answers:?}"
    );
}
