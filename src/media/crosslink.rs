//! A bridge between two legs on different workers.
//!
//! Bridged legs normally live on one worker and read each other's frame in the same tick
//! ([`super::engine`]). A call whose parties were set up apart (an attended transfer joins
//! the caller of one call to the called party of another) has its legs on two workers, each
//! ticking on its own 20 ms grid. Each side queues what it heard for the other; the other
//! takes one frame per tick. A direction starts playing once two frames are queued (one
//! frame, 20 ms, of slack against a late tick on either worker) and primes again after it ran
//! dry; the queue holds at most four frames, beyond which the oldest is dropped (a 20 ms
//! glitch, never growing delay).

use super::leg::FRAME;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Frames kept per direction.
const MAX_QUEUED: usize = 4;

/// Frames queued before a direction starts (again).
const PRIME: usize = 2;

/// One direction: frames waiting, and whether it is playing or priming.
#[derive(Default)]
struct Direction {
    frames: VecDeque<[i16; FRAME]>,
    playing: bool,
}

/// The two directions of one cross-worker bridge; side 0 and side 1 are its legs.
#[derive(Default)]
pub struct CrossLink {
    heard_by: [Mutex<Direction>; 2],
}

impl CrossLink {
    /// Side `side` heard `frame` this tick: queued for the other side.
    pub fn put(&self, side: usize, frame: &[i16; FRAME]) {
        let Some(q) = self.heard_by.get(side & 1) else {
            return;
        };
        let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
        if q.frames.len() >= MAX_QUEUED {
            q.frames.pop_front();
        }
        q.frames.push_back(*frame);
    }

    /// What side `side` plays this tick: the oldest frame the other side heard; `None` while
    /// the direction primes.
    pub fn take(&self, side: usize) -> Option<[i16; FRAME]> {
        let q = self.heard_by.get((side & 1) ^ 1)?;
        let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
        if !q.playing && q.frames.len() < PRIME {
            return None;
        }
        let f = q.frames.pop_front();
        q.playing = f.is_some();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_gets_the_other_sides_frames_in_order_and_the_queue_stays_short() {
        let link = CrossLink::default();
        for i in 0..6i16 {
            link.put(0, &[i; FRAME]);
        }
        link.put(1, &[9; FRAME]);
        assert_eq!(link.take(0), None, "one frame: still priming");
        link.put(1, &[10; FRAME]);
        assert_eq!(link.take(0).map(|f| f[0]), Some(9));
        assert_eq!(link.take(0).map(|f| f[0]), Some(10));
        assert_eq!(link.take(0), None, "ran dry");
        link.put(1, &[11; FRAME]);
        assert_eq!(link.take(0), None, "priming again");
        let heard: Vec<i16> = std::iter::from_fn(|| link.take(1).map(|f| f[0])).collect();
        assert_eq!(heard, vec![2, 3, 4, 5], "oldest dropped, order kept");
    }
}
