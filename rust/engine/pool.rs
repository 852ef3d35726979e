//! One sidecar: its connection slots and its health (up, or down until a back-off ends).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::stats::Stats;
use super::types::{EngineConfig, Failure, SidecarHealth};
use crate::proto::Status;

/// Consecutive light failures (BUSY, INTERNAL, a dropped connection) that count as one
/// real failure: one such answer says little, a run of them says the sidecar is unwell.
const LIGHT_STRIKES: u32 = 3;

/// How much a failure says about the sidecar's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Weight {
    /// Nothing: the answer is about the needle or the op, not the sidecar.
    None,
    /// A strike; [`LIGHT_STRIKES`] in a row mark it down.
    Light,
    /// Marks it down at once.
    Heavy,
}

impl Weight {
    pub(super) fn of(failure: &Failure) -> Weight {
        match failure {
            Failure::Down | Failure::BadOp(_) | Failure::Short { .. } | Failure::Compressed => {
                Weight::None
            }
            Failure::Status(Status::Busy | Status::Internal) | Failure::Lost(_) => Weight::Light,
            Failure::Status(_) => Weight::None,
            Failure::Connect(_) | Failure::Timeout | Failure::Protocol(_) => Weight::Heavy,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    /// Consecutive failures that marked the sidecar down; sets the back-off length.
    failures: u32,
    strikes: u32,
    down_until: Option<Instant>,
    server_id: Option<u64>,
}

/// A sidecar's connections and health.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) addr: String,
    /// One async mutex per connection, so concurrent batches share one connect attempt.
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next_slot: AtomicUsize,
    health: Mutex<Health>,
}

impl Pool {
    pub(super) fn new(addr: &str, conns: usize) -> Pool {
        Pool {
            addr: addr.to_owned(),
            slots: (0..conns.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // Every update is a few plain field writes; a poisoned lock holds usable state.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether ops must fail with [`Failure::Down`] now (the back-off has not ended).
    pub(super) fn in_backoff(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|t| now < t)
    }

    /// `n` slot indexes to spread a batch over, rotating so batches share the load.
    pub(super) fn pick_slots(&self, n: usize) -> Vec<usize> {
        let count = self.slots.len();
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed);
        (0..n.min(count)).map(|i| (start + i) % count).collect()
    }

    /// The open connection in `slot`, connecting (and shaking hands) if there is none.
    /// Bounded by `limit`. Records the outcome in the pool's health.
    pub(super) async fn conn(
        self: Arc<Self>,
        slot: usize,
        cfg: EngineConfig,
        stats: Arc<Stats>,
        limit: Duration,
    ) -> Result<Arc<Conn>, Failure> {
        let attempt = async {
            let mut held = self.slots[slot].lock().await;
            if let Some(conn) = held.as_ref().filter(|c| c.is_open()) {
                return Ok(conn.clone());
            }
            let conn = Conn::connect(&self.addr, cfg.max_inflight).await?;
            stats.connected(held.is_some());
            self.health().server_id = Some(conn.ack.server_id);
            // A fresh handshake is the probe that brings a sidecar back up.
            self.record(&[], true, &cfg, &stats);
            *held = Some(conn.clone());
            Ok(conn)
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => {
                Err(Failure::Connect(format!("no handshake within {} ms", limit.as_millis())))
            }
        };
        if let Err(why) = &result {
            self.record(std::slice::from_ref(why), false, &cfg, &stats);
        }
        result
    }

    /// Folds a batch's outcome for this sidecar into its health: any heavy failure marks it
    /// down (doubling the back-off); light failures with no success add a strike; a success
    /// with no heavy failure brings it up and clears the count.
    pub(super) fn record(
        &self,
        failures: &[Failure],
        success: bool,
        cfg: &EngineConfig,
        stats: &Stats,
    ) {
        let worst = failures.iter().map(Weight::of).max().unwrap_or(Weight::None);
        let mut h = self.health();
        let mark_down = match worst {
            Weight::Heavy => true,
            Weight::Light if !success => {
                h.strikes += 1;
                h.strikes >= LIGHT_STRIKES
            }
            _ => false,
        };
        if mark_down {
            h.strikes = 0;
            h.failures = h.failures.saturating_add(1);
            let doublings = (h.failures - 1).min(31);
            let backoff = cfg.backoff_min.saturating_mul(1 << doublings).min(cfg.backoff_max);
            h.down_until = Some(Instant::now() + backoff);
            stats.marked_down();
        } else if success {
            *h = Health { server_id: h.server_id, ..Health::default() };
        }
    }

    pub(super) fn report(&self, now: Instant) -> SidecarHealth {
        let h = self.health();
        SidecarHealth {
            addr: self.addr.clone(),
            up: h.down_until.is_none(),
            failures: h.failures,
            retry_in: h.down_until.map(|t| t.saturating_duration_since(now)),
            transport: "tcp",
            server_id: h.server_id,
        }
    }
}
