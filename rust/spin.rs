//! Whether a busy-poll wait is worth its spin, learnt from the last ones.
//!
//! Spinning for an answer (the engine's lane) or for the next request (the sidecar's
//! connections) saves a wake-up when what is awaited comes within the window, and costs
//! the CPU for the whole window when it does not. On a quiet host the answer to a small
//! read often comes within it; on a host with more runnable threads than CPUs it seldom
//! does, and the spinning thread takes the CPU that the other end (or the caller's own
//! next step) needs: measured on the project's 2-core VM at load 5-10, a 4 KiB engine read
//! took 113-175 µs at p50 with both ends spinning for 50 µs and 58-81 µs with neither.
//!
//! A [`SpinGauge`] keeps a score of the recent waits of one place (one connection): +1
//! for a wait answered while spinning, -1 for one that ran past its window. While the
//! score is at [`FLOOR`] the place does not spin, except one wait in [`PROBE_EVERY`],
//! whose outcome can lift the score again. So spinning stays on where it mostly pays, and
//! turns itself off where it mostly does not.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The score at and below which waits do not spin (bar the probes).
pub const FLOOR: i32 = -4;
/// The score never goes above this, so a place that stops paying learns it soon.
pub const CEILING: i32 = 4;
/// While spinning is off, one wait in this many spins anyway, to notice a change.
pub const PROBE_EVERY: u32 = 32;

/// The recent record of one place's spins (see the module docs). Used from one thread at
/// a time; atomics only so that it can sit in a shared connection state.
#[derive(Debug, Default)]
pub struct SpinGauge {
    score: AtomicI32,
    skipped: AtomicU32,
}

impl SpinGauge {
    /// Whether the next wait should spin.
    pub fn should_spin(&self) -> bool {
        if self.score.load(Ordering::Relaxed) > FLOOR {
            return true;
        }
        let skipped = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
        if skipped >= PROBE_EVERY {
            self.skipped.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a wait that spun: `paid` when what it waited for came within the window.
    pub fn record(&self, paid: bool) {
        let score = self.score.load(Ordering::Relaxed);
        let next = if paid { (score + 1).min(CEILING) } else { (score - 1).max(FLOOR) };
        self.score.store(next, Ordering::Relaxed);
    }

    /// The current score, for tests and stats.
    pub fn score(&self) -> i32 {
        self.score.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_while_they_pay_and_mostly_stops_when_they_do_not() {
        let g = SpinGauge::default();
        assert!(g.should_spin(), "a new place spins");
        for _ in 0..10 {
            g.record(true);
        }
        assert_eq!(g.score(), CEILING);
        // From the ceiling it takes CEILING - FLOOR misses in a row to stop.
        for _ in 0..(CEILING - FLOOR - 1) {
            g.record(false);
            assert!(g.should_spin());
        }
        g.record(false);
        assert_eq!(g.score(), FLOOR);
        let spun = (0..PROBE_EVERY * 4).filter(|_| g.should_spin()).count();
        assert_eq!(spun, 4, "only the probes spin while it does not pay");
    }

    #[test]
    fn a_probe_that_pays_turns_spinning_back_on() {
        let g = SpinGauge::default();
        for _ in 0..20 {
            g.record(false);
        }
        assert_eq!(g.score(), FLOOR, "the score stays at the floor");
        while !g.should_spin() {}
        g.record(true);
        assert!(g.should_spin());
        assert!(g.should_spin(), "on until it stops paying again");
    }

    #[test]
    fn half_paying_keeps_spinning() {
        let g = SpinGauge::default();
        for i in 0..100 {
            assert!(g.should_spin());
            g.record(i % 2 == 0);
        }
    }
}
