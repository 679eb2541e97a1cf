//! A slow mailbox disk must not slow SIP. The server runs with every voicemail write delayed
//! by 2 s (`SWITCHYARD_FAULT_MAILBOX_WRITE_MS`, the store's fault injection); three callers
//! leave messages at once while SIPp probes the server with short calls. Every probe call is
//! answered without a single retransmission from SIPp (each answer came within T1) and none
//! took a second to set up, although the messages took 6 s to reach the disk one after the
//! other: the writes happened beside the SIP loop, not on it.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The cumulative value of `column` on the last line of SIPp's statistics CSV in `out`.
fn stat(out: &str, column: &str) -> Option<u64> {
    let start = out.find("_.csv ---")?;
    let csv = &out[start..];
    let mut lines = csv
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .filter(|l| l.contains(';'));
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last = lines.last()?;
    let i = header.iter().position(|h| *h == column)?;
    last.split(';').nth(i)?.trim().parse().ok()
}

/// Every INVITE → 200 time SIPp measured (ms), from its `-trace_rtt` file in `out`.
fn setup_times(out: &str) -> Vec<f64> {
    let Some(start) = out.find("_rtt.csv ---") else {
        return Vec::new();
    };
    out[start..]
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("---"))
        .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
        .collect()
}

fn messages_on_disk(server: &Server) -> usize {
    std::fs::read_dir(server.data_path().join("voicemail/demo/100"))
        .map(|d| {
            d.flatten()
                .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_slow_mailbox_disk_does_not_slow_sip() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_FAULT_MAILBOX_WRITE_MS", "2000")]);
    // A short greeting (beep, "leave a message", beep: ~5.4 s) keeps the deposit short.
    short_greeting(&server);
    let sip_port = server.sip_port;

    // The probe: 4 short calls a second to the echo test for 18 s, spanning the deposits and
    // the 6 s their writes take.
    let probe = {
        let pp = ports();
        std::thread::spawn(move || {
            let args = [
                "-s",
                "+15550600",
                "-d",
                "200",
                "-r",
                "4",
                "-m",
                "72",
                "-trace_rtt",
                "-rtt_freq",
                "1",
            ];
            sipp_at(sip_port, &pp, "invite_trunk.xml", &args)
        })
    };
    // Three messages at once: 6 s of silence then 2 s of 600 Hz, then BYE.
    let depositors: Vec<_> = (0..3)
        .map(|_| {
            let dp = ports();
            std::thread::spawn(move || leave_600hz_message(sip_port, &dp))
        })
        .collect();
    for d in depositors {
        let (ok, out) = d.join().expect("depositor");
        assert!(ok, "deposit call failed:\n{out}");
    }
    // How many messages were on disk when the callers had hung up (checked below).
    let deposits_done = Instant::now();
    let on_disk_at_hangup = messages_on_disk(&server);

    let (ok, out) = probe.join().expect("probe");
    assert!(ok, "probe calls failed:\n{out}\n{}", server.log_text());
    assert_eq!(stat(&out, "SuccessfulCall(C)"), Some(72), "{out}");
    assert_eq!(
        stat(&out, "Retransmissions(C)"),
        Some(0),
        "SIPp had to retransmit: the server answered later than T1\n{out}"
    );
    let times = setup_times(&out);
    assert_eq!(times.len(), 72, "one set-up time per probe call\n{out}");
    let slowest = times.iter().cloned().fold(0.0, f64::max);
    // A write on the SIP loop would hold some call for its 2 s.
    assert!(
        slowest < 1000.0,
        "a probe call took {slowest} ms to set up\n{out}"
    );
    // The writes were slow (the fault injection works): when the callers had hung up the
    // messages were not all on disk yet; they all arrive.
    assert!(
        on_disk_at_hangup < 3,
        "the fault injection did not slow the writes"
    );
    while messages_on_disk(&server) < 3 && deposits_done.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        messages_on_disk(&server),
        3,
        "every message reaches the disk"
    );
}

/// Nothing lost when the process dies between the end of a message and the fsync of its
/// metadata. Every voicemail write takes 6 s; a caller leaves a message (2 s of 600 Hz) and
/// hangs up; the server is killed (SIGKILL) a moment later, while the message's metadata is
/// still queued. Started again on the same folder without the fault, the server lists the
/// message (its caller unknown: that was in the lost metadata) and serves its audio, which
/// holds the tone.
#[test]
fn a_message_cut_off_by_a_kill_before_its_metadata_is_listed_after_a_restart() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_FAULT_MAILBOX_WRITE_MS", "6000")]);
    short_greeting(&server);
    let (ok, out) = leave_600hz_message(server.sip_port, &p);
    assert!(ok, "deposit call failed:\n{out}\n{}", server.log_text());
    std::thread::sleep(Duration::from_millis(500));
    let mailbox = server.data_path().join("voicemail/demo/100");
    let wavs = std::fs::read_dir(&mailbox)
        .map(|d| {
            d.flatten()
                .filter(|f| f.path().extension().is_some_and(|e| e == "wav"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(wavs, 1, "the audio is on disk");
    assert_eq!(
        messages_on_disk(&server),
        0,
        "the metadata must still be queued when the kill comes (fault injection)"
    );
    let data = server.kill_keeping_data();

    let server = Server::start_in(&p, &[], data);
    let log = server.log_text();
    assert!(log.contains("voicemail recovered"), "{log}");
    let http = reqwest::blocking::Client::new();
    let base = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/mailboxes/100/messages",
        server.api_port
    );
    let list: serde_json::Value = http
        .get(&base)
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["folder"], "new");
    assert_eq!(items[0]["caller"], "unknown");
    let ms = items[0]["duration_ms"].as_u64().expect("duration");
    assert!(ms >= 2000, "the message lasts {ms} ms");
    let id = items[0]["id"].as_str().expect("id");
    let wav = http
        .get(format!("{base}/{id}/audio"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("audio")
        .bytes()
        .expect("bytes");
    let samples = wav_samples(&wav);
    let start = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("the tone is in the recovered message");
    let f = tone_frequency(&samples[start + 400..start + 8000]);
    assert!((f - 600.0).abs() < 10.0, "recovered message holds {f} Hz");
}
