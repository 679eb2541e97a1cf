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
        .output()
        .expect("run pjsua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    // The script measured the frequencies; check them here as well from its recordings.
    let caller_heard = read_wav_8k(&dir.path().join("a-heard.wav"));
    let callee_heard = read_wav_8k(&dir.path().join("b-heard.wav"));
    for (heard, want, who) in [
        (&caller_heard, 1000.0, "caller"),
        (&callee_heard, 440.0, "callee"),
    ] {
        let start = heard
            .iter()
            .position(|s| s.unsigned_abs() > 2000)
            .unwrap_or_else(|| panic!("{who} heard nothing"));
        let window = &heard[start + 400..(start + 400 + 8000).min(heard.len())];
        let f = tone_frequency(window);
        assert!((f - want).abs() < 15.0, "{who} heard {f} Hz, not {want}");
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
