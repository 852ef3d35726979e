//! The engine's tokio runtime and per-sidecar pools, rebuilt after a fork.
//!
//! Threads do not survive `fork()`: in a child, the parent's worker threads simply do not
//! exist, so its runtime would never run a task again, and its connections' sockets are
//! shared with the parent (reading from them would steal the parent's answers). So each
//! [`Generation`] remembers the process id that built it, and the first call in a child
//! builds a new one. The parent's generation is leaked, not dropped: dropping a runtime
//! waits for its worker threads to stop, which in the child would wait forever, and its
//! locks may have been held by a parent thread at the moment of the fork.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::pool::{now_ms, Closed, SidecarPool};
use super::reclaim::{self, Need};
use super::stats::Stats;
use super::types::{EngineConfig, Failure, Transport};
use super::verbs::Host;

/// Worker threads: the engine's tasks only shuffle bytes between sockets and buffers.
const WORKERS: usize = 2;
/// Threads for blocking work: DNS look-ups of sidecar names, and submitted batches
/// (`ticket.rs`), each of which holds one for its whole run, mostly asleep on a socket. A
/// submitted batch that finds them all busy waits for one (see `Engine::submit_read_into`),
/// so there are enough for as many reads as a FUSE mount has in flight.
const BLOCKING_THREADS: usize = 64;

/// A runtime and the pools that live on it, valid in the process that built them.
#[derive(Debug)]
pub(super) struct Generation {
    pid: u32,
    pub(super) rt: Runtime,
    pools: Mutex<HashMap<String, Arc<SidecarPool>>>,
    /// This process's verbs state, or why there is none; tried once, on first verbs use.
    /// Registered memory and device handles do not survive a fork either, so a child's
    /// generation opens its own.
    verbs: OnceLock<Result<Arc<Host>, String>>,
}

impl Generation {
    /// A generation whose reaper closes connections idle for `idle` (none for zero).
    fn start(idle: Duration, stats: &Arc<Stats>) -> std::io::Result<Arc<Generation>> {
        let generation = Arc::new(Generation::new()?);
        if !idle.is_zero() {
            let weak = Arc::downgrade(&generation);
            generation.rt.spawn(reap(weak, idle, stats.clone()));
        }
        Ok(generation)
    }

    fn new() -> std::io::Result<Generation> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("seaweed-rdma-engine")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Generation {
            pid: std::process::id(),
            rt,
            pools: Mutex::new(HashMap::new()),
            verbs: OnceLock::new(),
        })
    }

    fn pools_map(&self) -> MutexGuard<'_, HashMap<String, Arc<SidecarPool>>> {
        // Only inserts happen under this lock; a panic cannot leave the map half-updated.
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool for `addr`, created on first use.
    pub(super) fn pool(&self, addr: &str, conns: usize) -> Arc<SidecarPool> {
        let mut pools = self.pools_map();
        if let Some(pool) = pools.get(addr) {
            return pool.clone();
        }
        let pool = Arc::new(SidecarPool::new(addr, conns));
        pools.insert(addr.to_owned(), pool.clone());
        pool
    }

    /// The verbs state new connections offer: `None` for tcp only. Under
    /// [`Transport::Auto`] a host that cannot do verbs gets tcp (said once, in the log);
    /// under [`Transport::Verbs`] it gets [`Failure::Verbs`] saying why.
    pub(super) fn verbs(&self, cfg: &EngineConfig) -> Result<Option<Arc<Host>>, Failure> {
        if cfg.transport == Transport::Tcp {
            return Ok(None);
        }
        let host = self.verbs.get_or_init(|| {
            let host =
                Host::open(cfg.verbs_slot_size, cfg.verbs_slots, cfg.pinned_budget).map(Arc::new);
            match (&host, cfg.transport) {
                (Ok(_), _) => tracing::info!("engine: verbs transport ready"),
                (Err(why), Transport::Verbs) => tracing::warn!("engine: verbs unavailable: {why}"),
                (Err(why), _) => tracing::info!("engine: verbs unavailable, using tcp: {why}"),
            }
            host
        });
        match (host, cfg.transport) {
            (Ok(host), _) => Ok(Some(host.clone())),
            (Err(why), Transport::Verbs) => Err(Failure::Verbs(why.clone())),
            (Err(_), _) => Ok(None),
        }
    }

    /// Connections open now, every sidecar together.
    pub(super) fn open_conns(&self) -> usize {
        self.pools_map().values().map(|p| p.open_count()).sum()
    }

    /// The pinned budget's state (bytes registered, budget, pools registered), once verbs
    /// was opened.
    pub(super) fn pinned(&self) -> (u64, u64, u64) {
        match self.verbs.get() {
            Some(Ok(host)) => host.pinned(),
            _ => (0, 0, 0),
        }
    }

    /// Before `adding` new connections: while they would make more than `max_conns` open
    /// (`counted` of them are already among the open ones: a lane ticket is), closes the
    /// least recently used idle one. With none idle the new one is made anyway (a batch never
    /// waits for a connection to free up), and counted as over the cap.
    pub(super) fn make_room(&self, max_conns: usize, adding: usize, counted: usize, stats: &Stats) {
        let mut closed = Vec::new();
        let mut open = self.open_conns().saturating_sub(counted);
        while open + adding > max_conns {
            let Some(conn) = self.take_lru(Need::Conn) else {
                stats.over_cap();
                break;
            };
            stats.evicted();
            closed.push(conn);
            open -= 1;
        }
        close_off_thread(&self.rt, closed);
    }

    /// Room in a full pinned budget for a new verbs connection, taken back from idle ones
    /// (`reclaim.rs`): closes the least recently used idle connection that holds a slice, of
    /// any sidecar, waits until its slice is back, and repeats while such connections remain
    /// and `until` has not passed. Whether there is room now.
    ///
    /// Blocks: call it off the runtime's workers, which must stay free to drop a closed
    /// async connection's tasks (its registration, and so its slice, goes with them).
    pub(super) fn reclaim_pinned(&self, host: &Host, stats: &Stats, until: Instant) -> bool {
        let evict = || match self.take_lru(Need::Pinned) {
            Some(closed) => {
                stats.pinned_evicted();
                // Here, not off-thread: the caller waits for this very slice next.
                drop(closed);
                true
            }
            None => false,
        };
        reclaim::make_room(|| host.has_room(), evict, || host.wait_for_room(until)).0
    }

    /// Takes out the least recently used idle connection, every sidecar together, whose
    /// close serves `need`; `None` when there is none.
    fn take_lru(&self, need: Need) -> Option<Closed> {
        // A connection found idle may be picked up by a batch before it is taken: look again
        // (a few times: each miss is a batch that just started, not a loop to wait out).
        for _ in 0..4 {
            let pools = self.pools();
            let (_, which, pool) = pools
                .iter()
                .filter_map(|p| p.oldest_idle(need).map(|(used, which)| (used, which, p)))
                .min_by_key(|(used, ..)| *used)?;
            if let Some(closed) = pool.take_idle(which, need) {
                return Some(closed);
            }
        }
        None
    }

    /// Every pool, sorted by address.
    pub(super) fn pools(&self) -> Vec<Arc<SidecarPool>> {
        let mut all: Vec<_> = self.pools_map().values().cloned().collect();
        all.sort_by(|a, b| a.addr.cmp(&b.addr));
        all
    }
}

/// Closes connections on a blocking thread: a verbs connection's queue pair is destroyed
/// and its pool deregistered (unpinned) there, which takes longer than a worker should wait.
fn close_off_thread(rt: &Runtime, closed: Vec<Closed>) {
    if !closed.is_empty() {
        drop(rt.spawn_blocking(move || drop(closed)));
    }
}

/// The reaper: every so often, closes the connections unused for `idle`. Ends with the
/// generation.
async fn reap(generation: Weak<Generation>, idle: Duration, stats: Arc<Stats>) {
    let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(every).await;
        let Some(generation) = generation.upgrade() else { return };
        let cutoff = now_ms().saturating_sub(idle_ms);
        let closed: Vec<Closed> =
            generation.pools().iter().flat_map(|p| p.take_idle_since(cutoff)).collect();
        stats.reaped(closed.len());
        close_off_thread(&generation.rt, closed);
        // The engine may have let go meanwhile: then this is the last reference, and
        // dropping a runtime on one of its own threads would panic. A lease drops it on a
        // thread of its own.
        drop(Lease::new(generation));
    }
}

/// A submitted batch's hold on its [`Generation`], taken onto one of the generation's own
/// blocking threads.
///
/// The engine may be dropped while the batch runs; the batch's reference is then the last,
/// and dropping a runtime waits for its blocking threads to end, this one included: it would
/// wait forever. So the last reference is dropped on a thread of its own instead (or leaked,
/// if no thread can be started).
#[derive(Debug)]
pub(super) struct Lease(Option<Arc<Generation>>);

impl Lease {
    pub(super) fn new(generation: Arc<Generation>) -> Lease {
        Lease(Some(generation))
    }

    /// The generation; present until the lease is dropped.
    pub(super) fn get(&self) -> Option<&Arc<Generation>> {
        self.0.as_ref()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(last) = self.0.take().and_then(Arc::into_inner) else { return };
        // A closure that fails to start is dropped right here: `ManuallyDrop` makes that a
        // leak rather than the wait described above.
        let last = std::mem::ManuallyDrop::new(last);
        let dropper = std::thread::Builder::new().name("seaweed-rdma-engine-drop".into());
        let _ = dropper.spawn(move || drop(std::mem::ManuallyDrop::into_inner(last)));
    }
}

/// The current [`Generation`], replaced when the process id changes, and gone for good
/// once the engine is closed.
#[derive(Debug)]
pub(super) struct Current {
    current: Mutex<Option<Arc<Generation>>>,
    closed: AtomicBool,
    /// For each generation's reaper.
    idle: Duration,
    stats: Arc<Stats>,
}

impl Current {
    /// Builds the first generation, whose reaper closes connections idle for `idle`.
    pub(super) fn new(idle: Duration, stats: Arc<Stats>) -> std::io::Result<Current> {
        Ok(Current {
            current: Mutex::new(Some(Generation::start(idle, &stats)?)),
            closed: AtomicBool::new(false),
            idle,
            stats,
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Generation>>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether [`close`](Self::close) was called.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes the generation away for good: later [`get`](Self::get)s fail. Returns it (if
    /// this process built it) for the caller to shut down.
    pub(super) fn close(&self) -> Option<Arc<Generation>> {
        let mut slot = self.slot();
        self.closed.store(true, Ordering::Release);
        let generation = slot.take()?;
        if generation.pid != std::process::id() {
            std::mem::forget(generation); // inherited from a parent: see the module docs
            return None;
        }
        Some(generation)
    }

    /// The generation for this process, building one after a fork.
    pub(super) fn get(&self) -> std::io::Result<Arc<Generation>> {
        let pid = std::process::id();
        let mut slot = self.slot();
        if self.is_closed() {
            return Err(std::io::Error::other("the engine is closed"));
        }
        if let Some(generation) = slot.as_ref().filter(|g| g.pid == pid) {
            return Ok(generation.clone());
        }
        // A parent's generation (or none, after a failed rebuild): see the module docs.
        if let Some(stale) = slot.take() {
            std::mem::forget(stale);
        }
        let fresh = Generation::start(self.idle, &self.stats)?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// The generation if one exists for this process, without building one.
    pub(super) fn peek(&self) -> Option<Arc<Generation>> {
        let pid = std::process::id();
        self.slot().as_ref().filter(|g| g.pid == pid).cloned()
    }
}

/// Shuts a closed engine's generation down: at once when nothing else holds it, waiting up
/// to `wait` for its tasks; otherwise the batch still holding it (through its [`Lease`], or
/// on the caller's thread) drops it when it ends, which stops the runtime then.
pub(super) fn shut_down(generation: Arc<Generation>, wait: std::time::Duration) {
    match Arc::try_unwrap(generation) {
        Ok(generation) => {
            let Generation { rt, pools, verbs, .. } = generation;
            // Connections first (their sockets close as their tasks are dropped with the
            // runtime), then the verbs state their queue pairs used.
            drop(pools);
            rt.shutdown_timeout(wait);
            drop(verbs);
        }
        Err(shared) => drop(Lease::new(shared)),
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let slot = self.current.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(generation) = slot.take() {
            if generation.pid != std::process::id() {
                std::mem::forget(generation); // inherited from a parent: see the module docs
            }
        }
    }
}
