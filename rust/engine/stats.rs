//! Engine counters: atomics on the hot path, one small map for failure reasons.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::types::{EngineStats, Failure};

/// Counters shared by every batch and connection of an engine (they survive a fork).
#[derive(Debug, Default)]
pub(super) struct Stats {
    batches: AtomicU64,
    lane_batches: AtomicU64,
    polled_batches: AtomicU64,
    reads: AtomicU64,
    bytes: AtomicU64,
    verbs_bytes: AtomicU64,
    whole_reads: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    marked_down: AtomicU64,
    aborted: AtomicU64,
    reaped: AtomicU64,
    evicted: AtomicU64,
    pinned_evicted: AtomicU64,
    over_cap: AtomicU64,
    slot_waits: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub(super) fn batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lane_batch(&self) {
        self.lane_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// A lane batch driven by an event loop (`polled.rs`); also counted as a lane batch.
    pub(super) fn polled_batch(&self) {
        self.polled_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn delivered(&self, bytes: u64, whole: bool) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if whole {
            self.whole_reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes delivered over verbs (also counted in `bytes` by the batch that gets them).
    pub(super) fn verbs_delivered(&self, bytes: u64) {
        self.verbs_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, failure: &Failure) {
        // A counter map cannot be left inconsistent by a panic elsewhere, so a poisoned
        // lock is still fine to use.
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(failure.reason()).or_default() += 1;
    }

    pub(super) fn connected(&self, replaced_broken: bool) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        if replaced_broken {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn marked_down(&self) {
        self.marked_down.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn aborted(&self, conns: usize) {
        self.aborted.fetch_add(conns as u64, Ordering::Relaxed);
    }

    /// Idle connections closed by the reaper.
    pub(super) fn reaped(&self, conns: usize) {
        self.reaped.fetch_add(conns as u64, Ordering::Relaxed);
    }

    /// An idle connection closed to stay within `max_conns`.
    pub(super) fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle verbs connection closed to give its slice of a full pinned budget to a new
    /// one.
    pub(super) fn pinned_evicted(&self) {
        self.pinned_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection made past `max_conns`, none being idle.
    pub(super) fn over_cap(&self) {
        self.over_cap.fetch_add(1, Ordering::Relaxed);
    }

    /// A verbs READ found every receive slot of its connection held and waited for one.
    pub(super) fn slot_wait(&self) {
        self.slot_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, with what the caller knows of the process now: sidecars, open
    /// connections and the pinned budget's `(registered, budget, pools registered)`.
    pub(super) fn snapshot(
        &self,
        sidecars: usize,
        open_conns: usize,
        pinned: (u64, u64, u64),
    ) -> EngineStats {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = self.bytes.load(Ordering::Relaxed);
        // Read apart, so a delivery between the loads could make verbs look larger.
        let verbs = self.verbs_bytes.load(Ordering::Relaxed).min(bytes);
        let by_transport = [("tcp".to_owned(), bytes - verbs), ("verbs".to_owned(), verbs)];
        EngineStats {
            batches: self.batches.load(Ordering::Relaxed),
            lane_batches: self.lane_batches.load(Ordering::Relaxed),
            polled_batches: self.polled_batches.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            bytes,
            bytes_by_transport: by_transport.into_iter().collect(),
            whole_reads: self.whole_reads.load(Ordering::Relaxed),
            failures_by_reason: failures.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            connects: self.connects.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            marked_down: self.marked_down.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            sidecars,
            open_conns,
            reaped: self.reaped.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            pinned_evicted: self.pinned_evicted.load(Ordering::Relaxed),
            over_cap: self.over_cap.load(Ordering::Relaxed),
            slot_waits: self.slot_waits.load(Ordering::Relaxed),
            pinned_bytes: pinned.0,
            pinned_budget: pinned.1,
            pinned_leases: pinned.2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_waits_are_counted_and_reported() {
        let stats = Stats::default();
        assert_eq!(stats.snapshot(0, 0, (0, 0, 0)).slot_waits, 0);
        stats.slot_wait();
        stats.slot_wait();
        let snap = stats.snapshot(1, 1, (0, 0, 0));
        assert_eq!(snap.slot_waits, 2);
        assert_eq!(snap.reads, 0, "a wait is not a read");
    }
}
