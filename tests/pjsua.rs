//! A second real peer: PJSUA2 (pjsip's own user agent, from PyPI) calls the echo test, plays a
//! tone and records what it hears; the recording must hold the tone.

mod common;

use common::*;
use std::process::Command;

fn pjsua_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pjsua2"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("SWITCHYARD_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("pjsua2 is required (SWITCHYARD_REQUIRE_PEERS=1): pip install -r integration/pjsua/requirements.txt");
        }
        eprintln!("SKIP: pjsua2 not installed (pip install -r integration/pjsua/requirements.txt)");
    }
    ok
}

fn read_wav_8k(path: &std::path::Path) -> Vec<i16> {
    let b = std::fs::read(path).expect("recording");
    // Find the data chunk.
    let mut off = 12;
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]) as usize;
        if &b[off..off + 4] == b"data" {
            let end = (off + 8 + len).min(b.len());
            return b[off + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        off += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

#[test]
fn pjsua2_hears_itself_on_the_echo_test() {
    if !pjsua_available() {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let tone: Vec<i16> = (0..24000)
        .map(|i| ((2.0 * std::f32::consts::PI * 700.0 * i as f32 / 8000.0).sin() * 9000.0) as i16)
        .collect();
    let play = dir.path().join("tone.wav");
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
    std::fs::write(&play, wav).expect("write");
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
