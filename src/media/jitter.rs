//! A small sample-based jitter buffer for incoming audio.
//!
//! Packets are written at their RTP timestamp into a ring of linear samples; the play-out
//! point advances 160 samples (20 ms) per tick, reading whatever arrived and zeroing what it
//! read. Reordered packets land in their place, lost ones leave silence, and any packet size
//! (10, 20, 30 ms) works the same. Everything downstream — recorder, echo, bridge, in-band
//! DTMF — sees exactly one aligned frame per tick, which is what keeps the two channels of a
//! recording in step through loss and reordering.

/// Ring capacity in samples (1.024 s at 8 kHz).
const CAPACITY: usize = 8192;

/// Jitter buffer for one incoming stream.
#[derive(Debug)]
pub struct JitterBuffer {
    ring: Box<[i16]>,
    /// Which ring slots hold audio (per 160-sample frame slot could be coarser; per sample keeps
    /// partial frames of 10 ms packets exact).
    present: Box<[bool]>,
    /// RTP timestamp at the play-out point.
    playout: Option<u32>,
    /// Play-out delay behind the first packet, in samples.
    delay: u32,
    /// Packets that arrived after their play-out time.
    pub late: u64,
    /// Times the buffer re-synchronised to the stream (timestamp jumps, new source).
    pub resyncs: u64,
}

impl JitterBuffer {
    /// A buffer playing `delay_frames` 20 ms frames behind the stream.
    pub fn new(delay_frames: u32) -> JitterBuffer {
        JitterBuffer {
            ring: vec![0; CAPACITY].into_boxed_slice(),
            present: vec![false; CAPACITY].into_boxed_slice(),
            playout: None,
            delay: delay_frames * 160,
            late: 0,
            resyncs: 0,
        }
    }

    /// Inserts decoded samples starting at RTP timestamp `ts`.
    pub fn insert(&mut self, ts: u32, samples: &[i16]) {
        let playout = *self.playout.get_or_insert(ts.wrapping_sub(self.delay));
        let mut offset = ts.wrapping_sub(playout) as i32;
        if offset < 0 {
            if offset > -(CAPACITY as i32) / 2 {
                self.late += 1;
                return;
            }
            offset = -1; // far in the past: a jump, resync below
        }
        if offset < 0 || offset as usize + samples.len() > CAPACITY - 160 {
            // The stream jumped (new talk spurt after a long gap, new SSRC, clock skew):
            // start again from here instead of dropping everything.
            self.resyncs += 1;
            self.ring.iter_mut().for_each(|s| *s = 0);
            self.present.iter_mut().for_each(|p| *p = false);
            let p = ts.wrapping_sub(self.delay);
            self.playout = Some(p);
            offset = self.delay as i32;
        }
        let start = self.playout.unwrap_or(playout).wrapping_add(offset as u32) as usize;
        for (i, &s) in samples.iter().enumerate() {
            let idx = (start + i) % CAPACITY;
            self.ring[idx] = s;
            self.present[idx] = true;
        }
    }

    /// The next 20 ms frame (silence where nothing arrived). Returns how many samples were
    /// real audio, so callers can tell a lost frame from a received one.
    pub fn pop_frame(&mut self, out: &mut [i16; 160]) -> usize {
        let Some(p) = self.playout else {
            out.fill(0);
            return 0;
        };
        let mut real = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let idx = (p as usize + i) % CAPACITY;
            *o = self.ring[idx];
            if self.present[idx] {
                real += 1;
            }
            self.ring[idx] = 0;
            self.present[idx] = false;
        }
        self.playout = Some(p.wrapping_add(160));
        real
    }

    /// Forget the stream (re-INVITE to another source).
    pub fn reset(&mut self) {
        self.playout = None;
        self.ring.iter_mut().for_each(|s| *s = 0);
        self.present.iter_mut().for_each(|p| *p = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Vec<i16> {
        vec![v; 160]
    }

    #[test]
    fn reorders_and_fills_losses_with_silence() {
        let mut jb = JitterBuffer::new(2);
        // Frames 1..=6 with value = index; 3 and 4 swapped, 5 lost.
        for i in [1u32, 2, 4, 3, 6] {
            jb.insert(1000 + i * 160, &frame(i as i16));
        }
        let mut out = [0i16; 160];
        // Two frames of delay first (silence), then 1, 2, 3, 4, lost 5, 6.
        let mut got = Vec::new();
        for _ in 0..8 {
            let real = jb.pop_frame(&mut out);
            got.push((out[0], real));
        }
        assert_eq!(
            got,
            vec![
                (0, 0),
                (0, 0),
                (1, 160),
                (2, 160),
                (3, 160),
                (4, 160),
                (0, 0),
                (6, 160)
            ]
        );
    }

    #[test]
    fn late_packets_are_dropped_and_jumps_resync() {
        let mut jb = JitterBuffer::new(1);
        let mut out = [0i16; 160];
        jb.insert(0, &frame(1));
        for _ in 0..4 {
            jb.pop_frame(&mut out);
        }
        jb.insert(160, &frame(2)); // already played out
        assert_eq!(jb.late, 1);
        jb.insert(5_000_000, &frame(3)); // jump
        assert_eq!(jb.resyncs, 1);
        jb.pop_frame(&mut out);
        assert_eq!(jb.pop_frame(&mut out), 160);
        assert_eq!(out[0], 3);
    }

    #[test]
    fn ten_ms_packets_fill_whole_frames() {
        let mut jb = JitterBuffer::new(1);
        for i in 0..4u32 {
            jb.insert(i * 80, &[7; 80]);
        }
        let mut out = [0i16; 160];
        jb.pop_frame(&mut out);
        assert_eq!(jb.pop_frame(&mut out), 160);
        assert_eq!(jb.pop_frame(&mut out), 160);
    }
}
