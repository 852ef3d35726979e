//! One sidecar: its connections (one per seat), its idle lane connections, and its health (up, or
//! down until a back-off ends). Each connection remembers when it was last used, so the reaper
//! can close those idle past `idle_timeout`, and a new connection past `max_conns` or short of
//! pinned budget can close the least recently used idle one (`reclaim.rs`, `runtime.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::lane_conn::LaneConn;
use super::reclaim::{self, Holder, Need};
use super::runtime::{Generation, Lease};
use super::stats::Stats;
use super::types::{EngineConfig, Failure, SidecarHealth, Transport};
use super::verbs::{self, Host};
use crate::proto::Status;

/// Consecutive light failures (BUSY, INTERNAL, a dropped connection) that count as one
/// real failure: one such answer says little, a run of them says the sidecar is unwell.
const LIGHT_STRIKES: u32 = 3;
/// Lane connections per sidecar, busy or idle: one per thread reading at once, up to this
/// many. A batch that finds them all busy takes the async path rather than opening (and
/// soon closing) yet another connection.
const LANE_CONNS: usize = 8;

/// Milliseconds since the first call in this process: when a connection was last used.
pub(super) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Which idle connection of a pool [`SidecarPool::oldest_idle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    Seat(usize),
    Lane,
}

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
            // A verbs failure is this host's (no device, a slot too small) or closes its
            // connection, which shows as `Lost` for whatever else was outstanding.
            Failure::Down
            | Failure::BadOp(_)
            | Failure::Short { .. }
            | Failure::Compressed
            | Failure::Verbs(_) => Weight::None,
            // Another writer on the connection, not the sidecar, crossed the answers.
            Failure::Crossed(_) => Weight::None,
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
    /// Transport of the last async connection made (`None`: tcp so far).
    transport: Option<&'static str>,
}

/// A sidecar's connections and health.
#[derive(Debug)]
pub(super) struct SidecarPool {
    pub(super) addr: String,
    /// One async mutex per connection, so concurrent batches share one connect attempt.
    seats: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    /// When each seat's connection was last handed to a batch ([`now_ms`]).
    seat_used: Vec<AtomicU64>,
    next_seat: AtomicUsize,
    /// Lane connections (see [`super::lane`]).
    lane: Mutex<LaneSlots>,
    /// Lane connections dropped broken and not yet replaced, for the `reconnects` count.
    lane_broken: AtomicUsize,
    health: Mutex<Health>,
    /// Set under [`Transport::Auto`] once a verbs connection to this sidecar could not be
    /// set up on this side: later connections offer tcp only.
    tcp_only: AtomicBool,
}

impl SidecarPool {
    pub(super) fn new(addr: &str, conns: usize) -> SidecarPool {
        SidecarPool {
            addr: addr.to_owned(),
            seats: (0..conns.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            seat_used: (0..conns.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next_seat: AtomicUsize::new(0),
            lane: Mutex::new(LaneSlots::default()),
            lane_broken: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
            tcp_only: AtomicBool::new(false),
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

    /// `n` seat indexes to spread a batch over, rotating so batches share the load.
    pub(super) fn pick_seats(&self, n: usize) -> Vec<usize> {
        let count = self.seats.len();
        let start = self.next_seat.fetch_add(1, Ordering::Relaxed);
        (0..n.min(count)).map(|i| (start + i) % count).collect()
    }

    /// The open connection in `seat`, if there is one and no batch is connecting it right
    /// now; lets a batch skip a task and its wake-up when the connection is already up.
    pub(super) fn open_conn(&self, seat: usize) -> Option<Arc<Conn>> {
        let held = self.seats[seat].try_lock().ok()?;
        let conn = held.as_ref().filter(|c| c.is_open()).cloned()?;
        self.seat_used[seat].store(now_ms(), Ordering::Relaxed);
        Some(conn)
    }

    /// Connections of this sidecar open now (a seat being connected counts as one).
    pub(super) fn open_count(&self) -> usize {
        let seats = self
            .seats
            .iter()
            .filter(|s| {
                s.try_lock().map_or(true, |held| held.as_ref().is_some_and(|c| c.is_open()))
            })
            .count();
        let lane = self.lane();
        seats + lane.busy + lane.idle.len()
    }

    /// This sidecar's least recently used idle connection (owing no answer, no batch on it)
    /// whose close serves `need`: when it was last used, and which.
    pub(super) fn oldest_idle(&self, need: Need) -> Option<(u64, Idle)> {
        let seats = self.seats.iter().enumerate().filter_map(|(i, seat)| {
            let held = seat.try_lock().ok()?;
            let conn = held.as_ref()?;
            let used = self.seat_used[i].load(Ordering::Relaxed);
            Some(Holder { key: Idle::Seat(i), used, idle: closable(conn), leased: conn.is_verbs() })
        });
        let lane = self.lane();
        let lane = lane_victim(&lane.idle, need).map(|(_, h)| h.at(Idle::Lane));
        reclaim::victim(seats.chain(lane), need).map(|h| (h.used, h.key))
    }

    /// Takes `which` out of the pool if it is still idle and its close still serves `need`
    /// (the caller drops it, closing it). For the lane, the least recently used idle lane
    /// connection that serves `need` now.
    pub(super) fn take_idle(&self, which: Idle, need: Need) -> Option<Closed> {
        match which {
            Idle::Seat(i) => {
                let mut held = self.seats.get(i)?.try_lock().ok()?;
                let conn = held.as_ref()?;
                let used = self.seat_used[i].load(Ordering::Relaxed);
                let holder =
                    Holder { key: (), used, idle: closable(conn), leased: conn.is_verbs() };
                reclaim::victim([holder], need)?;
                held.take().map(|c| Closed::Conn { _conn: c })
            }
            Idle::Lane => {
                let mut lane = self.lane();
                let (at, _) = lane_victim(&lane.idle, need)?;
                Some(Closed::Lane { _conn: lane.idle.remove(at).0 })
            }
        }
    }

    /// Takes out every connection idle since before `cutoff` ([`now_ms`] units).
    pub(super) fn take_idle_since(&self, cutoff: u64) -> Vec<Closed> {
        let mut out = Vec::new();
        for (i, seat) in self.seats.iter().enumerate() {
            if self.seat_used[i].load(Ordering::Relaxed) >= cutoff {
                continue;
            }
            if let Ok(mut held) = seat.try_lock() {
                if held.as_ref().is_some_and(|c| c.is_idle()) {
                    out.extend(held.take().map(|c| Closed::Conn { _conn: c }));
                }
            }
        }
        let mut lane = self.lane();
        let stale = lane.idle.iter().take_while(|(_, used)| *used < cutoff).count();
        out.extend(lane.idle.drain(..stale).map(|(wire, _)| Closed::Lane { _conn: wire }));
        out
    }

    /// The open connection in `seat`, connecting (and shaking hands) if there is none.
    /// Bounded by `limit`. Records the outcome in the pool's health. `verbs` is what
    /// [`Generation::verbs`](super::runtime::Generation::verbs) said for this engine; a full
    /// pinned budget is first made room in from idle connections of `generation`
    /// ([`Generation::reclaim_pinned`](super::runtime::Generation::reclaim_pinned)).
    pub(super) async fn conn(
        self: Arc<Self>,
        seat: usize,
        cfg: EngineConfig,
        stats: Arc<Stats>,
        limit: Duration,
        verbs: Result<Option<Arc<Host>>, Failure>,
        generation: Weak<Generation>,
    ) -> Result<Arc<Conn>, Failure> {
        let attempt = async {
            let mut held = self.seats[seat].lock().await;
            if let Some(conn) = held.as_ref().filter(|c| c.is_open()) {
                return Ok(conn.clone());
            }
            let verbs = verbs?;
            if let Some(host) = self.short_of_room(verbs.as_ref()) {
                // It waits for the slices it frees: on a blocking thread, so the workers
                // stay free to drop the closed connections' tasks that hold them.
                let (stats, until) = (stats.clone(), Instant::now() + limit);
                let reclaim = tokio::task::spawn_blocking(move || {
                    // A lease: this may be the generation's last holder (see `Lease`).
                    let held = generation.upgrade().map(Lease::new);
                    let held = held.as_ref().and_then(Lease::get);
                    held.is_some_and(|g| g.reclaim_pinned(&host, &stats, until))
                });
                // Whatever it freed shows in the budget `offer_verbs` looks at next.
                let _ = reclaim.await;
            }
            let verbs = self.offer_verbs(verbs, cfg.transport)?;
            let tcp_ok = cfg.transport != Transport::Verbs;
            let conn =
                match Conn::connect(&self.addr, cfg.max_inflight, verbs.as_ref(), tcp_ok, &stats)
                    .await
                {
                    Err(Failure::Verbs(why)) if cfg.transport == Transport::Auto => {
                        self.verbs_failed(&why);
                        Conn::connect(&self.addr, cfg.max_inflight, None, true, &stats).await?
                    }
                    other => other?,
                };
            self.note_transport(conn.transport());
            self.connected(conn.ack.server_id, held.is_some(), &cfg, &stats);
            self.seat_used[seat].store(now_ms(), Ordering::Relaxed);
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

    /// The verbs host whose pinned budget a new connection to this sidecar would need room
    /// in and finds full: `None` when there is room, or the connection would not offer
    /// verbs anyway (tcp only, or verbs to this sidecar failed under [`Transport::Auto`]).
    /// The caller then makes room from idle connections
    /// ([`Generation::reclaim_pinned`](super::runtime::Generation::reclaim_pinned)) before
    /// [`offer_verbs`](Self::offer_verbs).
    pub(super) fn short_of_room(&self, verbs: Option<&Arc<Host>>) -> Option<Arc<Host>> {
        let host = verbs.filter(|_| !self.tcp_only.load(Ordering::Relaxed))?;
        (!host.has_room()).then(|| host.clone())
    }

    /// The verbs state a new connection (async or lane) offers: none once verbs to this
    /// sidecar failed under [`Transport::Auto`]. A budget still full after making room from
    /// idle connections (every leased connection is busy) gives this one connection tcp
    /// under `Auto` (later ones try verbs again), and fails it under [`Transport::Verbs`],
    /// which never reads over tcp.
    ///
    /// # Errors
    /// [`Failure::Verbs`]: the budget is all leased and the engine may use verbs only.
    pub(super) fn offer_verbs(
        &self,
        verbs: Option<Arc<Host>>,
        transport: Transport,
    ) -> Result<Option<Arc<Host>>, Failure> {
        let Some(host) = verbs.filter(|_| !self.tcp_only.load(Ordering::Relaxed)) else {
            return Ok(None);
        };
        match (host.has_room(), transport) {
            (true, _) => Ok(Some(host)),
            (false, Transport::Verbs) => Err(Failure::Verbs(host.budget_full())),
            (false, _) => Ok(None),
        }
    }

    /// Verbs to this sidecar failed on this side under [`Transport::Auto`] (a memlock limit
    /// too low for another pool, no route between the GIDs, ...): tcp from now on. Except
    /// a budget that filled up between the check and the registration (another connection
    /// took the last slice): that says nothing of this sidecar, so only the connection at
    /// hand goes over tcp, as when the budget was full to begin with.
    pub(super) fn verbs_failed(&self, why: &str) {
        if verbs::is_budget_full(why) {
            tracing::debug!("engine: no slice left for a connection to {}: tcp", self.addr);
            return;
        }
        tracing::warn!("engine: verbs to {} failed, using tcp: {why}", self.addr);
        self.tcp_only.store(true, Ordering::Relaxed);
    }

    /// Notes which transport the sidecar chose for a new connection, for [`Self::report`].
    pub(super) fn note_transport(&self, transport: &'static str) {
        self.health().transport = Some(transport);
    }

    /// Notes a finished handshake (`replaced`: it stands in for a broken connection).
    pub(super) fn connected(
        &self,
        server_id: u64,
        replaced: bool,
        cfg: &EngineConfig,
        stats: &Stats,
    ) {
        stats.connected(replaced);
        self.health().server_id = Some(server_id);
        // A fresh handshake is the probe that brings a sidecar back up.
        self.record(&[], true, cfg, stats);
    }

    fn lane(&self) -> MutexGuard<'_, LaneSlots> {
        // A push, a pop or a count at a time; a panic cannot leave it half-updated.
        self.lane.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The right to run a lane batch: an idle connection still usable (those the sidecar
    /// closed meanwhile are dropped on the way), or room for a new one. `None` when all
    /// [`LANE_CONNS`] are busy.
    pub(super) fn lane_ticket(self: &Arc<Self>) -> Option<LaneTicket> {
        loop {
            let wire = {
                let mut lane = self.lane();
                let wire = lane.idle.pop().map(|(wire, _)| wire);
                if wire.is_none() && lane.busy >= LANE_CONNS {
                    return None;
                }
                lane.busy += 1;
                wire
            };
            let ticket = LaneTicket { pool: self.clone(), wire };
            match &ticket.wire {
                Some(wire) if !wire.reusable() => self.lane_broke(), // and try the next
                _ => return Some(ticket),
            }
        }
    }

    /// Notes that a lane connection was dropped broken.
    pub(super) fn lane_broke(&self) {
        self.lane_broken.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a new lane connection replaces a broken one (and counts it as replaced).
    pub(super) fn lane_replaces(&self) -> bool {
        self.lane_broken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Folds a batch's outcome for this sidecar into its health: any heavy failure marks it
    /// down (doubling the back-off); light failures with no success add a strike; a success
    /// with no heavy failure brings it up and clears the count.
    /// [`record`](Self::record) for a batch's outcomes on this sidecar.
    pub(super) fn record_results<'r, T: 'r>(
        &self,
        results: impl IntoIterator<Item = &'r Result<T, Failure>>,
        cfg: &EngineConfig,
        stats: &Stats,
    ) {
        let mut failures = Vec::new();
        let mut success = false;
        for r in results {
            match r {
                Ok(_) => success = true,
                Err(why) => failures.push(why.clone()),
            }
        }
        self.record(&failures, success, cfg, stats);
    }

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
        let mut note = None;
        if mark_down {
            h.strikes = 0;
            h.failures = h.failures.saturating_add(1);
            let doublings = (h.failures - 1).min(31);
            let backoff = cfg.backoff_min.saturating_mul(1 << doublings).min(cfg.backoff_max);
            h.down_until = Some(Instant::now() + backoff);
            stats.marked_down();
            let why = failures.iter().max_by_key(|f| Weight::of(f)).map(ToString::to_string);
            note = Some((true, backoff, why.unwrap_or_default()));
        } else if success {
            if h.failures > 0 {
                note = Some((false, Duration::ZERO, String::new()));
            }
            *h = Health { server_id: h.server_id, transport: h.transport, ..Health::default() };
        }
        // Logged after the health lock is released: in a Python process the log record is
        // handed to Python's logging, which needs the GIL, and a Python thread may hold the
        // GIL while it waits for this lock (health()).
        drop(h);
        match note {
            Some((true, backoff, why)) => tracing::warn!(
                "engine: sidecar {} marked down for {backoff:?} ({why}); its reads go over HTTP",
                self.addr
            ),
            Some((false, ..)) => tracing::info!("engine: sidecar {} is back up", self.addr),
            None => {}
        }
    }

    pub(super) fn report(&self, now: Instant) -> SidecarHealth {
        let h = self.health();
        SidecarHealth {
            addr: self.addr.clone(),
            up: h.down_until.is_none(),
            failures: h.failures,
            retry_in: h.down_until.map(|t| t.saturating_duration_since(now)),
            transport: h.transport.unwrap_or("tcp"),
            server_id: h.server_id,
        }
    }
}

/// Whether the seat's connection may be closed for another: idle, and held by the seat alone.
/// A batch that took it (open, or just connected) and has not sent on it yet holds a clone;
/// taking it from the seat then would neither stop it nor give its slice back until that
/// batch ends.
fn closable(conn: &Arc<Conn>) -> bool {
    conn.is_idle() && Arc::strong_count(conn) == 1
}

/// The least recently used of a pool's idle lane connections whose close serves `need`,
/// and where it is in the list.
fn lane_victim(idle: &[(LaneConn, u64)], need: Need) -> Option<(usize, Holder<usize>)> {
    let holders = idle.iter().enumerate().map(|(at, (wire, used))| Holder {
        key: at,
        used: *used,
        idle: true,
        leased: wire.verbs.is_some(),
    });
    reclaim::victim(holders, need).map(|h| (h.key, h))
}

/// A sidecar's lane connections.
#[derive(Debug, Default)]
struct LaneSlots {
    /// Connections owing no answer, ready for a batch, with when each was last used: the
    /// oldest first (a batch takes the newest).
    idle: Vec<(LaneConn, u64)>,
    /// Tickets out: connections in use, or being made.
    busy: usize,
}

/// One lane batch's claim on a sidecar's lane connections; dropping it frees the claim.
#[derive(Debug)]
pub(super) struct LaneTicket {
    pool: Arc<SidecarPool>,
    /// An idle connection to use; `None`: make one.
    pub(super) wire: Option<LaneConn>,
}

impl LaneTicket {
    /// The sidecar.
    pub(super) fn pool(&self) -> &Arc<SidecarPool> {
        &self.pool
    }

    /// Keeps `wire` for the next batch. Only for a batch that ended cleanly: a connection
    /// that still owes answers would hand them to the wrong batch.
    pub(super) fn keep(self, wire: LaneConn) {
        self.pool.lane().idle.push((wire, now_ms()));
    }
}

/// A connection taken out of its pool to be closed (by dropping it, off the lock).
#[derive(Debug)]
pub(super) enum Closed {
    /// An async connection; its tasks stop when the last holder lets go.
    Conn { _conn: Arc<Conn> },
    /// A lane connection.
    Lane { _conn: LaneConn },
}

impl Drop for LaneTicket {
    fn drop(&mut self) {
        let mut lane = self.pool.lane();
        lane.busy = lane.busy.saturating_sub(1);
    }
}
