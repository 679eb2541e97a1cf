//! A bridge between two legs on different workers.
//!
//! Bridged legs normally live on one worker and read each other's frame in the same tick
//! ([`super::engine`]). A call whose parties were set up apart (an attended transfer joins
//! the caller of one call to the called party of another) has its legs on two workers, each
//! ticking on its own 20 ms grid. Each side queues what it heard for the other; the other
//! takes one frame per tick. The queue holds a few frames so that two grids drifting by part
//! of a tick neither starve nor pile up; beyond that the oldest frame is dropped (a 20 ms
//! glitch, never growing delay).

use super::leg::FRAME;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Frames kept per direction.
const MAX_QUEUED: usize = 3;

/// The two directions of one cross-worker bridge; side 0 and side 1 are its legs.
#[derive(Default)]
pub struct CrossLink {
    heard_by: [Mutex<VecDeque<[i16; FRAME]>>; 2],
}

impl CrossLink {
    /// Side `side` heard `frame` this tick: queued for the other side.
    pub fn put(&self, side: usize, frame: &[i16; FRAME]) {
        let Some(q) = self.heard_by.get(side & 1) else {
            return;
        };
        let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_QUEUED {
            q.pop_front();
        }
        q.push_back(*frame);
    }

    /// What side `side` plays this tick: the oldest frame the other side heard, if any.
    pub fn take(&self, side: usize) -> Option<[i16; FRAME]> {
        let q = self.heard_by.get((side & 1) ^ 1)?;
        q.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_gets_the_other_sides_frames_in_order_and_the_queue_stays_short() {
        let link = CrossLink::default();
        for i in 0..5i16 {
            link.put(0, &[i; FRAME]);
        }
        link.put(1, &[9; FRAME]);
        assert_eq!(link.take(0).map(|f| f[0]), Some(9));
        assert_eq!(link.take(0), None);
        let heard: Vec<i16> = std::iter::from_fn(|| link.take(1).map(|f| f[0])).collect();
        assert_eq!(heard, vec![2, 3, 4], "oldest dropped, order kept");
    }
}
