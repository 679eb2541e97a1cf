//! Media against a real peer: SIPp streams audio and digits into calls, tcpdump captures what
//! the server sends back, and the tests check it as audio (frequency, exact prompt samples,
//! timing on the 20 ms grid, continuous numbering).

mod common;

use common::*;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Rtp {
    at_us: u64,
    seq: u16,
    ts: u32,
    pt: u8,
    payload: Vec<u8>,
}

/// The server's RTP (even source ports in its range), in capture order.
fn server_rtp(caps: &[Datagram], first: u16) -> Vec<Rtp> {
    caps.iter()
        .filter(|d| d.src_port >= first && d.src_port < first + 20 && d.src_port % 2 == 0)
        .filter(|d| {
            d.payload.len() >= 12 && d.payload[0] >> 6 == 2 && !(200..=204).contains(&d.payload[1])
        })
        .map(|d| Rtp {
            at_us: d.at_us,
            seq: u16::from_be_bytes([d.payload[2], d.payload[3]]),
            ts: u32::from_be_bytes([d.payload[4], d.payload[5], d.payload[6], d.payload[7]]),
            pt: d.payload[1] & 0x7f,
            payload: d.payload[12..].to_vec(),
        })
        .collect()
}

fn decode(pkts: &[Rtp]) -> Vec<i16> {
    pkts.iter()
        .filter(|p| p.pt == 0)
        .flat_map(|p| p.payload.iter().map(|&b| ulaw_to_linear(b)))
        .collect()
}

fn sine(freq: f32, secs: f32, amp: f32) -> Vec<i16> {
    (0..(8000.0 * secs) as usize)
        .map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0).sin() * amp) as i16)
        .collect()
}

/// Checks the stream is one continuous RTP stream on the 20 ms grid; returns the largest gap.
fn assert_continuous(pkts: &[Rtp]) -> u64 {
    assert!(pkts.len() > 20, "too few packets: {}", pkts.len());
    let mut max_gap = 0;
    for w in pkts.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence jump");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "timestamp jump");
        max_gap = max_gap.max(w[1].at_us.saturating_sub(w[0].at_us));
    }
    assert!(max_gap < 40_000, "gap of {max_gap} µs between packets");
    max_gap
}

#[test]
fn echo_test_returns_the_callers_tone() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&sine(1000.0, 3.0, 8000.0)),
        &["-s", "+15550600", "-d", "4000"],
    );
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    let pkts = server_rtp(&cap.finish(), p.rtp_first);
    assert_continuous(&pkts);
    let audio = decode(&pkts);
    let start = audio
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("the tone came back");
    let end = audio
        .iter()
        .rposition(|s| s.unsigned_abs() > 2000)
        .expect("end");
    let secs = (end - start) as f32 / 8000.0;
    assert!((secs - 3.0).abs() < 0.05, "echoed tone lasts {secs} s");
    let f = tone_frequency(&audio[start + 800..end - 800]);
    assert!((f - 1000.0).abs() < 10.0, "echo at {f} Hz");
}

#[test]
fn looping_prompt_is_played_sample_exact_on_the_grid() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    demo_long_is_played_sample_exact(&server, &p);
}

/// Started as an operator would (from an empty directory, no prompt folder): the prompts built
/// into the binary play, sample for sample.
#[test]
fn built_in_prompts_play_from_any_working_directory() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start_from_empty_dir(&p);
    demo_long_is_played_sample_exact(&server, &p);
    assert!(
        !server.log_text().contains("not found"),
        "{}",
        server.log_text()
    );
}

/// Calls the looping demo prompt and checks what the server sends against the WAV file.
fn demo_long_is_played_sample_exact(server: &Server, p: &Ports) {
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&vec![0i16; 8000]),
        &["-s", "+15550601", "-d", "3000"],
    );
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    let pkts = server_rtp(&cap.finish(), p.rtp_first);
    assert_continuous(&pkts);
    // The server's first payloads are exactly the prompt's first samples, µ-law encoded.
    let wav = std::fs::read(repo().join("prompts/system/demo-long.wav")).expect("prompt");
    let prompt: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let expected: Vec<u8> = prompt
        .iter()
        .take(160 * 100)
        .map(|&s| linear_to_ulaw(s))
        .collect();
    let sent: Vec<u8> = pkts
        .iter()
        .filter(|p| p.pt == 0)
        .take(100)
        .flat_map(|p| p.payload.clone())
        .collect();
    // The prompt may start a tick or two after the leg (the first frames are silence when the
    // worker ticks between creating the leg and starting playback); from its first packet on it
    // is sample-exact.
    let offset = (0..5)
        .find(|&o| {
            pkts.iter()
                .filter(|p| p.pt == 0)
                .skip(o)
                .take(100)
                .flat_map(|p| p.payload.clone())
                .eq(expected.iter().copied())
        })
        .unwrap_or_else(|| {
            let same = sent
                .iter()
                .zip(expected.iter())
                .filter(|(a, b)| a == b)
                .count();
            panic!("{same} of {} samples match the prompt", sent.len())
        });
    assert!(offset <= 2, "prompt starts {offset} packets late");
}

#[test]
fn prompt_duration_and_loop_period_are_exact() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // A number that loops the test pattern: 300 ms of 1 kHz, 200 ms of silence.
    let number = serde_json::json!({"number": "+15550999", "target": {"type": "prompt_loop", "prompt": "system/test-pattern"}});
    assert!(import_demo_with_numbers(&server, &[number])
        .status
        .success());
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&vec![0i16; 8000]),
        &["-s", "+15550999", "-d", "3200"],
    );
    assert!(ok, "sipp failed:\n{out}");
    let pkts = server_rtp(&cap.finish(), p.rtp_first);
    assert_continuous(&pkts);
    let audio = decode(&pkts);
    // Burst boundaries by sample: a burst is a run of samples with tone energy.
    let loud: Vec<bool> = audio
        .chunks(40)
        .map(|c| c.iter().any(|s| s.unsigned_abs() > 3000))
        .collect();
    let mut bursts = Vec::new();
    let mut start = None;
    for (i, &l) in loud.iter().enumerate() {
        match (l, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                bursts.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    assert!(bursts.len() >= 4, "bursts: {bursts:?}");
    for (s, e) in &bursts {
        let ms = (e - s) * 5;
        assert!((ms as i64 - 300).abs() <= 40, "tone lasted {ms} ms");
    }
    for w in bursts.windows(2) {
        let period = (w[1].0 - w[0].0) * 5;
        assert!((period as i64 - 500).abs() <= 40, "period {period} ms");
    }
}

fn digits_in_log(log: &str) -> Vec<(char, String)> {
    log.lines()
        .filter(|l| l.contains("digit received"))
        .filter_map(|l| {
            let d = l.split("digit=").nth(1)?.chars().next()?;
            let src = l
                .split("source=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            Some((d, src))
        })
        .collect()
}

#[test]
fn rfc4733_digits_from_sipp_are_detected_once_each() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_dtmf.xml",
        None,
        &["-s", "+15550601", "-d", "2500"],
    );
    assert!(ok, "sipp failed:\n{out}");
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<char> = digits_in_log(&server.log_text())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, vec!['1', '2', '3', '#']);
}

#[test]
fn inband_digits_are_detected_and_speech_gives_none() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // One second of a speech-like harmonic sound (no digits may come of it), then 4, 7, #.
    let mut audio: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let f0 = 120.0 + 25.0 * (t * 4.0).sin();
            (1..15)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() * 2500.0 / h as f32)
                .sum::<f32>() as i16
        })
        .collect();
    for d in ['4', '7', '#'] {
        let (r, c) = match d {
            '4' => (770.0, 1209.0),
            '7' => (852.0, 1209.0),
            _ => (941.0, 1477.0),
        };
        audio.extend((0..800).map(|i| {
            let t = i as f32 / 8000.0;
            ((2.0 * std::f32::consts::PI * r * t).sin() * 5000.0
                + (2.0 * std::f32::consts::PI * c * t).sin() * 5000.0) as i16
        }));
        audio.extend(vec![0i16; 1600]);
    }
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_inband.xml",
        Some(&audio),
        &["-s", "+15550601", "-d", "3500"],
    );
    assert!(ok, "sipp failed:\n{out}");
    std::thread::sleep(Duration::from_millis(300));
    let got = digits_in_log(&server.log_text());
    assert_eq!(
        got.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec!['4', '7', '#'],
        "{got:?}"
    );
    assert!(got.iter().all(|(_, s)| s == "Inband"));
}

#[test]
fn silent_caller_is_hung_up_on_rtp_timeout_and_ports_are_freed() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[("SWITCHYARD_MEDIA_RTP_TIMEOUT_SECS", "2")]);
    // SIPp sends no RTP and would hang up after 6 s; the server's BYE comes first, so SIPp
    // sees an unexpected BYE and reports a failed call.
    let (ok, _) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&[]),
        &["-s", "+15550601", "-d", "6000", "-timeout", "15s"],
    );
    assert!(!ok, "SIPp should have been hung up on");
    let log = server.log_text();
    assert!(log.contains("no RTP from the caller"), "{log}");
    assert!(log.contains("media closed"));
}

#[test]
fn voicemail_deposit_records_the_callers_tone() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    // Quiet through the system greeting ("extension one zero zero, … not available, please
    // leave a message", beep: its length is read from the prompt files), then 2 s of 800 Hz,
    // then quiet until SIPp hangs up.
    let greeting: f32 = [
        "extension",
        "digit-1",
        "digit-0",
        "digit-0",
        "unavailable",
        "leave-message",
        "beep",
    ]
    .iter()
    .map(|n| {
        let len = std::fs::metadata(repo().join(format!("prompts/system/{n}.wav")))
            .expect("prompt")
            .len();
        (len.saturating_sub(44)) as f32 / 16000.0
    })
    .sum();
    let quiet = greeting + 1.0;
    let mut audio = vec![0i16; (8000.0 * quiet) as usize];
    audio.extend(sine(800.0, 2.0, 8000.0));
    audio.extend(vec![0i16; 8000]);
    let hold_ms = ((quiet + 3.5) * 1000.0) as u64;
    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_stream.xml",
        Some(&audio),
        &[
            "-s",
            "+15550300",
            "-d",
            &hold_ms.to_string(),
            "-timeout",
            "30s",
        ],
    );
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = server.data_path().join("voicemail/demo/100");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("mailbox folder")
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(files.len(), 1, "one message");
    // Its metadata: who called (the trunk's caller number) and how long it is.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(files[0].path().with_extension("json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(meta["folder"], "new");
    assert_eq!(meta["caller"], "+15557654321");
    let ms = meta["duration_ms"].as_u64().expect("duration");
    assert!((2000..6000).contains(&ms), "message lasts {ms} ms");
    let b = std::fs::read(files[0].path()).expect("read");
    assert_eq!(&b[..4], b"RIFF");
    let samples: Vec<i16> = b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    // The tone is the first run of loud 10 ms windows (SIPp ends its stream with one junk
    // sample, which a last-loud-sample measure would mistake for tone).
    let loud: Vec<bool> = samples
        .chunks(80)
        .map(|c| c.iter().any(|s| s.unsigned_abs() > 2000))
        .collect();
    let first = loud.iter().position(|&l| l).expect("tone recorded");
    let run = loud[first..].iter().take_while(|&&l| l).count();
    let (start, end) = (first * 80, (first + run) * 80);
    let secs = (end - start) as f32 / 8000.0;
    assert!((secs - 2.0).abs() < 0.05, "recorded tone lasts {secs} s");
    let f = tone_frequency(&samples[start + 400..end - 400]);
    assert!((f - 800.0).abs() < 10.0, "recorded {f} Hz");
    // The greeting is not in the message: it starts after the beep.
    assert!(
        start < 8000 * 2,
        "tone starts {} s into the message",
        start / 8000
    );
}

/// Calls `number` for ~2.5 s and returns the frequency of what the server played.
fn heard_frequency(server: &Server, p: &Ports, number: &str) -> f32 {
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&vec![0i16; 8000]),
        &["-s", number, "-d", "2500"],
    );
    assert!(ok, "sipp failed:\n{out}\n{}", server.log_text());
    let audio = decode(&server_rtp(&cap.finish(), p.rtp_first));
    let start = audio
        .iter()
        .position(|s| s.unsigned_abs() > 3000)
        .expect("the prompt on the wire");
    assert!(audio.len() > start + 8000, "too little audio");
    tone_frequency(&audio[start + 80..start + 8000])
}

/// A prompt uploaded through the admin API (16 kHz WAV, converted once) plays on the next
/// call; a replacement is heard on the call after; it cannot be deleted while a number uses
/// it (409 naming the path); bad uploads are refused naming the problem.
#[test]
fn uploaded_prompt_plays_is_replaced_and_cannot_be_deleted_while_used() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let http = reqwest::blocking::Client::new();
    let url = |name: &str| {
        format!(
            "http://127.0.0.1:{}/v1/tenants/demo/prompts{name}",
            server.api_port
        )
    };
    let put = |name: &str, ct: &str, body: Vec<u8>| {
        http.put(url(name))
            .bearer_auth(ADMIN_KEY)
            .header("Content-Type", ct)
            .body(body)
            .send()
            .expect("PUT")
    };
    let r = put(
        "/tone",
        "audio/wav",
        pcm_wav(&tone_at(700.0, 16000, 1.0), 16000),
    );
    assert_eq!(r.status().as_u16(), 201);
    let info: serde_json::Value = r.json().expect("json");
    assert_eq!(info["duration_ms"], 1000, "{info}");
    edit_demo(&server, |doc| {
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(serde_json::json!(
                {"number": "+15550998", "target": {"type": "prompt_loop", "prompt": "tone"}}
            ));
    });
    let f = heard_frequency(&server, &p, "+15550998");
    assert!((f - 700.0).abs() < 10.0, "heard {f} Hz");

    // Replaced (same length, new tone): the next call hears the new one.
    let r = put(
        "/tone",
        "audio/wav",
        pcm_wav(&tone_at(1000.0, 16000, 1.0), 16000),
    );
    assert_eq!(r.status().as_u16(), 200);
    let f = heard_frequency(&server, &p, "+15550998");
    assert!(
        (f - 1000.0).abs() < 10.0,
        "heard {f} Hz after the replacement"
    );

    // Raw µ-law is taken too; bad uploads are refused with the reason.
    let mut ulaw: Vec<u8> = tone_at(500.0, 8000, 0.5)
        .iter()
        .map(|&s| linear_to_ulaw(s))
        .collect();
    assert_eq!(
        put("/beep2", "audio/basic", ulaw.clone()).status().as_u16(),
        201
    );
    ulaw.truncate(400);
    let short = put("/beep3", "audio/basic", ulaw);
    assert_eq!(short.status().as_u16(), 422);
    assert!(short.text().expect("text").contains("100 ms"));
    let junk = put("/junk", "audio/wav", b"this is not audio".to_vec());
    assert_eq!(junk.status().as_u16(), 422);
    let body: serde_json::Value = junk.json().expect("json");
    assert_eq!(body["errors"][0]["path"], "body", "{body}");
    assert_eq!(
        put("/junk", "text/plain", b"x".to_vec()).status().as_u16(),
        415
    );
    assert_eq!(
        put("/Bad.Name", "audio/basic", vec![0xff; 8000])
            .status()
            .as_u16(),
        404
    );

    let list: serde_json::Value = http
        .get(url(""))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["beep2", "tone"], "{list}");
    let used_by = &list["items"][1]["used_by"][0];
    assert!(
        used_by
            .as_str()
            .is_some_and(|p| p.ends_with(".target.prompt")),
        "{list}"
    );

    // In use: refused, naming where.
    let del = http
        .delete(url("/tone"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("DELETE");
    assert_eq!(del.status().as_u16(), 409);
    let body: serde_json::Value = del.json().expect("json");
    assert!(
        body["errors"][0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("numbers.")),
        "{body}"
    );
    // The audio downloads as stored (8 kHz mono PCM), and is in blob storage.
    let got = http
        .get(url("/tone"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("GET");
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().expect("bytes").len(), 44 + 16000);
    let blob = server
        .data_path()
        .join("blobs/tenants/demo/prompts/tone.wav");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !blob.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(blob.exists(), "prompt in blob storage");

    edit_demo(&server, |doc| {
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .retain(|n| n["number"] != "+15550998");
    });
    let del = http
        .delete(url("/tone"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("DELETE");
    assert_eq!(del.status().as_u16(), 204);
    let gone = http
        .get(url("/tone"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("GET");
    assert_eq!(gone.status().as_u16(), 404);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while blob.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!blob.exists(), "prompt removed from blob storage");
}
