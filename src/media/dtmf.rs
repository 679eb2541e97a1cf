//! DTMF in the two forms carried by RTP: RFC 4733 telephone-events and in-band tones.
//!
//! Both feed one digit stream per leg (SIP INFO digits join it in the call layer). Each
//! detector reports a key press once: RFC 4733 end packets are sent three times and long presses
//! span many packets, all with the same event timestamp, so the timestamp identifies a press;
//! in-band tones must last two analysis blocks (≈ 50 ms) and are reported once until they stop.

/// The 16 DTMF events (RFC 4733 §3.2: 0-9, *, #, A-D).
pub const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 are DTMF).
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Volume in -dBm0.
    pub volume: u8,
    /// Duration in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the 4-byte payload (extra bytes from redundancy are ignored).
    pub fn parse(p: &[u8]) -> Option<TelephoneEvent> {
        if p.len() < 4 {
            return None;
        }
        Some(TelephoneEvent {
            event: p[0],
            end: p[1] & 0x80 != 0,
            volume: p[1] & 0x3f,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    /// The payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// The digit, when the event is DTMF.
    pub fn digit(self) -> Option<char> {
        DIGITS.get(self.event as usize).map(|&b| b as char)
    }
}

/// Turns telephone-event packets into key presses, once each.
#[derive(Debug, Default)]
pub struct EventDeduplicator {
    last: Option<(u32, u8)>,
}

impl EventDeduplicator {
    /// A telephone-event packet with RTP timestamp `ts`: the digit if this is a new press.
    pub fn on_packet(&mut self, ts: u32, ev: TelephoneEvent) -> Option<char> {
        let digit = ev.digit()?;
        if self.last == Some((ts, ev.event)) {
            return None;
        }
        self.last = Some((ts, ev.event));
        Some(digit)
    }
}

/// Index of a digit in [`DIGITS`].
pub fn digit_code(d: char) -> Option<u8> {
    DIGITS
        .iter()
        .position(|&b| b as char == d.to_ascii_uppercase())
        .map(|i| i as u8)
}

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[u8; 4]; 4] = [*b"123A", *b"456B", *b"789C", *b"*0#D"];
/// Goertzel block: 205 samples at 8 kHz (25.6 ms) gives ~39 Hz bins, the classic choice.
const BLOCK: usize = 205;

/// In-band DTMF detector (Goertzel).
///
/// Checks, per block: enough energy; the strongest row and column tones each stand out from
/// the other tones of their group; twist (row/column power ratio) within 8 dB forward and
/// 4 dB reverse; and the two tones carry most of the block's energy — which is what keeps
/// speech, music and our own prompts from producing digits.
#[derive(Debug)]
pub struct ToneDetector {
    coeffs: [f32; 8],
    buf: Vec<f32>,
    candidate: Option<u8>,
    candidate_blocks: u32,
    reported: Option<u8>,
    quiet_blocks: u32,
}

impl Default for ToneDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneDetector {
    /// A detector for 8 kHz audio.
    pub fn new() -> ToneDetector {
        let mut coeffs = [0f32; 8];
        for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            let k = (BLOCK as f32 * f / 8000.0).round();
            coeffs[i] = 2.0 * (2.0 * std::f32::consts::PI * k / BLOCK as f32).cos();
        }
        ToneDetector {
            coeffs,
            buf: Vec::with_capacity(BLOCK),
            candidate: None,
            candidate_blocks: 0,
            reported: None,
            quiet_blocks: 0,
        }
    }

    /// Feeds samples; returns digits detected (usually none, at most one per block).
    pub fn feed(&mut self, samples: &[i16], out: &mut Vec<char>) {
        for &s in samples {
            self.buf.push(f32::from(s));
            if self.buf.len() == BLOCK {
                let d = self.analyse();
                self.buf.clear();
                if let Some(d) = self.debounce(d) {
                    out.push(d as char);
                }
            }
        }
    }

    fn analyse(&self) -> Option<u8> {
        let energy: f32 = self.buf.iter().map(|x| x * x).sum();
        // About -36 dBm0 per tone: below that it is line noise.
        if energy < BLOCK as f32 * 60.0 * 60.0 {
            return None;
        }
        let mut p = [0f32; 8];
        for (i, c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0f32, 0f32);
            for &x in &self.buf {
                let s0 = x + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            p[i] = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let best = |g: &[f32]| {
            let (i, &m) = g
                .iter()
                .enumerate()
                .fold((0, &0f32), |a, b| if b.1 > a.1 { b } else { a });
            let second = g
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, &v)| v)
                .fold(0f32, f32::max);
            (i, m, second)
        };
        let (r, rp, r2) = best(&p[..4]);
        let (c, cp, c2) = best(&p[4..]);
        // Each tone at least 8 dB above the others of its group.
        if rp < r2 * 6.3 || cp < c2 * 6.3 {
            return None;
        }
        // Twist: column may be up to 8 dB weaker (forward) or 4 dB stronger (reverse) than row.
        if cp < rp / 6.3 || cp > rp * 2.5 {
            return None;
        }
        // The pair carries most of the energy: |X|² of a tone ≈ energy·N/2 of that tone.
        let tone_fraction = (rp + cp) / (energy * BLOCK as f32 / 2.0);
        if tone_fraction < 0.55 {
            return None;
        }
        Some(KEYPAD[r][c])
    }

    fn debounce(&mut self, d: Option<u8>) -> Option<u8> {
        match d {
            Some(d) => {
                self.quiet_blocks = 0;
                if self.candidate == Some(d) {
                    self.candidate_blocks += 1;
                } else {
                    self.candidate = Some(d);
                    self.candidate_blocks = 1;
                }
                if self.candidate_blocks >= 2 && self.reported != Some(d) {
                    self.reported = Some(d);
                    return Some(d);
                }
                None
            }
            None => {
                self.quiet_blocks += 1;
                self.candidate = None;
                self.candidate_blocks = 0;
                // A pause of one block ends a press, so "1 1" is two digits.
                if self.quiet_blocks >= 1 {
                    self.reported = None;
                }
                None
            }
        }
    }
}

/// Generates the dual tone of `digit` (for tests and in-band sending), `ms` long at `amp`.
pub fn tone(digit: char, ms: u32, amp: f32) -> Vec<i16> {
    let code = digit_code(digit).unwrap_or(0) as usize;
    let (r, c) = KEYPAD
        .iter()
        .enumerate()
        .find_map(|(ri, row)| {
            row.iter()
                .position(|&k| k == DIGITS[code])
                .map(|ci| (ri, ci))
        })
        .unwrap_or((3, 1));
    let n = (8 * ms) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let v = amp
                * ((2.0 * std::f32::consts::PI * ROWS[r] * t).sin()
                    + (2.0 * std::f32::consts::PI * COLS[c] * t).sin());
            v as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, amp: f32, seed: &mut u64) -> Vec<i16> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed % 2001) as f32 / 1000.0 - 1.0) * amp
            })
            .map(|v| v as i16)
            .collect()
    }

    #[test]
    fn rfc4733_payload_and_dedup() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Some(ev));
        assert_eq!(ev.digit(), Some('#'));
        let mut d = EventDeduplicator::default();
        let start = TelephoneEvent {
            end: false,
            duration: 160,
            ..ev
        };
        assert_eq!(d.on_packet(1000, start), Some('#'));
        // Long press and the three end packets: same timestamp, no new digit.
        for _ in 0..10 {
            assert_eq!(d.on_packet(1000, start), None);
        }
        for _ in 0..3 {
            assert_eq!(d.on_packet(1000, ev), None);
        }
        // Same key again is a new event with a new timestamp.
        assert_eq!(d.on_packet(3000, start), Some('#'));
        assert_eq!(TelephoneEvent::parse(&[1, 2]), None);
        assert_eq!(TelephoneEvent { event: 40, ..ev }.digit(), None);
    }

    #[test]
    fn detects_every_key_in_noise() {
        let mut seed = 99;
        for &k in DIGITS.iter() {
            let mut det = ToneDetector::new();
            let mut sig = noise(800, 300.0, &mut seed);
            let t = tone(k as char, 80, 4000.0);
            let n = noise(t.len(), 400.0, &mut seed);
            sig.extend(t.iter().zip(n.iter()).map(|(a, b)| a.saturating_add(*b)));
            sig.extend(noise(800, 300.0, &mut seed));
            let mut out = Vec::new();
            for chunk in sig.chunks(160) {
                det.feed(chunk, &mut out);
            }
            assert_eq!(out, vec![k as char], "key {}", k as char);
        }
    }

    #[test]
    fn a_long_press_is_one_digit_and_a_pause_separates_presses() {
        let mut det = ToneDetector::new();
        let mut sig = tone('5', 600, 5000.0);
        sig.extend(vec![0i16; 400]);
        sig.extend(tone('5', 100, 5000.0));
        let mut out = Vec::new();
        det.feed(&sig, &mut out);
        assert_eq!(out, vec!['5', '5']);
    }

    #[test]
    fn speech_like_audio_and_single_tones_give_no_digits() {
        let mut det = ToneDetector::new();
        let mut out = Vec::new();
        // A vowel-like harmonic series with a moving pitch (the shape of speech) …
        let mut sig = Vec::new();
        for i in 0..40000 {
            let t = i as f32 / 8000.0;
            let f0 = 110.0 + 30.0 * (t * 3.0).sin();
            let mut v = 0.0;
            for h in 1..20 {
                v += (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() * 3000.0 / h as f32;
            }
            sig.push(v as i16);
        }
        // … a single 941 Hz tone, and loud noise.
        sig.extend((0..8000).map(|i| {
            ((i as f32 * 2.0 * std::f32::consts::PI * 941.0 / 8000.0).sin() * 8000.0) as i16
        }));
        let mut seed = 7;
        sig.extend(noise(16000, 12000.0, &mut seed));
        det.feed(&sig, &mut out);
        assert!(out.is_empty(), "false digits {out:?}");
    }
}
