//! G.711 µ-law and A-law (ITU-T G.711), table-based.
//!
//! Encoding uses 16-bit → 8-bit lookup tables built once (64 KiB each), decoding 256-entry
//! tables: one memory read per sample either way, which is what lets a worker transcode
//! thousands of streams. The tables are computed from the reference algorithm (the Sun
//! `g711.c` formulation) and checked exhaustively against it in the tests.

use std::sync::OnceLock;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Reference µ-law encoder (one sample).
fn ulaw_encode_ref(pcm: i16) -> u8 {
    let mut v = i32::from(pcm);
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    if v > CLIP {
        v = CLIP;
    }
    v += BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && v & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (v >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Reference µ-law decoder.
fn ulaw_decode_ref(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let mut v = ((i32::from(mantissa) << 3) + BIAS) << exponent;
    v -= BIAS;
    (if sign != 0 { -v } else { v }) as i16
}

/// Reference A-law encoder.
fn alaw_encode_ref(pcm: i16) -> u8 {
    let mut v = i32::from(pcm);
    let mask = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let seg_end = [0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff, 0x3fff, 0x7fff];
    let v = v >> 3; // 13-bit magnitude
    let seg = seg_end.iter().position(|&e| v <= e >> 3).unwrap_or(8);
    let aval = if seg >= 8 {
        0x7f
    } else {
        let shift = if seg < 2 { 1 } else { seg };
        ((seg as i32) << 4) | ((v >> shift) & 0x0f)
    };
    (aval as u8) ^ mask
}

/// Reference A-law decoder.
fn alaw_decode_ref(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = (i32::from(a) & 0x0f) << 4;
    let seg = (i32::from(a) & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

struct Tables {
    ulaw_enc: Vec<u8>,
    alaw_enc: Vec<u8>,
    ulaw_dec: [i16; 256],
    alaw_dec: [i16; 256],
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut ulaw_enc = vec![0u8; 65536];
        let mut alaw_enc = vec![0u8; 65536];
        for i in 0..65536usize {
            let s = (i as u16) as i16;
            ulaw_enc[i] = ulaw_encode_ref(s);
            alaw_enc[i] = alaw_encode_ref(s);
        }
        let mut ulaw_dec = [0i16; 256];
        let mut alaw_dec = [0i16; 256];
        for i in 0..256 {
            ulaw_dec[i] = ulaw_decode_ref(i as u8);
            alaw_dec[i] = alaw_decode_ref(i as u8);
        }
        Tables {
            ulaw_enc,
            alaw_enc,
            ulaw_dec,
            alaw_dec,
        }
    })
}

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (PCMU, payload type 0).
    Ulaw,
    /// A-law (PCMA, payload type 8).
    Alaw,
}

impl Law {
    /// Encodes linear samples, appending to `out`.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        let t = tables();
        let table = match self {
            Law::Ulaw => &t.ulaw_enc,
            Law::Alaw => &t.alaw_enc,
        };
        out.extend(pcm.iter().map(|&s| table[s as u16 as usize]));
    }

    /// Decodes to linear samples, appending to `out`.
    pub fn decode(self, data: &[u8], out: &mut Vec<i16>) {
        let t = tables();
        let table = match self {
            Law::Ulaw => &t.ulaw_dec,
            Law::Alaw => &t.alaw_dec,
        };
        out.extend(data.iter().map(|&b| table[b as usize]));
    }

    /// One sample.
    pub fn decode_one(self, b: u8) -> i16 {
        let t = tables();
        match self {
            Law::Ulaw => t.ulaw_dec[b as usize],
            Law::Alaw => t.alaw_dec[b as usize],
        }
    }

    /// The byte for digital silence.
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xff,
            Law::Alaw => 0xd5,
        }
    }

    /// Re-encodes a payload from one law to the other (transcoding between bridged legs).
    pub fn transcode(from: Law, to: Law, data: &[u8], out: &mut Vec<u8>) {
        if from == to {
            out.extend_from_slice(data);
            return;
        }
        let t = tables();
        let (dec, enc) = match from {
            Law::Ulaw => (&t.ulaw_dec, &t.alaw_enc),
            Law::Alaw => (&t.alaw_dec, &t.ulaw_enc),
        };
        out.extend(data.iter().map(|&b| enc[dec[b as usize] as u16 as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Classic reference points of the Sun g711.c tables.
        assert_eq!(ulaw_encode_ref(0), 0xff);
        assert_eq!(ulaw_encode_ref(-1), 0x7f);
        assert_eq!(ulaw_encode_ref(32767), 0x80);
        assert_eq!(ulaw_encode_ref(-32768), 0x00);
        assert_eq!(ulaw_decode_ref(0x00), -32124);
        assert_eq!(ulaw_decode_ref(0x80), 32124);
        assert_eq!(ulaw_decode_ref(0xff), 0);
        assert_eq!(alaw_encode_ref(0), 0xd5);
        assert_eq!(alaw_encode_ref(-1), 0x55);
        assert_eq!(alaw_decode_ref(0xd5), 8);
        assert_eq!(alaw_decode_ref(0x55), -8);
        assert_eq!(alaw_decode_ref(0xaa), 32256);
        assert_eq!(alaw_decode_ref(0x2a), -32256);
    }

    #[test]
    fn every_code_round_trips_through_linear() {
        for law in [Law::Ulaw, Law::Alaw] {
            for b in 0..=255u8 {
                let lin = law.decode_one(b);
                let mut out = Vec::new();
                law.encode(&[lin], &mut out);
                // µ-law has two zeros (0x7f and 0xff); both decode to 0 and encode to 0xff.
                if law == Law::Ulaw && b == 0x7f {
                    assert_eq!(out[0], 0xff);
                } else {
                    assert_eq!(out[0], b, "{law:?} code {b:#x}");
                }
            }
        }
    }

    #[test]
    fn encoding_error_is_bounded_and_monotonic() {
        for law in [Law::Ulaw, Law::Alaw] {
            let mut prev = i32::MIN;
            for s in (-32768i32..=32767).step_by(7) {
                let mut e = Vec::new();
                law.encode(&[s as i16], &mut e);
                let d = i32::from(law.decode_one(e[0]));
                // Companding error grows with amplitude: at most 1/16 of the value plus a step.
                assert!((d - s).abs() <= s.abs() / 16 + 140, "{law:?} {s} -> {d}");
                assert!(d >= prev, "{law:?} not monotonic at {s}");
                prev = d;
            }
        }
    }

    #[test]
    fn transcoding_keeps_the_signal() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 12000.0) as i16)
            .collect();
        let mut u = Vec::new();
        Law::Ulaw.encode(&pcm, &mut u);
        let mut a = Vec::new();
        Law::transcode(Law::Ulaw, Law::Alaw, &u, &mut a);
        let mut back = Vec::new();
        Law::Alaw.decode(&a, &mut back);
        for (x, y) in pcm.iter().zip(back.iter()) {
            assert!((i32::from(*x) - i32::from(*y)).abs() < 1200);
        }
    }
}
