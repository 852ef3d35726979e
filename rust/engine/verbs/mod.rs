//! The engine's side of the verbs transport (`docs/protocol.md`, "verbs"): the process's
//! device state ([`Host`]), one connection's queue pair and receive pool ([`Prepared`],
//! [`Link`], [`SlotPool`]), completion matching ([`matcher`]), and the handling of verbs
//! answers by the async reader ([`rx`]) and by the lane (`super::lane`).
//!
//! The TCP connection stays the control stream; a verbs connection differs from a tcp one
//! in three places only: the handshake appends the queue-pair exchange
//! ([`super::conn::Conn::connect`], `super::lane_conn::LaneConn::connect`), each READ names a receive
//! slot of the connection's own pool before it is sent ([`super::tasks`], the lane), and an
//! answer is completed from the slot once both its frame and its receive completion are in
//! ([`rx`], the lane).
//!
//! Every connection registers its own pool at connect (one memory region, one rkey) and
//! announces only that pool: a sidecar can reach no slot of another connection. The pool
//! is a slice of the process's one pinned arena ([`crate::verbs::Arena`], `pinned_budget`
//! bytes, allocated once): the connection's registration covers that slice only, slices
//! never overlap, so however many sidecars the process reads from it pins at most the
//! budget. A slice holds up to the READs the connection asks to have in flight (at most
//! `verbs_slots`), and never more than an eighth of what is free; a connection that finds the
//! arena full first closes idle connections that hold slices, least recently used first
//! (`super::reclaim`), and is made over tcp (under `auto`) only when none is idle.
//!
//! The device sits behind [`RecvQueue`], so the matching and re-posting logic is tested
//! with a fake queue; real devices are exercised by the ignored `device_tests`.

pub(super) mod lane;
pub(super) mod matcher;
pub(super) mod rx;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod rx_tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::Stats;
use super::types::Failure;
use crate::proto::ReadRequest;
use crate::verbs::Arena;
use crate::verbs::{
    self, Access, ClientExchange, CompletionQueue, ConnectedQp, Context, Endpoint, LocalPort,
    PreparedQp, ProtectionDomain, QpCaps, RemotePool, Role, Slot,
};

/// Names the RDMA device to open (`rxe0`, `mlx5_0`...); the first one when unset.
pub const DEVICE_ENV: &str = "SEAWEED_RDMA_DEVICE";

/// One receive completion, as the matching logic sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::engine) enum RecvEvent {
    /// An RDMA WRITE with immediate landed; the immediate is the READ's request id.
    Written(u32),
    /// A receive failed (the queue pair is now in the error state).
    Failed(String),
}

/// The device side of a connection's receives: what the reader needs of a queue pair.
pub(in crate::engine) trait RecvQueue: Send + Sync + std::fmt::Debug {
    /// Appends every completion available now, without waiting.
    ///
    /// # Errors
    /// The completion queue could not be polled.
    fn poll(&self, out: &mut Vec<RecvEvent>) -> Result<(), Failure>;

    /// Posts `n` more receives.
    ///
    /// # Errors
    /// The receive queue refused one.
    fn post(&self, n: u32) -> Result<(), Failure>;
}

/// A connected queue pair and its completion queue: the real [`RecvQueue`].
struct QpRecv {
    qp: ConnectedQp,
    cq: CompletionQueue,
}

impl std::fmt::Debug for QpRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpRecv").field("qpn", &self.qp.qpn()).finish()
    }
}

impl RecvQueue for QpRecv {
    fn poll(&self, out: &mut Vec<RecvEvent>) -> Result<(), Failure> {
        const BATCH: usize = 16;
        let mut got = Vec::with_capacity(BATCH);
        loop {
            got.clear();
            let n = self.cq.poll(&mut got, BATCH).map_err(|e| Failure::Verbs(e.to_string()))?;
            for c in got.drain(..) {
                out.push(match (self.cq.check(c), c.imm) {
                    (Ok(c), Some(imm)) if c.is_write_with_imm() => RecvEvent::Written(imm),
                    (Ok(c), _) => RecvEvent::Failed(format!("unexpected completion {c:?}")),
                    (Err(e), _) => RecvEvent::Failed(e.to_string()),
                });
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    fn post(&self, n: u32) -> Result<(), Failure> {
        for _ in 0..n {
            // The wr_id is unused: completions are matched by their immediate.
            self.qp.post_recv(0).map_err(|e| Failure::Verbs(format!("post receive: {e}")))?;
        }
        Ok(())
    }
}

/// One connection's receive slots: handed to its READs (by the writer task, or the lane's
/// caller), back on drop of their [`SlotLease`]. The registration lives until the pool and
/// every lease are gone.
#[derive(Debug)]
pub(in crate::engine) struct SlotPool {
    free: Mutex<Vec<Slot>>,
    /// One permit per slot in `free`, so a writer can wait for one.
    available: Arc<Semaphore>,
    slot_size: u32,
    /// The registration as announced to the sidecar.
    remote: RemotePool,
    /// Dropped with the pool, after its slots: the memlock budget it used is free again.
    _reservation: Reservation,
}

impl SlotPool {
    fn new(
        slots: Vec<Slot>,
        slot_size: u32,
        remote: RemotePool,
        reservation: Reservation,
    ) -> SlotPool {
        let available = Arc::new(Semaphore::new(slots.len()));
        SlotPool {
            free: Mutex::new(slots),
            available,
            slot_size,
            remote,
            _reservation: reservation,
        }
    }

    fn free(&self) -> MutexGuard<'_, Vec<Slot>> {
        // Only pushes and pops happen under it; a panic cannot leave it half-updated.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Option<SlotLease> {
        let slot = self.free().pop()?;
        Some(SlotLease { slot: Some(slot), pool: self.clone(), _permit: permit })
    }

    /// A free slot, waiting for one, and whether it had to wait (every slot was held);
    /// `None` only if the pool is broken (cannot happen: permits and free slots are kept
    /// equal).
    pub(in crate::engine) async fn acquire(self: &Arc<Self>) -> Option<(SlotLease, bool)> {
        let (permit, waited) = permit_or_wait(&self.available).await?;
        Some((self.lease(permit)?, waited))
    }

    /// A free slot if there is one now.
    pub(in crate::engine) fn try_acquire(self: &Arc<Self>) -> Option<SlotLease> {
        let permit = self.available.clone().try_acquire_owned().ok()?;
        self.lease(permit)
    }

    /// Bytes per slot.
    pub(in crate::engine) fn slot_size(&self) -> u32 {
        self.slot_size
    }
}

/// A permit of `sem`: at once if one is free (`false`), else after waiting for one
/// (`true`, what the engine counts as a slot wait). `None` once `sem` is closed.
async fn permit_or_wait(sem: &Arc<Semaphore>) -> Option<(OwnedSemaphorePermit, bool)> {
    match Arc::clone(sem).try_acquire_owned() {
        Ok(permit) => Some((permit, false)),
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            Some((Arc::clone(sem).acquire_owned().await.ok()?, true))
        }
        Err(tokio::sync::TryAcquireError::Closed) => None,
    }
}

/// One READ's hold on a receive slot; the slot goes back to the pool when this is dropped,
/// which must happen only once no write into it can still land (see [`matcher`]).
#[derive(Debug)]
pub(in crate::engine) struct SlotLease {
    slot: Option<Slot>,
    pool: Arc<SlotPool>,
    // Dropped after `Drop::drop` put the slot back, so a waiter finds it there.
    _permit: OwnedSemaphorePermit,
}

impl SlotLease {
    /// The slot's index in the pool (`dest_slot`).
    pub(in crate::engine) fn index(&self) -> u32 {
        self.slot.as_ref().map_or(0, Slot::index)
    }

    /// The slot's bytes.
    pub(in crate::engine) fn bytes(&self) -> &[u8] {
        self.slot.as_deref().unwrap_or(&[])
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.free().push(slot);
        }
    }
}

/// The verbs state of one process: device, port and protection domain, opened once. Built
/// on first verbs use and again in a fork child (it lives in the runtime's generation);
/// never shared with another process.
///
/// Receive pools are not part of it: each connection registers its own ([`Host::prepare`])
/// and announces only that one to its sidecar, so no sidecar can write into memory another
/// connection's READ owns (one rkey per connection, not one for the process).
#[derive(Debug)]
pub(in crate::engine) struct Host {
    ctx: Context,
    port: LocalPort,
    pd: ProtectionDomain,
    /// The process's pinned budget, carved into every connection's receive pool.
    arena: Arena,
    /// Most slots one connection registers (`verbs_slots`).
    max_slots: u32,
    /// Bytes of receive pools registered now, by every connection of this process.
    registered: Arc<AtomicU64>,
    /// Receive pools registered since the host was opened.
    leases: AtomicU64,
}

impl Host {
    /// Opens the device ([`DEVICE_ENV`], else the first) and its first ACTIVE port, and
    /// allocates the pinned arena of `budget` bytes (pinned only as connections register
    /// slices of it). Each connection will register up to `max_slots` slots of `slot_size`
    /// bytes (rounded up to whole pages).
    ///
    /// # Errors
    /// A sentence saying what is missing: libibverbs, a device, an active port, the
    /// protection domain, or a budget that holds no slot.
    pub(in crate::engine) fn open(
        slot_size: u32,
        max_slots: u32,
        budget: u64,
    ) -> Result<Host, String> {
        let lib = verbs::Loader::global().map_err(|e| e.to_string())?;
        let device = std::env::var(DEVICE_ENV).ok().filter(|d| !d.is_empty());
        let ctx = Context::open(lib, device.as_deref()).map_err(|e| e.to_string())?;
        let port = ctx.local_port(None, None).map_err(|e| e.to_string())?;
        let pd = ctx.alloc_pd().map_err(|e| e.to_string())?;
        let arena = Arena::new(slot_size, budget).map_err(|e| e.to_string())?;
        let registered = Arc::new(AtomicU64::new(0));
        let leases = AtomicU64::new(0);
        Ok(Host { ctx, port, pd, arena, max_slots: max_slots.max(1), registered, leases })
    }

    /// Why a connection gets no receive pool: the budget is all leased
    /// ([`is_budget_full`] recognises it).
    pub(in crate::engine) fn budget_full(&self) -> String {
        format!("the pinned budget ({} MiB, pinned_budget){BUDGET_FULL}", self.arena.bytes() >> 20)
    }

    /// Whether the arena has a slot free for another connection.
    pub(in crate::engine) fn has_room(&self) -> bool {
        self.arena.leased_bytes() < self.arena.bytes()
    }

    /// Waits until the arena has a slot free, or `until` passes; whether it has
    /// ([`Arena::wait_for_room`]).
    pub(in crate::engine) fn wait_for_room(&self, until: std::time::Instant) -> bool {
        self.arena.wait_for_room(until)
    }

    /// What the pinned budget holds now: (bytes registered, the arena's size, pools
    /// registered so far).
    pub(in crate::engine) fn pinned(&self) -> (u64, u64, u64) {
        let leases = self.leases.load(Ordering::Relaxed);
        (self.registered.load(Ordering::Relaxed), self.arena.bytes(), leases)
    }

    /// Slots a connection asking for `want_inflight` READs in flight registers: one per
    /// READ, at most `verbs_slots`. Sized before the grant is known (the pool is announced
    /// with HELLO); the sidecar grants at most what was asked.
    pub(in crate::engine) fn slots_for(&self, want_inflight: u32) -> u32 {
        want_inflight.clamp(1, self.max_slots)
    }

    /// Registers a receive pool of up to `count` slots over a slice of the arena, after
    /// checking that the memlock limit allows it on top of every pool this process holds.
    fn register(&self, count: u32) -> Result<Arc<SlotPool>, Failure> {
        let lease = self.arena.lease(count).ok_or_else(|| Failure::Verbs(self.budget_full()))?;
        let slot_size = lease.slot_size();
        let bytes = lease.len() as u64;
        let held = self.registered.fetch_add(bytes, Ordering::AcqRel);
        // Returned when the pool is gone (or right here, if registering fails).
        let reservation = Reservation { bytes, registered: self.registered.clone() };
        let needed = held.saturating_add(bytes);
        verbs::check_memlock(needed, verbs::MemlockLimit::current(), verbs::has_cap_ipc_lock())
            .map_err(|e| Failure::Verbs(e.to_string()))?;
        let pool = self
            .pd
            .register_lease(lease, Access::RemoteWrite)
            .map_err(|e| Failure::Verbs(format!("register the receive pool: {e}")))?;
        self.leases.fetch_add(1, Ordering::Relaxed);
        let remote = pool.remote();
        Ok(Arc::new(SlotPool::new(pool.into_slots(), slot_size, remote, reservation)))
    }

    /// A queue pair in RESET and a freshly registered receive pool for a new connection
    /// that asks for `want_inflight` READs in flight ([`slots_for`](Self::slots_for)
    /// slots).
    ///
    /// # Errors
    /// [`Failure::Verbs`] when the memlock limit is too low for another pool (the message
    /// names `ulimit -l`), or the device refuses the registration, completion queue or
    /// queue pair.
    pub(in crate::engine) fn prepare(
        self: &Arc<Self>,
        want_inflight: u32,
    ) -> Result<Prepared, Failure> {
        let fail = |e: verbs::VerbsError| Failure::Verbs(e.to_string());
        let recvs = want_inflight.max(1);
        let slots = self.register(self.slots_for(want_inflight))?;
        let cq = self.ctx.create_cq(recvs.saturating_add(1)).map_err(fail)?;
        // The client posts no sends of its own; one entry keeps every provider happy.
        let caps = QpCaps { max_send_wr: 1, max_recv_wr: recvs, max_send_sge: 1 };
        let qp =
            self.pd.create_qp(&cq, &cq, caps, self.port.clone(), Role::Client).map_err(fail)?;
        Ok(Prepared { qp, cq, slots })
    }
}

/// A share of the process's memlock budget, held by a registered pool.
#[derive(Debug)]
struct Reservation {
    bytes: u64,
    registered: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.registered.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A connection's queue pair before the handshake, and the pool it will announce. The
/// queue pair is declared first, so it is destroyed before the pool is deregistered.
#[derive(Debug)]
pub(in crate::engine) struct Prepared {
    qp: PreparedQp,
    cq: CompletionQueue,
    slots: Arc<SlotPool>,
}

impl Prepared {
    /// The `VERBS_CLIENT` message that follows `HELLO`: this queue pair and this
    /// connection's own pool.
    pub(in crate::engine) fn exchange(&self) -> [u8; verbs::exchange::CLIENT_EXCHANGE_LEN] {
        ClientExchange { endpoint: self.qp.endpoint(), pool: self.slots.remote }.encode()
    }

    /// The pool this connection announces.
    #[cfg(test)]
    pub(in crate::engine) fn remote(&self) -> RemotePool {
        self.slots.remote
    }

    /// Connects to the sidecar's `VERBS_ENDPOINT` and posts `recvs` receives (at least the
    /// granted in-flight limit), as the protocol requires before the first READ.
    ///
    /// # Errors
    /// [`Failure::Protocol`] for a malformed endpoint, [`Failure::Verbs`] when the queue
    /// pair cannot be connected or the receives posted.
    pub(in crate::engine) fn connect(
        self,
        raw: &[u8],
        recvs: u32,
        stats: Arc<Stats>,
    ) -> Result<Link, Failure> {
        let theirs = Endpoint::decode(raw).map_err(|e| Failure::Protocol(e.to_string()))?;
        let Prepared { qp, cq, slots } = self;
        let qp = qp.connect(&theirs).map_err(|e| Failure::Verbs(e.to_string()))?;
        let recv = QpRecv { qp, cq };
        recv.post(recvs)?;
        Ok(Link { recv: Box::new(recv), slots, stats })
    }
}

/// How [`Host::budget_full`] ends.
const BUDGET_FULL: &str = " is leased to other connections";

/// Whether a [`Failure::Verbs`] reason is [`Host::budget_full`]'s: no slice was left, which
/// says nothing about the device or the sidecar.
pub(in crate::engine) fn is_budget_full(why: &str) -> bool {
    why.starts_with("the pinned budget (") && why.ends_with(BUDGET_FULL)
}

/// Refuses, before it is sent, a ranged verbs READ longer than a receive slot: the caller
/// reads it another way.
///
/// # Errors
/// [`Failure::Verbs`] saying so.
pub(in crate::engine) fn check_fits(req: &ReadRequest, slot_size: u32) -> Result<(), Failure> {
    if !req.whole() && req.length > slot_size {
        return Err(Failure::Verbs(format!(
            "read of {} bytes exceeds verbs_slot_size {slot_size}",
            req.length
        )));
    }
    Ok(())
}

/// The verbs half of a connection: its queue pair and its own receive pool. The queue pair
/// is declared first, so it is destroyed before this link lets go of the pool; and a
/// connection drops its link before its pending table (or, on the lane, before its
/// matcher), so no slot a READ still holds is freed while the queue pair could write into
/// it. The pool's memory outlives both: every lease keeps it registered.
#[derive(Debug)]
pub(in crate::engine) struct Link {
    pub(in crate::engine) recv: Box<dyn RecvQueue>,
    pub(in crate::engine) slots: Arc<SlotPool>,
    pub(in crate::engine) stats: Arc<Stats>,
}

#[cfg(test)]
mod budget_full_tests {
    use super::{is_budget_full, BUDGET_FULL};

    #[test]
    fn a_full_budget_is_told_apart_from_other_verbs_failures() {
        assert!(is_budget_full(&format!("the pinned budget (64 MiB, pinned_budget){BUDGET_FULL}")));
        assert!(!is_budget_full("the memlock limit (8 MiB) is too low: raise ulimit -l"));
        assert!(!is_budget_full("register the receive pool: Cannot allocate memory"));
    }
}

#[cfg(test)]
mod slot_wait_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::permit_or_wait;

    #[tokio::test]
    async fn a_permit_taken_at_once_is_no_wait_and_one_waited_for_is() {
        let sem = Arc::new(Semaphore::new(1));
        let (held, waited) = permit_or_wait(&sem).await.expect("open");
        assert!(!waited, "a free slot is taken at once");
        let waiter = tokio::spawn({
            let sem = Arc::clone(&sem);
            async move { permit_or_wait(&sem).await.map(|(_, waited)| waited) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "every slot is held: it must wait");
        drop(held);
        assert_eq!(waiter.await.expect("joined"), Some(true), "it waited for the slot");
        sem.close();
        assert!(permit_or_wait(&sem).await.is_none(), "a closed pool gives none");
    }
}
