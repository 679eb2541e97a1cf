//! RTP (RFC 3550) packets and the per-stream state of a session: our sequence numbers and
//! timestamps, the peer's statistics (loss, interarrival jitter per RFC 3550 §A.8), and
//! symmetric-RTP latching that a stranger cannot take over (RTP bleed).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A parsed RTP packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload (after CSRCs, extension and before padding).
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram; `None` for anything that is not RTP version 2.
    pub fn parse(b: &'a [u8]) -> Option<RtpPacket<'a>> {
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let cc = (b[0] & 0x0f) as usize;
        let mut off = 12 + cc * 4;
        if b.len() < off {
            return None;
        }
        if b[0] & 0x10 != 0 {
            if b.len() < off + 4 {
                return None;
            }
            let words = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            off += 4 + words * 4;
            if b.len() < off {
                return None;
            }
        }
        let mut end = b.len();
        if b[0] & 0x20 != 0 {
            let pad = b[end - 1] as usize;
            if pad == 0 || pad > end - off {
                return None;
            }
            end -= pad;
        }
        Some(RtpPacket {
            marker: b[1] & 0x80 != 0,
            payload_type: b[1] & 0x7f,
            sequence: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[off..end],
        })
    }
}

/// Writes an RTP header (no CSRC, no extension) followed by `payload` into `out`.
pub fn write_packet(
    out: &mut Vec<u8>,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) {
    out.clear();
    out.push(0x80);
    out.push(if marker { 0x80 | pt } else { pt });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Our sending side of a stream: sequence and timestamp continue across everything we send
/// (prompts, echo, relayed audio, DTMF), so the peer sees one continuous stream.
#[derive(Debug, Clone)]
pub struct RtpSender {
    /// Our SSRC.
    pub ssrc: u32,
    /// Next sequence number.
    pub seq: u16,
    /// Timestamp of the next audio frame.
    pub timestamp: u32,
    /// Packets sent.
    pub packets: u64,
    /// Payload octets sent.
    pub octets: u64,
    /// Set the marker on the next audio packet (start of a talk spurt).
    pub mark_next: bool,
}

impl RtpSender {
    /// A sender with random SSRC, sequence and timestamp origin (RFC 3550 §5.1).
    pub fn new() -> RtpSender {
        RtpSender {
            ssrc: rand::random(),
            seq: rand::random(),
            timestamp: rand::random(),
            packets: 0,
            octets: 0,
            mark_next: true,
        }
    }

    /// Writes the next audio packet of `samples` samples; advances seq and timestamp.
    pub fn audio(&mut self, out: &mut Vec<u8>, pt: u8, payload: &[u8], samples: u32) {
        let marker = std::mem::take(&mut self.mark_next);
        write_packet(
            out,
            marker,
            pt,
            self.seq,
            self.timestamp,
            self.ssrc,
            payload,
        );
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.packets += 1;
        self.octets += payload.len() as u64;
    }

    /// Writes a packet with an explicit timestamp (telephone-events keep the event's start
    /// timestamp across their packets); advances only the sequence number.
    pub fn event(
        &mut self,
        out: &mut Vec<u8>,
        pt: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) {
        write_packet(out, marker, pt, self.seq, timestamp, self.ssrc, payload);
        self.seq = self.seq.wrapping_add(1);
        self.packets += 1;
        self.octets += payload.len() as u64;
    }
}

impl Default for RtpSender {
    fn default() -> Self {
        Self::new()
    }
}

/// Statistics of what the peer sends us (RFC 3550 §6.4.1 and §A.1, §A.3, §A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    /// Peer SSRC.
    pub ssrc: Option<u32>,
    /// Packets received.
    pub packets: u64,
    /// Payload octets received.
    pub octets: u64,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    started: bool,
    /// Interarrival jitter in timestamp units, scaled by 16 as §A.8 computes it.
    jitter_q4: u32,
    last_transit: Option<i64>,
    expected_prior: u64,
    received_prior: u64,
    /// Packets that arrived more than one frame late relative to the grid (for metrics).
    pub late: u64,
}

impl ReceiveStats {
    /// Records a packet with sequence `seq`, RTP timestamp `ts`, arriving at `arrival` (in
    /// timestamp units, i.e. 8 kHz ticks of our clock).
    pub fn record(&mut self, ssrc: u32, seq: u16, ts: u32, arrival: u32, payload_len: usize) {
        if self.ssrc != Some(ssrc) {
            // New source (or the peer restarted its stream): statistics start again.
            *self = ReceiveStats {
                ssrc: Some(ssrc),
                ..Default::default()
            };
        }
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = seq;
            }
        }
        self.packets += 1;
        self.octets += payload_len as u64;
        let transit = i64::from(arrival) - i64::from(ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as u32;
            // J += (|D| - J) / 16, kept in Q4.
            let j = self.jitter_q4 as i64 + d as i64 - ((self.jitter_q4 as i64 + 8) >> 4);
            self.jitter_q4 = j.max(0) as u32;
        }
        self.last_transit = Some(transit);
    }

    /// Highest extended sequence number seen.
    pub fn extended_max(&self) -> u32 {
        self.cycles + u32::from(self.max_seq)
    }

    /// Packets expected so far.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Cumulative packets lost (can be negative with duplicates; clamped at 0).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Fraction lost since the previous call, as the 8-bit value of a report block.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let exp_int = expected - self.expected_prior;
        let rec_int = self.packets - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.packets;
        let lost = exp_int.saturating_sub(rec_int);
        if exp_int == 0 || lost == 0 {
            0
        } else {
            ((lost << 8) / exp_int).min(255) as u8
        }
    }
}

/// Packets in a row (same source, same SSRC, consecutive sequence numbers, negotiated payload
/// type) before a source other than the SDP address is believed.
pub const LATCH_PROBATION: u32 = 4;

/// How long the latched source must have been silent before another source may take over
/// (a phone whose NAT binding changed goes quiet on the old address first; a hijacker racing
/// a live stream never gets a quiet gap).
pub const LATCH_SWITCH_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Sequence numbers further ahead than this break a probation run (a little loss is allowed).
const PROBATION_MAX_GAP: u16 = 3;

/// Symmetric RTP (RFC 4961 practice) without RTP bleed: send to where the peer's packets
/// really come from, and let nobody else become that source.
///
/// A source is believed when it is the SDP address (the peer said so), or after
/// [`LATCH_PROBATION`] packets in a row from one address with one SSRC and consecutive
/// sequence numbers (a phone behind NAT), and then only from the SDP host or the host the
/// peer's signalling came from. The caller feeds only packets of a negotiated payload
/// type, so a port scanner's junk never counts. Once latched, another source takes over only with
/// the same evidence *and* after the current one has been quiet for [`LATCH_SWITCH_QUIET`].
/// Everything else is dropped. A re-INVITE with a new address starts again.
#[derive(Debug, Clone)]
pub struct Latch {
    signalled: SocketAddr,
    signalling_ip: Option<IpAddr>,
    latched: Option<(SocketAddr, Instant)>,
    candidate: Option<Candidate>,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    src: SocketAddr,
    ssrc: u32,
    last_seq: u16,
    run: u32,
}

impl Latch {
    /// Starts with the address from SDP; `signalling_ip` (where the peer's SIP came from), when
    /// known, is the only other host allowed to prove itself.
    pub fn new(signalled: SocketAddr, signalling_ip: Option<IpAddr>) -> Latch {
        Latch {
            signalled,
            signalling_ip,
            latched: None,
            candidate: None,
        }
    }

    /// Where to send now.
    pub fn target(&self) -> SocketAddr {
        self.latched.map(|(a, _)| a).unwrap_or(self.signalled)
    }

    /// The source we believe, once one has proved itself.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched.map(|(a, _)| a)
    }

    /// A packet of a negotiated payload type came from `src`: true to accept it.
    pub fn accept(&mut self, src: SocketAddr, ssrc: u32, seq: u16, now: Instant) -> bool {
        // The SDP address is the peer's own word: it is believed at once, and wins back a
        // stream that some other source had taken.
        if src == self.signalled || self.latched.is_some_and(|(l, _)| l == src) {
            self.latched = Some((src, now));
            self.candidate = None;
            return true;
        }
        let may_learn =
            src.ip() == self.signalled.ip() || self.signalling_ip.is_none_or(|ip| ip == src.ip());
        if !may_learn {
            return false;
        }
        let run = match self.candidate {
            Some(c)
                if c.src == src
                    && c.ssrc == ssrc
                    && seq.wrapping_sub(c.last_seq).wrapping_sub(1) < PROBATION_MAX_GAP =>
            {
                c.run + 1
            }
            _ => 1,
        };
        self.candidate = Some(Candidate {
            src,
            ssrc,
            last_seq: seq,
            run,
        });
        if run < LATCH_PROBATION {
            return false;
        }
        let may_take_over = match self.latched {
            None => true,
            Some((_, last)) => now.saturating_duration_since(last) >= LATCH_SWITCH_QUIET,
        };
        if may_take_over {
            self.latched = Some((src, now));
            self.candidate = None;
        }
        may_take_over
    }

    /// New SDP (re-INVITE): send there and latch again.
    pub fn reset(&mut self, signalled: SocketAddr) {
        self.signalled = signalled;
        self.latched = None;
        self.candidate = None;
    }
}

/// Where RTCP goes and which RTCP is believed: the SDP's RTCP address, or any port on the host
/// the RTP stream latched to (NATs give RTCP its own port). RTCP carries only statistics, so
/// that is evidence enough; a stranger's reports are dropped.
#[derive(Debug, Clone)]
pub struct RtcpLatch {
    signalled: SocketAddr,
    latched: Option<SocketAddr>,
}

impl RtcpLatch {
    /// Starts with the address from SDP.
    pub fn new(signalled: SocketAddr) -> RtcpLatch {
        RtcpLatch {
            signalled,
            latched: None,
        }
    }

    /// Where to send reports now.
    pub fn target(&self) -> SocketAddr {
        self.latched.unwrap_or(self.signalled)
    }

    /// A report came from `src`; `rtp_source` is the RTP latch's believed source.
    pub fn accept(&mut self, src: SocketAddr, rtp_source: Option<SocketAddr>) -> bool {
        let believed = src == self.signalled
            || self.latched == Some(src)
            || rtp_source.is_some_and(|r| r.ip() == src.ip());
        if believed {
            self.latched = Some(src);
        }
        believed
    }

    /// New SDP (re-INVITE).
    pub fn reset(&mut self, signalled: SocketAddr) {
        self.signalled = signalled;
        self.latched = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn latch_believes_the_sdp_address_at_once() {
        let now = Instant::now();
        let mut l = Latch::new(sa("10.0.0.1:4000"), None);
        assert!(l.accept(sa("10.0.0.1:4000"), 9, 100, now));
        assert_eq!(l.latched(), Some(sa("10.0.0.1:4000")));
        // A stranger with a perfect run cannot take a live stream.
        for i in 0..20u16 {
            let t = now + std::time::Duration::from_millis(20 * u64::from(i));
            assert!(l.accept(sa("10.0.0.1:4000"), 9, 101 + i, t));
            assert!(!l.accept(sa("6.6.6.6:1234"), 5, 500 + i, t));
        }
        assert_eq!(l.target(), sa("10.0.0.1:4000"));
    }

    #[test]
    fn latch_learns_a_natted_source_only_from_a_consistent_run() {
        let now = Instant::now();
        let mut l = Latch::new(sa("192.168.1.5:4000"), None);
        // Sprayed packets: one each from many ports, or jumping sequence numbers.
        for i in 0..10u16 {
            assert!(!l.accept(sa(&format!("6.6.6.6:{}", 2000 + i)), 1, i, now));
        }
        for i in 0..10u16 {
            assert!(!l.accept(sa("6.6.6.6:3000"), 1, i * 100, now));
        }
        // Alternating SSRCs never make a run either.
        for i in 0..10u16 {
            assert!(!l.accept(sa("6.6.6.6:3001"), u32::from(i % 2), i, now));
        }
        assert_eq!(l.latched(), None);
        assert_eq!(l.target(), sa("192.168.1.5:4000"));
        // The phone behind NAT: four in a row (one lost on the way is fine).
        let nat = sa("7.7.7.7:31000");
        assert!(!l.accept(nat, 42, 10, now));
        assert!(!l.accept(nat, 42, 11, now));
        assert!(!l.accept(nat, 42, 13, now));
        assert!(l.accept(nat, 42, 14, now));
        assert_eq!(l.target(), nat);
        // The SDP address, once heard, takes the stream back at once.
        assert!(l.accept(sa("192.168.1.5:4000"), 1, 1, now));
        assert_eq!(l.target(), sa("192.168.1.5:4000"));
        // Knowing where the signalling came from, only that host (or the SDP host) may learn.
        let mut l = Latch::new(sa("192.168.1.5:4000"), Some("7.7.7.7".parse().expect("ip")));
        for i in 0..10u16 {
            assert!(!l.accept(sa("6.6.6.6:3000"), 1, i, now));
        }
        let learned: Vec<bool> = (0..4u16).map(|i| l.accept(nat, 42, i, now)).collect();
        assert_eq!(learned, [false, false, false, true]);
    }

    #[test]
    fn latch_moves_only_after_the_old_source_went_quiet() {
        let t0 = Instant::now();
        let mut l = Latch::new(sa("10.0.0.1:4000"), None);
        assert!(l.accept(sa("10.0.0.1:4000"), 9, 1, t0));
        let new = sa("10.0.0.1:5000");
        let soon = t0 + std::time::Duration::from_millis(200);
        for i in 0..8u16 {
            assert!(!l.accept(new, 3, i, soon), "old source still live");
        }
        let later = t0 + LATCH_SWITCH_QUIET + std::time::Duration::from_millis(1);
        // Its run is proven already; the old source's silence is what it waited for.
        assert!(l.accept(new, 3, 8, later));
        assert_eq!(l.target(), new);
        l.reset(sa("10.0.0.9:4000"));
        assert_eq!(l.latched(), None);
        assert_eq!(l.target(), sa("10.0.0.9:4000"));
    }

    #[test]
    fn rtcp_is_believed_from_the_sdp_address_or_the_rtp_host() {
        let mut r = RtcpLatch::new(sa("10.0.0.1:4001"));
        assert!(!r.accept(sa("6.6.6.6:9"), None));
        assert_eq!(r.target(), sa("10.0.0.1:4001"));
        assert!(r.accept(sa("7.7.7.7:31001"), Some(sa("7.7.7.7:31000"))));
        assert_eq!(r.target(), sa("7.7.7.7:31001"));
        assert!(!r.accept(sa("6.6.6.6:9"), Some(sa("7.7.7.7:31000"))));
    }

    #[test]
    fn parse_and_write_round_trip() {
        let mut out = Vec::new();
        write_packet(&mut out, true, 0, 65535, 160, 0xdeadbeef, &[1, 2, 3]);
        let p = RtpPacket::parse(&out).expect("rtp");
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (0, 65535, 160, 0xdeadbeef)
        );
        assert_eq!(p.payload, &[1, 2, 3]);
        assert!(RtpPacket::parse(&out[..11]).is_none());
        let mut padded = out.clone();
        padded[0] |= 0x20;
        padded.extend_from_slice(&[0, 0, 3]);
        assert_eq!(
            RtpPacket::parse(&padded).expect("padded").payload,
            &[1, 2, 3]
        );
        padded[0] = 0x40; // version 1
        assert!(RtpPacket::parse(&padded).is_none());
    }

    #[test]
    fn sender_is_continuous() {
        let mut s = RtpSender::new();
        let (seq0, ts0) = (s.seq, s.timestamp);
        let mut out = Vec::new();
        s.audio(&mut out, 0, &[0; 160], 160);
        assert!(RtpPacket::parse(&out).expect("rtp").marker);
        s.audio(&mut out, 0, &[0; 160], 160);
        let p = RtpPacket::parse(&out).expect("rtp");
        assert!(!p.marker);
        assert_eq!(p.sequence, seq0.wrapping_add(1));
        assert_eq!(p.timestamp, ts0.wrapping_add(160));
    }

    #[test]
    fn loss_and_jitter() {
        let mut r = ReceiveStats::default();
        // 100 packets, every 10th lost, perfectly timed: no jitter.
        for i in 0..100u32 {
            if i % 10 == 5 {
                continue;
            }
            r.record(1, (65500u32 + i) as u16, i * 160, 1000 + i * 160, 160);
        }
        assert_eq!(r.expected(), 100);
        assert_eq!(r.lost(), 10);
        assert_eq!(r.jitter(), 0);
        assert_eq!(r.take_fraction_lost(), 25); // 10% of 256
                                                // Alternating ±80 ticks of transit: jitter converges towards 160.
        let mut r = ReceiveStats::default();
        for i in 0..500u32 {
            let wobble = if i % 2 == 0 { 0 } else { 160 };
            r.record(2, i as u16, i * 160, i * 160 + wobble, 160);
        }
        assert!((150..=160).contains(&r.jitter()), "{}", r.jitter());
    }
}
