//! Browser softphones against the real server: Debian's Chromium, driven by playwright-core
//! (`integration/browser/phone.mjs`), loads the server's `/phone` page, registers over SIP
//! WebSocket with JsSIP and calls with WebRTC audio. Chromium's fake microphone plays a WAV
//! tone; the page measures what it hears with WebAudio.
//!
//! Needs `chromium`, `node` and `npm ci` run in `integration/browser` (`.ci/run` does both);
//! skipped otherwise unless `SWITCHYARD_REQUIRE_PEERS=1`.

mod common;

use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn browser_available() -> bool {
    if !peer_available("chromium") || !peer_available("node") {
        return false;
    }
    let ok = repo()
        .join("integration/browser/node_modules/playwright-core")
        .exists();
    ok || switchyard::test_support::peer_missing("playwright-core (npm ci in integration/browser)")
}

/// A 48 kHz WAV tone for Chromium's fake microphone.
fn tone_wav(path: &Path, freq: f32, secs: f32) {
    let mut samples = tone_at(freq, 48_000, secs);
    for s in &mut samples {
        *s = (*s as f32 * 1.33) as i16;
    }
    std::fs::write(path, pcm_wav(&samples, 48_000)).expect("wav");
}

struct BrowserServer {
    server: Server,
    ports: Ports,
    ws_port: u16,
    /// `ws` or `wss`.
    scheme: &'static str,
    work: tempfile::TempDir,
}

fn start() -> BrowserServer {
    start_with(false)
}

/// A server with a `ws:` listener, or a `wss:` one with a fresh self-signed certificate.
fn start_with(secure: bool) -> BrowserServer {
    let p = ports();
    let work = tempfile::tempdir().expect("tmp");
    let ws_port = p.sip + 12;
    let scheme = if secure { "wss" } else { "ws" };
    let listen = format!(
        "udp:127.0.0.1:{s},tcp:127.0.0.1:{s},{scheme}:127.0.0.1:{ws_port}",
        s = p.sip
    );
    let (cert, key) = if secure {
        self_signed_cert(work.path(), "127.0.0.1")
    } else {
        (work.path().join("cert.pem"), work.path().join("key.pem"))
    };
    let server = start_with_certificate(&p, &listen, &cert, &key);
    BrowserServer {
        server,
        ports: p,
        ws_port,
        scheme,
        work,
    }
}

impl BrowserServer {
    fn page_url(&self, user: &str, extra: &str) -> String {
        format!(
            "http://127.0.0.1:{}/phone/?user={user}&password=demo{user}&domain=127.0.0.1&ws={}://127.0.0.1:{}&autostart=1&quiet=1{extra}",
            self.ports.api, self.scheme, self.ws_port
        )
    }

    /// Runs the browser through `steps` with a fake microphone playing `freq`; returns its
    /// reports by name.
    fn run(&self, url: &str, freq: f32, steps: Value) -> std::collections::HashMap<String, Value> {
        let wav = self.work.path().join(format!("mic-{freq}.wav"));
        tone_wav(&wav, freq, 30.0);
        let plan =
            json!({"url": url, "audio": wav, "steps": steps, "insecure": self.scheme == "wss"});
        let out = Command::new("node")
            .arg(repo().join("integration/browser/phone.mjs"))
            .arg(plan.to_string())
            .output()
            .expect("node");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut reports = std::collections::HashMap::new();
        for line in stdout.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(name) = v["report"].as_str() {
                reports.insert(name.to_string(), v["state"].clone());
            }
            if v.get("error").is_some() {
                panic!(
                    "browser: {v}\n--- stderr ---\n{stderr}\n--- server ---\n{}",
                    self.server.log_text()
                );
            }
        }
        assert!(
            out.status.success() && stdout.contains("\"done\""),
            "browser run failed:\n{stdout}\n{stderr}\n{}",
            self.server.log_text()
        );
        reports
    }

    fn artifacts(&self) -> PathBuf {
        let dir = repo().join("target/browser-artifacts");
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        dir
    }
}

fn heard(report: &Value) -> f64 {
    report["heardHz"].as_f64().unwrap_or(0.0)
}

/// Registers as 102 over WebSocket, calls the echo test and hears its own 440 Hz back: audio
/// crosses DTLS-SRTP both ways through the engine.
#[test]
fn browser_registers_over_websocket_and_hears_itself_through_the_echo_test() {
    if !browser_available() {
        return;
    }
    let b = start();
    let shot = b.artifacts().join("phone-echo.png");
    let reports = b.run(
        &b.page_url("102", ""),
        440.0,
        json!([
            {"wait_status": "registered"},
            {"report": "registered"},
            {"dial": "600"},
            {"wait_call": "in call"},
            {"sleep": 3000},
            {"report": "in_call"},
            {"screenshot": shot},
            {"click": "#hangup"},
            {"wait_call": "ended"}
        ]),
    );
    let f = heard(&reports["in_call"]);
    assert!(
        (f - 440.0).abs() < 15.0,
        "the browser heard {f} Hz through the echo test: {:?}\n{}",
        reports["in_call"],
        b.server.log_text()
    );
    let log = b.server.log_text();
    assert!(log.contains("call started"), "{log}");
}

/// A SIPp caller reaches the browser user 102: the page rings and answers, the caller's
/// 1 kHz reaches the browser and the browser's 440 Hz reaches the call recording.
#[test]
fn udp_caller_reaches_the_browser_and_audio_flows_both_ways() {
    if !browser_available() || !peer_available("sipp") {
        return;
    }
    let b = start();
    edit_demo(&b.server, |doc| {
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(json!({"number": "+15550102", "target": {"type": "user", "extension": "102"}}));
        doc["settings"]["recording"] = json!("always");
    });
    let url = b.page_url("102", "&auto_answer=1");
    let api = b.ports.api;
    let sip = b.server.sip_port;
    let caller_ports = ports();
    // The caller dials once the browser is registered.
    let caller = std::thread::spawn(move || {
        let http = Client::new();
        for _ in 0..200 {
            let regs: Value = http
                .get(format!(
                    "http://127.0.0.1:{api}/v1/tenants/demo/users/102/registrations"
                ))
                .bearer_auth(ADMIN_KEY)
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            if regs.as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut audio = sine_wave(1000.0, 6.0);
        audio.extend(vec![0i16; 4000]);
        sipp_at_with_audio(
            sip,
            &caller_ports,
            "media_stream.xml",
            &audio,
            &["-s", "+15550102", "-d", "6000"],
        )
    });
    let reports = b.run(
        &url,
        440.0,
        json!([
            {"wait_status": "registered"},
            {"wait_call": "in call", "ms": 20000},
            {"sleep": 3000},
            {"report": "in_call"},
            {"wait_call": "ended", "ms": 20000}
        ]),
    );
    let (ok, out) = caller.join().expect("caller");
    assert!(ok, "caller: {out}\n{}", b.server.log_text());
    let f = heard(&reports["in_call"]);
    assert!(
        (f - 1000.0).abs() < 15.0,
        "the browser heard {f} Hz from the caller: {:?}",
        reports["in_call"]
    );
    // The recording: caller on the left, the browser on the right.
    let wav = newest_recording(api);
    let samples = wav_samples(&wav);
    let right: Vec<i16> = samples.chunks_exact(2).map(|f| f[1]).collect();
    let f = tone_after_onset(&right);
    assert!((f - 440.0).abs() < 15.0, "browser channel at {f} Hz");
}

/// The browser walks the IVR with its keypad (RFC 4733 through WebRTC: digit 3 leads to
/// voicemail), puts the call on hold and resumes it (re-INVITEs over WebSocket), then its tab
/// closes mid-call.
#[test]
fn browser_keypad_walks_the_ivr_and_hold_resume_work() {
    if !browser_available() {
        return;
    }
    let b = start();
    let reports = b.run(
        &b.page_url("102", ""),
        440.0,
        json!([
            {"wait_status": "registered"},
            {"dial": "500"},
            {"wait_call": "in call"},
            {"sleep": 1500},
            {"keys": "3"},
            {"sleep": 2000},
            {"click": "#hold"},
            {"sleep": 1500},
            {"report": "held"},
            {"click": "#hold"},
            {"sleep": 1500},
            {"report": "resumed"},
            {"close": true}
        ]),
    );
    // The tab closed mid-call: its WebSocket dropped, so the call ends at once (not at the
    // RTP timeout) and the registration goes.
    let http = Client::new();
    let api = format!("http://127.0.0.1:{}", b.ports.api);
    let mut left = usize::MAX;
    for _ in 0..30 {
        let calls: Value = http
            .get(format!("{api}/v1/tenants/demo/calls"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("calls")
            .json()
            .expect("json");
        left = calls["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(usize::MAX);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left, 0, "the call outlived its browser tab by 3 s");
    let regs: Value = http
        .get(format!("{api}/v1/tenants/demo/users/102/registrations"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("registrations")
        .json()
        .expect("json");
    assert_eq!(regs.as_array().map(Vec::len), Some(0), "{regs}");
    assert_eq!(reports["held"]["held"], true, "{:?}", reports["held"]);
    assert_eq!(
        reports["resumed"]["held"], false,
        "{:?}",
        reports["resumed"]
    );
    // The call record: the IVR took digit 3 and sent the caller to voicemail.
    let http = Client::new();
    let mut path = String::new();
    for _ in 0..100 {
        let logs: Value = http
            .get(format!(
                "http://127.0.0.1:{}/v1/tenants/demo/call-logs",
                b.ports.api
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("call logs")
            .json()
            .expect("json");
        if let Some(p) = logs["items"][0]["path"].as_str() {
            path = p.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        path.contains(":3") && path.contains("voicemail"),
        "call path {path:?}\n{}",
        b.server.log_text()
    );
    let log = b.server.log_text();
    assert!(log.contains("browser re-INVITE"), "{log}");
    assert!(log.contains("digit received"), "{log}");
    assert!(
        log.contains("Rfc4733"),
        "digits came as RFC 4733 events: {log}"
    );
}

/// Runs `integration/browser/console.mjs` through `steps`; returns its named values.
fn drive_console(b: &BrowserServer, steps: Value) -> std::collections::HashMap<String, Value> {
    let plan = json!({"steps": steps, "artifacts": b.artifacts()});
    let out = Command::new("node")
        .arg(repo().join("integration/browser/console.mjs"))
        .arg(plan.to_string())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut values = std::collections::HashMap::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(name) = v["name"].as_str() {
            values.insert(name.to_string(), v["value"].clone());
        }
        assert!(
            v.get("error").is_none(),
            "console: {v}\n--- stderr ---\n{stderr}\n--- server ---\n{}",
            b.server.log_text()
        );
    }
    assert!(
        out.status.success() && stdout.contains("\"done\""),
        "console run failed:\n{stdout}\n{stderr}"
    );
    values
}

/// The web console with a tenant key: a user created, an IVR edit refused with the error shown
/// on the route it concerns and then saved, a voicemail message played in the page, the call
/// log and node health shown. Screenshots go to target/browser-artifacts.
#[test]
fn console_creates_a_user_shows_ivr_errors_in_place_and_plays_voicemail() {
    if !browser_available() || !peer_available("sipp") {
        return;
    }
    let b = start();
    let http = Client::new();
    let api = format!("http://127.0.0.1:{}", b.ports.api);
    let key: Value = http
        .post(format!("{api}/v1/tenants/demo/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "console test", "read_only": false}))
        .send()
        .expect("key")
        .json()
        .expect("json");
    let key = key["key"].as_str().expect("key").to_string();
    // A message in mailbox 100 to play: the short greeting, then 2 s of 600 Hz.
    edit_demo(&b.server, |doc| {
        for m in doc["mailboxes"].as_array_mut().expect("mailboxes") {
            if m["id"] == "100" {
                m["greeting"] = json!("system/beep");
            }
        }
    });
    let (ok, out) = leave_600hz_message(b.server.sip_port, &b.ports);
    assert!(ok, "{out}");
    let art = b.artifacts();
    let shot = |n: &str| art.join(n).to_string_lossy().into_owned();
    let v = drive_console(
        &b,
        json!([
            {"goto": format!("{api}/console/")},
            {"fill": ["#tenant", "demo"]},
            {"fill": ["#key", key]},
            {"click": "#signin button[type=submit]"},
            {"wait": "#view[data-ready=users] tr[data-extension='100']"},
            {"fill": ["#new-user input[name=extension]", "105"]},
            {"fill": ["#new-user input[name=display_name]", "Dave Demo"]},
            {"fill": ["#new-user input[name=password]", "secret-pass-105"]},
            {"click": "#new-user button[type=submit]"},
            {"wait": "#view[data-ready=users] tr[data-extension='105']"},
            {"text": ["user_note", "#note"]},
            {"screenshot": shot("console-users.png")},
            {"click": "nav a[href='#ivrs']"},
            {"wait": "#view[data-ready=ivrs] #ivr-form"},
            {"fill": ["input[name='main.routes.0.target']", "{\"type\": \"user\", \"extension\": \"999\"}"]},
            {"click": "#ivr-form button[type=submit]"},
            {"wait": "li[data-path='ivrs.main.routes.0'] .field-error"},
            {"text": ["ivr_error", "li[data-path='ivrs.main.routes.0'] .field-error"]},
            {"eval": ["ivr_invalid", "document.querySelector(\"input[name='main.routes.0.target']\").getAttribute('aria-invalid')"]},
            {"screenshot": shot("console-ivr-error.png")},
            {"fill": ["input[name='main.routes.0.target']", "{\"type\": \"user\", \"extension\": \"105\"}"]},
            {"click": "#ivr-form button[type=submit]"},
            {"wait": "#view[data-ready=ivrs] #note"},
            {"text": ["ivr_note", "#note"]},
            {"click": "nav a[href='#mailboxes']"},
            {"wait": "#view[data-ready=mailboxes] tr[data-message] button"},
            {"click": "tr[data-message] button"},
            {"wait": "audio[data-loaded=true]"},
            {"sleep": 1500},
            {"eval": ["voicemail_playing", "(() => { const a = document.querySelector('audio[data-loaded=true]'); return { duration: a.duration, time: a.currentTime, paused: a.paused }; })()"]},
            {"screenshot": shot("console-voicemail.png")},
            {"click": "nav a[href='#calllog']"},
            {"wait": "#view[data-ready=calllog] table"},
            {"text": ["calllog", "#view"]},
            {"screenshot": shot("console-calllog.png")},
            {"click": "nav a[href='#health']"},
            {"wait": "#view[data-ready=health] dl"},
            {"text": ["health", "#view"]},
            {"eval": ["tenant_sees_service", "document.querySelector('#cluster') !== null"]},
            {"screenshot": shot("console-health.png")},
            // The operator (admin key) also sees every node of the service.
            {"click": "#signout"},
            {"wait": "#signin:not([hidden])"},
            {"fill": ["#tenant", "demo"]},
            {"fill": ["#key", ADMIN_KEY]},
            {"click": "#signin button[type=submit]"},
            {"wait": "#view[data-ready=users]"},
            {"click": "nav a[href='#health']"},
            {"wait": "#view[data-ready=health] #cluster tr[data-node]"},
            {"eval": ["service", "[...document.querySelectorAll('#cluster tr[data-node]')].map((r) => r.dataset.state + ' ' + r.cells[0].textContent)"]},
            {"screenshot": shot("console-service.png")}
        ]),
    );
    assert_eq!(v["tenant_sees_service"], false, "tenant keys see no nodes");
    let service = v["service"].as_array().cloned().unwrap_or_default();
    assert_eq!(service.len(), 1, "a node alone lists itself: {service:?}");
    assert!(
        service[0]
            .as_str()
            .is_some_and(|r| r.starts_with("ready ") && r.ends_with("(this node)")),
        "{service:?}"
    );
    assert_eq!(v["user_note"], "User 105 added.", "{v:?}");
    let err = v["ivr_error"].as_str().unwrap_or_default();
    assert!(err.contains("999"), "IVR error shown on the route: {err:?}");
    assert_eq!(v["ivr_invalid"], "true");
    assert!(
        v["ivr_note"].as_str().is_some_and(|n| n.contains("saved")),
        "{v:?}"
    );
    let playing = &v["voicemail_playing"];
    assert!(
        playing["duration"].as_f64().unwrap_or(0.0) > 2.0
            && playing["time"].as_f64().unwrap_or(0.0) > 0.5,
        "the message plays in the page: {playing}"
    );
    assert!(v["calllog"]
        .as_str()
        .is_some_and(|t| t.contains("voicemail")));
    let health = v["health"].as_str().unwrap_or_default();
    assert!(health.contains("ws 127.0.0.1"), "{health}");
    assert!(health.contains("history store"), "{health}");
    // The API agrees with what the console said.
    let ivrs: Value = http
        .get(format!("{api}/v1/tenants/demo/ivrs"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("ivrs")
        .json()
        .expect("json");
    assert_eq!(ivrs["main"]["routes"][0]["target"]["extension"], "105");
    let u = http
        .get(format!("{api}/v1/tenants/demo/users/105"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("user");
    assert_eq!(u.status().as_u16(), 200);
}

/// The same over `wss:` (TLS from `sip.tls_cert`/`sip.tls_key`), and the server's own on-demand
/// recording of the call holds the browser's 440 Hz in the caller's channel.
#[test]
fn browser_calls_over_secure_websocket_and_the_server_records_its_tone() {
    if !browser_available() || !peer_available("openssl") {
        return;
    }
    let b = start_with(true);
    let api = b.ports.api;
    let recorder = record_first_call(api);
    let reports = b.run(
        &b.page_url("102", ""),
        440.0,
        json!([
            {"wait_status": "registered"},
            {"dial": "600"},
            {"wait_call": "in call"},
            {"sleep": 3000},
            {"report": "in_call"},
            {"click": "#hangup"},
            {"wait_call": "ended"}
        ]),
    );
    assert_eq!(recorder.join().expect("recorder"), 204);
    let f = heard(&reports["in_call"]);
    assert!((f - 440.0).abs() < 15.0, "heard {f} Hz over wss");
    let wav = newest_recording(api);
    let left: Vec<i16> = wav_samples(&wav).chunks_exact(2).map(|f| f[0]).collect();
    let f = tone_after_onset(&left);
    assert!(
        (f - 440.0).abs() < 15.0,
        "recorded caller channel at {f} Hz"
    );
}
