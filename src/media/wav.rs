//! Reading WAV prompts into 8 kHz linear audio (done once per prompt, at load).
//!
//! Accepted: PCM 8/16/24/32-bit, IEEE float, µ-law and A-law (format tags 7 and 6, which the
//! common WAV crates do not read), mono or stereo (mixed down), any sample rate (resampled with a
//! windowed-sinc low-pass at 3.6 kHz, then linear interpolation onto the 8 kHz grid — prompts
//! are converted once, so quality wins over speed here).

use super::g711::Law;

/// Why a file is not a usable prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not a RIFF/WAVE file.
    #[error("not a WAV file")]
    NotWav,
    /// A chunk is cut short.
    #[error("truncated WAV file")]
    Truncated,
    /// Format chunk missing or unsupported.
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
}

/// Audio decoded from a WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Mono samples at `rate`.
    pub samples: Vec<i16>,
    /// Sample rate of `samples`.
    pub rate: u32,
}

fn u16le(b: &[u8], o: usize) -> Result<u16, WavError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(WavError::Truncated)
}

fn u32le(b: &[u8], o: usize) -> Result<u32, WavError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(WavError::Truncated)
}

/// Decodes a WAV file to mono linear samples at its own rate.
pub fn decode(bytes: &[u8]) -> Result<Decoded, WavError> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut off = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    while off + 8 <= bytes.len() {
        let id = &bytes[off..off + 4];
        let len = u32le(bytes, off + 4)? as usize;
        let body_start = off + 8;
        // A recording cut off mid-write may claim more data than the file holds: take what is there.
        let body_end = (body_start + len).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => {
                let mut tag = u16le(body, 0)?;
                let channels = u16le(body, 2)?;
                let rate = u32le(body, 4)?;
                let bits = u16le(body, 14)?;
                if tag == 0xfffe {
                    tag = u16le(body, 24)?; // WAVE_FORMAT_EXTENSIBLE: sub-format GUID starts with the tag
                }
                fmt = Some((tag, channels, rate, bits));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        off = body_start + len + (len & 1);
    }
    let (tag, channels, rate, bits) =
        fmt.ok_or_else(|| WavError::Unsupported("no fmt chunk".into()))?;
    let data = data.ok_or_else(|| WavError::Unsupported("no data chunk".into()))?;
    if channels == 0 || channels > 2 {
        return Err(WavError::Unsupported(format!("{channels} channels")));
    }
    if !(4000..=192_000).contains(&rate) {
        return Err(WavError::Unsupported(format!("sample rate {rate}")));
    }
    let frame_samples: Vec<i16> = match (tag, bits) {
        (1, 8) => data.iter().map(|&b| (i16::from(b) - 128) << 8).collect(),
        (1, 16) => data
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        (1, 24) => data
            .chunks_exact(3)
            .map(|c| i16::from_le_bytes([c[1], c[2]]))
            .collect(),
        (1, 32) => data
            .chunks_exact(4)
            .map(|c| i16::from_le_bytes([c[2], c[3]]))
            .collect(),
        (3, 32) => data
            .chunks_exact(4)
            .map(|c| {
                (f32::from_le_bytes([c[0], c[1], c[2], c[3]]).clamp(-1.0, 1.0) * 32767.0) as i16
            })
            .collect(),
        (7, 8) => {
            let mut v = Vec::with_capacity(data.len());
            Law::Ulaw.decode(data, &mut v);
            v
        }
        (6, 8) => {
            let mut v = Vec::with_capacity(data.len());
            Law::Alaw.decode(data, &mut v);
            v
        }
        (t, b) => {
            return Err(WavError::Unsupported(format!(
                "format tag {t} with {b} bits"
            )))
        }
    };
    let samples = if channels == 2 {
        frame_samples
            .chunks_exact(2)
            .map(|c| ((i32::from(c[0]) + i32::from(c[1])) / 2) as i16)
            .collect()
    } else {
        frame_samples
    };
    Ok(Decoded { samples, rate })
}

/// Resamples to 8 kHz.
pub fn to_8k(d: &Decoded) -> Vec<i16> {
    if d.rate == 8000 {
        return d.samples.clone();
    }
    let src: Vec<f32> = if d.rate > 8000 {
        lowpass(&d.samples, 3600.0 / d.rate as f32)
    } else {
        d.samples.iter().map(|&s| f32::from(s)).collect()
    };
    let ratio = d.rate as f64 / 8000.0;
    let n = ((src.len() as f64) / ratio).floor() as usize;
    (0..n)
        .map(|i| {
            let pos = i as f64 * ratio;
            let k = pos.floor() as usize;
            let frac = (pos - k as f64) as f32;
            let a = src.get(k).copied().unwrap_or(0.0);
            let b = src.get(k + 1).copied().unwrap_or(a);
            (a + (b - a) * frac).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Windowed-sinc (Blackman) low-pass with normalised cutoff `fc` (cycles per sample).
fn lowpass(x: &[i16], fc: f32) -> Vec<f32> {
    const TAPS: usize = 101;
    let m = (TAPS - 1) as f32;
    let mut h: Vec<f32> = (0..TAPS)
        .map(|i| {
            let n = i as f32 - m / 2.0;
            let sinc = if n == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f32::consts::PI * fc * n).sin() / (std::f32::consts::PI * n)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / m).cos()
                + 0.08 * (4.0 * std::f32::consts::PI * i as f32 / m).cos();
            sinc * w
        })
        .collect();
    let sum: f32 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= sum);
    let half = TAPS / 2;
    (0..x.len())
        .map(|i| {
            let mut acc = 0f32;
            for (j, &hj) in h.iter().enumerate() {
                let idx = i as isize + j as isize - half as isize;
                if idx >= 0 && (idx as usize) < x.len() {
                    acc += hj * f32::from(x[idx as usize]);
                }
            }
            acc
        })
        .collect()
}

/// Writes 16-bit PCM WAV bytes (for tests and prompt conversion).
pub fn encode_pcm16(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    b.extend_from_slice(&(2 * channels).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Frequency of the strongest sinusoid, by zero crossings (good enough for pure tones).
    pub(crate) fn zero_crossing_freq(s: &[i16], rate: u32) -> f32 {
        let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f32 * rate as f32 / (2.0 * s.len() as f32)
    }

    fn sine(f: f32, rate: u32, secs: f32, amp: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| ((2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin() * amp) as i16)
            .collect()
    }

    #[test]
    fn resampling_keeps_frequency_and_length() {
        for rate in [16000, 44100, 48000] {
            let wav = encode_pcm16(&sine(1000.0, rate, 1.0, 10000.0), rate, 1);
            let d = decode(&wav).expect("wav");
            let s = to_8k(&d);
            assert!((s.len() as i32 - 8000).abs() <= 2, "{rate}: {}", s.len());
            let f = zero_crossing_freq(&s[200..7800], 8000);
            assert!((f - 1000.0).abs() < 10.0, "{rate}: {f}");
        }
    }

    #[test]
    fn aliasing_is_filtered() {
        // 6 kHz at 48 kHz would alias to 2 kHz without the low-pass.
        let wav = encode_pcm16(&sine(6000.0, 48000, 0.5, 10000.0), 48000, 1);
        let s = to_8k(&decode(&wav).expect("wav"));
        let peak = s[200..3800]
            .iter()
            .map(|v| v.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(peak < 300, "aliased energy {peak}");
    }

    #[test]
    fn stereo_ulaw_and_truncated_files() {
        let stereo: Vec<i16> = sine(500.0, 8000, 0.1, 8000.0)
            .iter()
            .flat_map(|&s| [s, s])
            .collect();
        let d = decode(&encode_pcm16(&stereo, 8000, 2)).expect("stereo");
        assert_eq!(d.samples.len(), 800);
        let mut ulaw = encode_pcm16(&[], 8000, 1);
        ulaw[20] = 7;
        ulaw[34] = 8;
        ulaw.extend_from_slice(&[0xff; 100]);
        ulaw[40..44].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(decode(&ulaw).expect("ulaw").samples, vec![0; 100]);
        // Header claims 1000 bytes of data but the file was cut: still readable.
        let mut cut = encode_pcm16(&sine(500.0, 8000, 0.1, 8000.0), 8000, 1);
        cut[40..44].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(decode(&cut).expect("cut").samples.len(), 800);
        assert_eq!(decode(b"RIFX....WAVE"), Err(WavError::NotWav));
    }
}
