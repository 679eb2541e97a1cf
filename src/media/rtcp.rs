//! RTCP (RFC 3550 §6): the sender/receiver reports we send about every 5 s, reading the
//! peer's reports (round-trip time from LSR/DLSR), and the call-quality estimate (MOS by a
//! simplified ITU-T G.107 E-model) that the call log records.

use super::rtp::{ReceiveStats, RtpSender};

/// NTP timestamp (RFC 3550 §4) from unix time in microseconds.
pub fn ntp_from_unix_micros(us: u64) -> u64 {
    let secs = us / 1_000_000 + 2_208_988_800;
    let frac = ((us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// Middle 32 bits of an NTP timestamp (the LSR/DLSR time base, 1/65536 s).
pub fn ntp_mid(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// What we learned from the peer's last report about our stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerReport {
    /// Fraction of our packets the peer lost (0-1).
    pub fraction_lost: f32,
    /// Cumulative packets the peer lost.
    pub cumulative_lost: u32,
    /// Jitter the peer measured on our stream, in ms.
    pub jitter_ms: f32,
    /// Round-trip time in ms, when the report echoed one of our SRs.
    pub rtt_ms: Option<f32>,
}

/// Builds a compound RTCP packet: SR (when we sent audio) or RR, with a report block about the
/// peer's stream when we have heard it, plus SDES CNAME.
pub fn build_report(
    out: &mut Vec<u8>,
    tx: &RtpSender,
    rx: &mut ReceiveStats,
    ntp: u64,
    rtp_ts: u32,
    last_sr: Option<(u32, u64)>,
    now_ntp: u64,
) {
    out.clear();
    let with_block = rx.ssrc.is_some();
    let rc = u8::from(with_block);
    let sender = tx.packets > 0;
    let pt = if sender { 200 } else { 201 };
    let words = if sender { 6 } else { 1 } + if with_block { 6 } else { 0 };
    out.push(0x80 | rc);
    out.push(pt);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&tx.ssrc.to_be_bytes());
    if sender {
        out.extend_from_slice(&ntp.to_be_bytes());
        out.extend_from_slice(&rtp_ts.to_be_bytes());
        out.extend_from_slice(&(tx.packets as u32).to_be_bytes());
        out.extend_from_slice(&(tx.octets as u32).to_be_bytes());
    }
    if let Some(ssrc) = rx.ssrc {
        out.extend_from_slice(&ssrc.to_be_bytes());
        let fraction = rx.take_fraction_lost();
        let lost = rx.lost().min(0x7f_ffff) as u32;
        out.push(fraction);
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&rx.extended_max().to_be_bytes());
        out.extend_from_slice(&rx.jitter().to_be_bytes());
        let (lsr, dlsr) = match last_sr {
            Some((lsr, received_at)) => {
                let delay = ntp_mid(now_ntp).wrapping_sub(ntp_mid(received_at));
                (lsr, delay)
            }
            None => (0, 0),
        };
        out.extend_from_slice(&lsr.to_be_bytes());
        out.extend_from_slice(&dlsr.to_be_bytes());
    }
    // SDES with a CNAME item (mandatory in every compound packet).
    let cname = format!("switchyard-{:08x}", tx.ssrc);
    let item_len = 2 + cname.len();
    let chunk_len = 4 + item_len + 1; // ssrc + item + end
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&tx.ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname.as_bytes());
    out.resize(out.len() + (padded - chunk_len) + 1, 0);
}

/// What an incoming compound RTCP packet told us.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Incoming {
    /// The peer's SR, as (LSR value to echo, when we got it as NTP).
    pub sender_report: Option<u32>,
    /// The report block about our SSRC.
    pub about_us: Option<PeerReport>,
}

/// Reads a compound RTCP packet; `our_ssrc` selects the report block about our stream.
pub fn parse(b: &[u8], our_ssrc: u32, now_ntp: u64) -> Option<Incoming> {
    let mut off = 0;
    let mut found = Incoming::default();
    let mut any = false;
    while off + 4 <= b.len() {
        if b[off] >> 6 != 2 {
            return None;
        }
        let rc = (b[off] & 0x1f) as usize;
        let pt = b[off + 1];
        let len = (u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize + 1) * 4;
        if off + len > b.len() {
            return None;
        }
        let p = &b[off..off + len];
        let blocks_at = match pt {
            200 if p.len() >= 28 => {
                let ntp = u64::from_be_bytes(p[8..16].try_into().ok()?);
                found.sender_report = Some(ntp_mid(ntp));
                Some(28)
            }
            201 if p.len() >= 8 => Some(8),
            _ => None,
        };
        if let Some(start) = blocks_at {
            any = true;
            for i in 0..rc {
                let o = start + i * 24;
                let Some(blk) = p.get(o..o + 24) else { break };
                if u32::from_be_bytes(blk[0..4].try_into().ok()?) != our_ssrc {
                    continue;
                }
                let lsr = u32::from_be_bytes(blk[16..20].try_into().ok()?);
                let dlsr = u32::from_be_bytes(blk[20..24].try_into().ok()?);
                let rtt_ms = (lsr != 0).then(|| {
                    let rtt = ntp_mid(now_ntp).wrapping_sub(lsr).wrapping_sub(dlsr);
                    rtt as f32 * 1000.0 / 65536.0
                });
                found.about_us = Some(PeerReport {
                    fraction_lost: f32::from(blk[4]) / 256.0,
                    cumulative_lost: u32::from_be_bytes([0, blk[5], blk[6], blk[7]]),
                    jitter_ms: u32::from_be_bytes(blk[12..16].try_into().ok()?) as f32 / 8.0,
                    rtt_ms: rtt_ms.filter(|r| *r < 10_000.0),
                });
            }
        }
        off += len;
    }
    any.then_some(found)
}

/// Estimated MOS (1-4.5) for G.711 from loss (0-1), jitter and round-trip time in ms.
///
/// Simplified E-model (ITU-T G.107): R = 93.2 − Id − Ie,eff with Ie = 0 and Bpl = 25.1 for
/// G.711 with packet-loss concealment (G.113 Appendix I; what phones do); the one-way delay is half the round trip plus the
/// jitter buffer (40 ms) plus twice the jitter.
pub fn mos(loss: f32, jitter_ms: f32, rtt_ms: f32) -> f32 {
    let d = rtt_ms / 2.0 + 40.0 + 2.0 * jitter_ms;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = (loss * 100.0).clamp(0.0, 100.0);
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mos_reference_points() {
        assert!(mos(0.0, 0.0, 0.0) > 4.3);
        assert!((4.0..4.4).contains(&mos(0.01, 5.0, 50.0)));
        assert!(mos(0.05, 20.0, 200.0) < 3.9);
        assert!(mos(0.05, 20.0, 200.0) > mos(0.10, 20.0, 200.0));
        assert!(mos(0.5, 100.0, 1000.0) < 1.5);
    }

    #[test]
    fn report_round_trip_gives_rtt() {
        let mut tx = RtpSender::new();
        tx.packets = 10;
        tx.octets = 1600;
        let mut rx = ReceiveStats::default();
        for i in 0..50u32 {
            if i != 7 {
                rx.record(0x1234, i as u16, i * 160, i * 160, 160);
            }
        }
        // Peer sent us an SR at t0 (its LSR = mid(t0)); we answer 0.5 s later.
        let t0 = ntp_from_unix_micros(1_700_000_000_000_000);
        let t1 = ntp_from_unix_micros(1_700_000_000_500_000);
        let mut out = Vec::new();
        build_report(
            &mut out,
            &tx,
            &mut rx,
            t1,
            5000,
            Some((ntp_mid(t0), t0)),
            t1,
        );
        assert_eq!(out.len() % 4, 0);
        // The peer reads our report block about its SSRC 0x1234 0.6 s after t0: RTT ≈ 100 ms.
        let t2 = ntp_from_unix_micros(1_700_000_000_600_000);
        let got = parse(&out, 0x1234, t2).expect("rtcp");
        let r = got.about_us.expect("block");
        assert_eq!(r.cumulative_lost, 1);
        assert!(
            (r.rtt_ms.expect("rtt") - 100.0).abs() < 1.0,
            "{:?}",
            r.rtt_ms
        );
        assert!(got.sender_report.is_some());
        assert!(parse(&[0x40, 200, 0, 0], 1, t2).is_none());
    }
}
