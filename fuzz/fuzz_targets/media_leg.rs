//! Fuzzes one media leg with hostile datagrams from several sources (the latch, the jitter
//! buffer, DTMF, RTCP) interleaved with 20 ms ticks: no panic, and nothing is ever sent to a
//! source that did not prove itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard::media::g711::Law;
use switchyard::media::leg::{InbandDtmf, Leg, LegParams, Outgoing, FRAME};

fuzz_target!(|data: &[u8]| {
    let sdp: SocketAddr = "192.0.2.10:4000".parse().expect("addr");
    let params = LegParams {
        law: Law::Ulaw,
        pt: 0,
        dtmf_pt: Some(101),
        remote_rtp: sdp,
        remote_rtcp: "192.0.2.10:4001".parse().expect("addr"),
        rtcp_mux: data.first().is_some_and(|b| b & 1 == 1),
        send: true,
        expect_rx: true,
        rtp_timeout: Duration::from_secs(5),
        inband: InbandDtmf::Always,
        signalling_ip: Some("192.0.2.10".parse().expect("ip")),
        srtp: None,
    };
    let t0 = Instant::now();
    let mut leg = Leg::new(params, t0);
    let mut events = Vec::new();
    let mut out = Outgoing::default();
    let mut frame = [0i16; FRAME];
    // Each record: 1 byte source/kind, 1 byte length, then the datagram.
    let mut rest = data;
    let mut tick = 0u64;
    while rest.len() >= 2 {
        let (head, len) = (rest[0], rest[1] as usize);
        let body = &rest[2..];
        let take = len.min(body.len());
        let (dgram, after) = body.split_at(take);
        rest = after;
        let src: SocketAddr = match head % 4 {
            0 => sdp,
            1 => "192.0.2.10:31000".parse().expect("addr"),
            2 => "203.0.113.66:4000".parse().expect("addr"),
            _ => "203.0.113.66:5000".parse().expect("addr"),
        };
        let now = t0 + Duration::from_millis(20 * tick);
        if head & 0x80 != 0 {
            leg.on_rtcp(src, dgram, now, 1_000_000);
        } else {
            leg.on_rtp(src, dgram, now, &mut events);
        }
        if head & 0x40 != 0 {
            tick += 1;
            leg.pull_frame(&mut events);
            leg.own_frame(&mut frame, &mut events);
            leg.send_frame(&frame, &mut out);
            leg.housekeeping(now, 1_000_000, &mut out, &mut events);
        }
    }
    for (dst, _) in out.rtp.iter().chain(out.rtcp.iter()) {
        assert!(
            dst.ip() != "203.0.113.66".parse::<std::net::IpAddr>().expect("ip"),
            "sent to a stranger: {dst}"
        );
    }
    let _ = leg.quality();
});
