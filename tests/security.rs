//! Attacks on the wire, as issue "safe to put on the internet" lists them: each test plays the
//! attacker against the real binary with raw sockets, SIPp or HTTP, and checks that the attack
//! fails while the legitimate peer keeps working.

mod common;

use common::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sine(freq: f32, secs: f32, amp: f32) -> Vec<i16> {
    (0..(8000.0 * secs) as usize)
        .map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0).sin() * amp) as i16)
        .collect()
}

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
        Some(&sine(1000.0, 3.0, 8000.0)),
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
