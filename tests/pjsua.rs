//! A second real peer: PJSUA2 (pjsip's own user agent, from PyPI) calls the echo test, plays a
//! tone and records what it hears; the recording must hold the tone.

mod common;

use common::*;
use std::process::Command;

fn read_wav_8k(path: &std::path::Path) -> Vec<i16> {
    wav_data(&std::fs::read(path).expect("recording"))
}

/// A 16-bit 8 kHz mono WAV of a sine tone.
fn write_tone_wav(path: &std::path::Path, freq: f32, secs: f32) {
    let tone: Vec<i16> = (0..(8000.0 * secs) as usize)
        .map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0).sin() * 9000.0) as i16)
        .collect();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + tone.len() as u32 * 2).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&[16, 0, 0, 0, 1, 0, 1, 0]);
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&[2, 0, 16, 0]);
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(tone.len() as u32 * 2).to_le_bytes());
    for s in &tone {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write");
}

/// Issue 5's proof: two PJSUA2 users register as 100 and 101, 100 calls 101, 101 answers,
/// each plays a tone of its own frequency, and each must hear the other's.
#[test]
fn two_pjsua2_users_call_each_other_and_hear_each_others_tone() {
    if !pjsua_available() {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    two_users_hear_each_other(&server, &[]);
}

/// Users 100 (plays 440 Hz) and 101 (1000 Hz) register, 100 calls 101, and each hears the
/// other's tone (measured by the script and again here from its recordings). `extra` goes to
/// `two_users.py` (transports, SRTP).
fn two_users_hear_each_other(server: &Server, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = |n: &str| dir.path().join(n).display().to_string();
    write_tone_wav(dir.path().join("a.wav").as_path(), 440.0, 2.0);
    write_tone_wav(dir.path().join("b.wav").as_path(), 1000.0, 2.0);
    let out = Command::new("python3")
        .arg(repo().join("integration/pjsua/two_users.py"))
        .args(["--server", &format!("127.0.0.1:{}", server.sip_port)])
        .args([
            "--caller-wav",
            &path("a.wav"),
            "--callee-wav",
            &path("b.wav"),
        ])
        .args([
            "--caller-rec",
            &path("a-heard.wav"),
            "--callee-rec",
            &path("b-heard.wav"),
        ])
        .args(["--seconds", "3", "--check-freqs", "440", "1000"])
        .args(extra)
        .output()
        .expect("run pjsua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{extra:?}: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let caller_heard = read_wav_8k(&dir.path().join("a-heard.wav"));
    let callee_heard = read_wav_8k(&dir.path().join("b-heard.wav"));
    for (heard, want, who) in [
        (&caller_heard, 1000.0, "caller"),
        (&callee_heard, 440.0, "callee"),
    ] {
        let start = heard
            .iter()
            .position(|s| s.unsigned_abs() > 2000)
            .unwrap_or_else(|| panic!("{extra:?}: {who} heard nothing"));
        let window = &heard[start + 400..(start + 400 + 8000).min(heard.len())];
        let f = tone_frequency(window);
        assert!(
            (f - want).abs() < 15.0,
            "{extra:?}: {who} heard {f} Hz, not {want}"
        );
    }
}

#[test]
fn pjsua2_hears_itself_on_the_echo_test() {
    if !pjsua_available() {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let play = dir.path().join("tone.wav");
    write_tone_wav(&play, 700.0, 3.0);
    let rec = dir.path().join("heard.wav");
    let out = Command::new("python3")
        .arg(repo().join("integration/pjsua/echo_call.py"))
        .args([
            "--server",
            &format!("127.0.0.1:{}", server.sip_port),
            "--to",
            "+15550600",
            "--seconds",
            "3",
        ])
        .arg("--play")
        .arg(&play)
        .arg("--record")
        .arg(&rec)
        .output()
        .expect("run pjsua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    assert!(stdout.starts_with("OK"), "{stdout}");
    let heard = read_wav_8k(&rec);
    let start = heard
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("echo heard");
    let window = &heard[start + 800..(start + 800 + 8000).min(heard.len())];
    assert!(window.len() > 4000, "echo too short");
    let f = tone_frequency(window);
    assert!((f - 700.0).abs() < 15.0, "PJSUA2 heard {f} Hz");
    // The echo arrives within a fraction of a second (jitter buffer + pacing), not seconds.
    assert!(start < 8000 / 2, "echo delay {} ms", start / 8);
}

/// PJSUA2 as user 100 over TLS (the server's certificate checked against `ca`) calling the
/// echo test for 3 s, playing `play` and recording what it hears into `rec`.
fn echo_over_tls(
    tls_port: u16,
    ca: &std::path::Path,
    play: &std::path::Path,
    rec: &std::path::Path,
) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("integration/pjsua/echo_call.py"))
        .args(["--tls", "--server", &format!("127.0.0.1:{tls_port}")])
        .arg("--ca")
        .arg(ca)
        .args(["--to", "+15550600", "--seconds", "3"])
        .args(["--user", "100", "--password", "demo100"])
        .arg("--play")
        .arg(play)
        .arg("--record")
        .arg(rec);
    cmd
}

/// `echo_call.py` ended well and what it recorded in `rec` is its 700 Hz tone coming back.
fn assert_heard_700(
    out: &std::process::Output,
    rec: &std::path::Path,
    round: &str,
    server: &Server,
) {
    assert!(
        out.status.success(),
        "{round}: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let f = tone_after_onset(&read_wav_8k(rec));
    assert!((f - 700.0).abs() < 15.0, "{round}: PJSUA2 heard {f} Hz");
}

/// SIP over TLS (`tls:` listener): PJSUA2 checks the server's certificate against the
/// self-signed one it was given, calls the echo test with digest auth over TLS and hears its
/// tone; the capture of the TLS port holds no SIP in clear. Then the certificate files are
/// replaced (a renewal): new connections get the new certificate, with no restart, and a call
/// still works.
#[test]
fn pjsua2_calls_over_tls_and_a_renewed_certificate_needs_no_restart() {
    if !pjsua_available() || !peer_available("openssl") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let tls_port = p.sip + 7;
    let work = tempfile::tempdir().expect("tmp");
    let (first_cert, first_key) = self_signed_cert(work.path(), "first");
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::copy(&first_cert, &cert).expect("cert");
    std::fs::copy(&first_key, &key).expect("key");
    let listen = format!(
        "udp:127.0.0.1:{s},tcp:127.0.0.1:{s},tls:127.0.0.1:{tls_port}",
        s = p.sip
    );
    let server = start_with_certificate(&p, &listen, &cert, &key);
    let play = work.path().join("tone.wav");
    write_tone_wav(&play, 700.0, 3.0);
    let call = |ca: &std::path::Path, round: &str| {
        let rec = work.path().join(format!("heard-{round}.wav"));
        let out = echo_over_tls(tls_port, ca, &play, &rec)
            .output()
            .expect("run pjsua");
        assert_heard_700(&out, &rec, round, &server);
    };

    let cap = Capture::start_on("lo", &format!("tcp port {tls_port}"));
    call(&first_cert, "first certificate");
    let wire = cap.finish_raw();
    let has = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        wire.len() > 2000 && !has(b"SIP/2.0") && !has(b"INVITE sip:") && !has(b"Digest"),
        "the TLS port must carry no SIP in clear ({} bytes captured)",
        wire.len()
    );
    assert!(
        server.log_text().contains("SIP listening on TLS"),
        "{}",
        server.log_text()
    );

    // Renewed in place: new connections get the new certificate.
    assert!(presented_subject(tls_port).contains("CN = first"));
    let (second_cert, second_key) = self_signed_cert(work.path(), "second");
    std::fs::copy(&second_key, &key).expect("key");
    std::fs::copy(&second_cert, &cert).expect("cert");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !presented_subject(tls_port).contains("CN = second") {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is not served: {}\n{}",
            presented_subject(tls_port),
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    call(&second_cert, "renewed certificate");
}

/// A server listening on UDP and TLS (port `p.sip + 7`, a self-signed certificate for
/// 127.0.0.1 in the returned folder): the server, its TLS port and the certificate.
fn udp_and_tls_server(p: &Ports) -> (Server, u16, std::path::PathBuf, tempfile::TempDir) {
    let tls_port = p.sip + 7;
    let work = tempfile::tempdir().expect("tmp");
    let (cert, key) = self_signed_cert(work.path(), "srtp");
    let listen = format!("udp:127.0.0.1:{s},tls:127.0.0.1:{tls_port}", s = p.sip);
    let server = start_with_certificate(p, &listen, &cert, &key);
    (server, tls_port, cert, work)
}

/// The captured datagrams that look like RTP carrying PCMU or PCMA (SRTP keeps the header
/// in clear, so SRTP packets are among them).
fn g711_media(sent: &[Datagram]) -> Vec<&Datagram> {
    sent.iter()
        .filter(|d| d.payload.len() > 12 && d.payload[0] >> 6 == 2)
        .filter(|d| matches!(d.payload[1] & 0x7f, 0 | 8))
        .collect()
}

/// The share of a block's energy at `freq` (Goertzel): about 1 for that pure tone, about
/// 2/len for noise (what an encrypted G.711 payload decodes to).
fn tone_share(block: &[i16], freq: f64) -> f64 {
    let n = block.len() as f64;
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let energy: f64 = block.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    power / (energy * n / 2.0)
}

/// SRTP with SDES keys (RFC 4568) over TLS: PJSUA2 offers `RTP/SAVP` and requires it
/// (`srtpUse` mandatory, secure signalling), once with its own list of suites and once with
/// `AES_CM_128_HMAC_SHA1_32` alone; each time it hears its tone come back from the echo test.
/// What the server sent from its RTP ports is SRTP: every media packet carries the suite's
/// authentication tag (no 172-byte plain G.711 packet), and the payloads are noise, not the
/// tone the caller hears once they are decrypted. A last call without SRTP is the control:
/// the same checks see its plain packets and the tone in them.
#[test]
fn pjsua2_calls_over_tls_with_srtp_and_nothing_plain_is_on_the_wire() {
    if !pjsua_available() || !peer_available("openssl") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let (server, tls_port, cert, work) = udp_and_tls_server(&p);
    let play = work.path().join("tone.wav");
    write_tone_wav(&play, 700.0, 3.0);
    for (round, suite, tag_len) in [
        ("pjsua2's suites", Some(""), None),
        ("32-bit tag", Some("AES_CM_128_HMAC_SHA1_32"), Some(4)),
        ("control without SRTP", None, Some(0)),
    ] {
        let rec = work.path().join(format!("heard-{tag_len:?}.wav"));
        let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
        let mut cmd = echo_over_tls(tls_port, &cert, &play, &rec);
        match suite {
            Some("") => {
                cmd.args(["--srtp", "mandatory"]);
            }
            Some(s) => {
                cmd.args(["--srtp", "mandatory", "--srtp-suite", s]);
            }
            None => {}
        }
        let out = cmd.output().expect("run pjsua");
        let sent = cap.finish();
        assert_heard_700(&out, &rec, round, &server);

        let media = g711_media(&sent);
        assert!(
            media.len() > 100,
            "{round}: {} media packets captured",
            media.len()
        );
        let plain = media.iter().filter(|d| d.payload.len() == 172).count();
        let encrypted = suite.is_some();
        assert_eq!(
            plain == 0,
            encrypted,
            "{round}: {plain} plain G.711 packets"
        );
        if let Some(t) = tag_len {
            assert!(
                media.iter().all(|d| d.payload.len() == 172 + t),
                "{round}: packets without the {t}-byte tag"
            );
        }
        let shares: Vec<f64> = media
            .iter()
            .map(|d| {
                let block: Vec<i16> = d.payload[12..172]
                    .iter()
                    .map(|&b| ulaw_to_linear(b))
                    .collect();
                tone_share(&block, 700.0)
            })
            .collect();
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        assert_eq!(
            mean < 0.1,
            encrypted,
            "{round}: share of the tone in the payloads {mean:.3}"
        );
    }
    let log = server.log_text();
    assert!(log.contains("SRTP answered"), "{log}");
    assert!(log.contains("AES_CM_128_HMAC_SHA1_32"), "{log}");
}

/// SRTP between phones through the B2BUA. With the tenant's SRTP `optional` (the default), a
/// PJSUA2 phone on TLS that requires SRTP calls one on plain UDP: the engine bridges SDES-SRTP
/// and plain RTP, and each hears the other's tone. With `required`, both phones on TLS and
/// requiring SRTP: the server offers the called phone SRTP too (so neither leg is plain: the
/// capture of the server's RTP ports holds no plain G.711 packet), and each hears the other;
/// a phone calling over TLS without an offer (late offer) gets ours with SRTP and hears its
/// echo; a phone calling over UDP with plain RTP is refused with 488.
#[test]
fn srtp_phones_reach_plain_phones_and_each_other_as_the_tenant_policy_says() {
    if !pjsua_available() || !peer_available("openssl") || !peer_available("tcpdump") {
        return;
    }
    let p = ports();
    let (server, tls_port, cert, work) = udp_and_tls_server(&p);
    let tls = tls_port.to_string();
    let ca = cert.display().to_string();
    let common = ["--tls-port", tls.as_str(), "--ca", ca.as_str()];

    let mut mixed = common.to_vec();
    mixed.extend(["--caller-tls", "--caller-srtp"]);
    two_users_hear_each_other(&server, &mixed);

    edit_demo(&server, |doc| {
        doc["settings"]["srtp"] = serde_json::json!("required")
    });
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let mut both = common.to_vec();
    both.extend([
        "--caller-tls",
        "--caller-srtp",
        "--callee-tls",
        "--callee-srtp",
    ]);
    two_users_hear_each_other(&server, &both);
    let sent = cap.finish();
    let media = g711_media(&sent);
    assert!(media.len() > 200, "{} media packets captured", media.len());
    assert!(
        media.iter().all(|d| d.payload.len() > 172),
        "a plain G.711 packet left the server under a policy that requires SRTP"
    );

    // An INVITE without an offer over TLS, still under `required`: our offer in the 200
    // carries RTP/SAVP and our key, PJSUA2 (SRTP mandatory) answers in its ACK, hears its
    // echo, and no plain packet leaves the server.
    let long_tone = work.path().join("tone-3s.wav");
    write_tone_wav(&long_tone, 700.0, 3.0);
    let rec = work.path().join("late-offer.wav");
    let cap = Capture::start(p.rtp_first, p.rtp_first + 19);
    let mut late = echo_over_tls(tls_port, &cert, &long_tone, &rec);
    late.args(["--srtp", "mandatory", "--late-offer"]);
    let out = late.output().expect("run pjsua");
    assert_heard_700(&out, &rec, "late offer with SRTP", &server);
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("late offer: our offer goes in the 200") && l.contains("srtp=true")),
        "PJSUA2 sent its INVITE without an offer\n{}",
        server.log_text()
    );
    let sent = cap.finish();
    let media = g711_media(&sent);
    assert!(media.len() > 100, "{} media packets captured", media.len());
    assert!(
        media.iter().all(|d| d.payload.len() > 172),
        "a plain G.711 packet left the server on the late-offer call"
    );

    let play = work.path().join("tone.wav");
    write_tone_wav(&play, 700.0, 1.0);
    let out = Command::new("python3")
        .arg(repo().join("integration/pjsua/echo_call.py"))
        .args(["--server", &format!("127.0.0.1:{}", p.sip)])
        .args(["--to", "+15550600", "--seconds", "1"])
        .args(["--user", "100", "--password", "demo100"])
        .arg("--play")
        .arg(&play)
        .arg("--record")
        .arg(work.path().join("refused.wav"))
        .output()
        .expect("run pjsua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && stdout.contains("488"),
        "a plain call under `required`: {stdout}"
    );
    assert!(
        server.log_text().contains("media offer refused"),
        "{}",
        server.log_text()
    );
}

/// Attended transfer from a desk phone's Transfer key (REFER with Replaces, RFC 3891):
/// 100 (440 Hz) calls 101 (700 Hz); 101 holds it, calls 102 (1000 Hz), then transfers with
/// PJSUA2's `xferReplaces`. 100 and 102 end up talking (each hears the other's tone at the end
/// of its recording), 101's two calls end, and the records show it: the first call lists the
/// leg to 102, the consultation call ended with cause `transferred`.
#[test]
fn a_desk_phone_transfers_after_consulting_and_the_other_two_talk() {
    if !pjsua_available() {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    for f in [440.0, 700.0, 1000.0] {
        write_tone_wav(&dir.path().join(format!("{f}.wav")), f, 2.0);
    }
    let out = Command::new("python3")
        .arg(repo().join("integration/pjsua/attended_transfer.py"))
        .args(["--server", &format!("127.0.0.1:{}", server.sip_port)])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run pjsua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("OK"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    for (who, want) in [("a", 1000.0), ("c", 440.0)] {
        let heard = read_wav_8k(&dir.path().join(format!("{who}-heard.wav")));
        assert!(
            heard.len() > 16000,
            "{who} recorded {} samples",
            heard.len()
        );
        // The last second, minus the hang-up's edge.
        let tail = &heard[heard.len() - 12000..heard.len() - 4000];
        let f = median_tone(tail);
        assert!(
            (f - want).abs() < 15.0,
            "{who} heard {f} Hz at the end, not {want}\n{}",
            server.log_text()
        );
    }
    let records = call_records(&server, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    let (first, consultation) = (&records[0], &records[1]);
    assert_eq!(first["to"], "101", "{first}");
    assert_eq!(
        first["legs"].as_array().map(Vec::len),
        Some(2),
        "the first call lists 101's leg and 102's: {first}"
    );
    assert_eq!(
        consultation["hangup_cause"], "transferred",
        "{consultation}"
    );
    assert!(server.log_text().contains("attended transfer"));
}
