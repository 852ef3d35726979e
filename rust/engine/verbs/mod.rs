//! The engine's side of the verbs transport (`docs/protocol.md`, "verbs"): the process's
//! device state and receive pool ([`Host`]), one connection's queue pair and completion
//! matching ([`Link`], [`matcher`]), and the reader's handling of verbs answers ([`rx`]).
//!
//! The TCP connection stays the control stream; a verbs connection differs from a tcp one
//! in three places only: the handshake appends the queue-pair exchange
//! ([`super::conn::Conn::connect`]), the writer gives each READ a receive slot from the
//! process's pool before sending it ([`super::tasks`]), and the reader completes an answer
//! from the slot once both its frame and its receive completion are in ([`rx`]).
//!
//! The device sits behind [`RecvQueue`], so the matching and re-posting logic is tested
//! with a fake queue; real devices are exercised by the ignored `device_tests`.

pub(super) mod matcher;
pub(super) mod rx;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod rx_tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::Stats;
use super::types::Failure;
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

/// The process's receive slots: handed to READs by the connections' writers, back on drop
/// of their [`SlotLease`].
#[derive(Debug)]
pub(in crate::engine) struct SlotPool {
    free: Mutex<Vec<Slot>>,
    /// One permit per slot in `free`, so a writer can wait for one.
    available: Arc<Semaphore>,
    slot_size: u32,
}

impl SlotPool {
    fn new(slots: Vec<Slot>, slot_size: u32) -> SlotPool {
        let available = Arc::new(Semaphore::new(slots.len()));
        SlotPool { free: Mutex::new(slots), available, slot_size }
    }

    fn free(&self) -> MutexGuard<'_, Vec<Slot>> {
        // Only pushes and pops happen under it; a panic cannot leave it half-updated.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Option<SlotLease> {
        let slot = self.free().pop()?;
        Some(SlotLease { slot: Some(slot), pool: self.clone(), _permit: permit })
    }

    /// A free slot, waiting for one; `None` only if the pool is broken (cannot happen:
    /// permits and free slots are kept equal).
    pub(in crate::engine) async fn acquire(self: &Arc<Self>) -> Option<SlotLease> {
        let permit = self.available.clone().acquire_owned().await.ok()?;
        self.lease(permit)
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

/// The verbs state of one process: device, port, protection domain and the receive pool,
/// registered once. Built on first verbs use and again in a fork child (it lives in the
/// runtime's generation); never shared with another process.
#[derive(Debug)]
pub(in crate::engine) struct Host {
    ctx: Context,
    port: LocalPort,
    pd: ProtectionDomain,
    remote: RemotePool,
    pub(in crate::engine) slots: Arc<SlotPool>,
}

impl Host {
    /// Opens the device ([`DEVICE_ENV`], else the first), its first ACTIVE port, and
    /// registers `slot_count` slots of `slot_size` bytes for remote write.
    ///
    /// # Errors
    /// A sentence saying what is missing: memlock (naming `ulimit -l`), libibverbs, a
    /// device, an active port, or the registration.
    pub(in crate::engine) fn open(slot_size: u32, slot_count: u32) -> Result<Host, String> {
        let needed = u64::from(slot_size) * u64::from(slot_count);
        verbs::check_memlock(needed, verbs::MemlockLimit::current(), verbs::has_cap_ipc_lock())
            .map_err(|e| e.to_string())?;
        let lib = verbs::Loader::global().map_err(|e| e.to_string())?;
        let device = std::env::var(DEVICE_ENV).ok().filter(|d| !d.is_empty());
        let ctx = Context::open(lib, device.as_deref()).map_err(|e| e.to_string())?;
        let port = ctx.local_port(None, None).map_err(|e| e.to_string())?;
        let pd = ctx.alloc_pd().map_err(|e| e.to_string())?;
        let pool = pd
            .register_pool(slot_size, slot_count, Access::RemoteWrite)
            .map_err(|e| e.to_string())?;
        let remote = pool.remote();
        let slots = Arc::new(SlotPool::new(pool.into_slots(), slot_size));
        Ok(Host { ctx, port, pd, remote, slots })
    }

    /// A queue pair in RESET for a new connection that may have `recvs` READs in flight.
    ///
    /// # Errors
    /// [`Failure::Verbs`] when the device refuses the completion or queue pair.
    pub(in crate::engine) fn prepare(self: &Arc<Self>, recvs: u32) -> Result<Prepared, Failure> {
        let fail = |e: verbs::VerbsError| Failure::Verbs(e.to_string());
        let recvs = recvs.max(1);
        let cq = self.ctx.create_cq(recvs.saturating_add(1)).map_err(fail)?;
        // The client posts no sends of its own; one entry keeps every provider happy.
        let caps = QpCaps { max_send_wr: 1, max_recv_wr: recvs, max_send_sge: 1 };
        let qp =
            self.pd.create_qp(&cq, &cq, caps, self.port.clone(), Role::Client).map_err(fail)?;
        Ok(Prepared { host: self.clone(), qp, cq })
    }
}

/// A connection's queue pair before the handshake.
#[derive(Debug)]
pub(in crate::engine) struct Prepared {
    host: Arc<Host>,
    qp: PreparedQp,
    cq: CompletionQueue,
}

impl Prepared {
    /// The `VERBS_CLIENT` message that follows `HELLO`.
    pub(in crate::engine) fn exchange(&self) -> [u8; verbs::exchange::CLIENT_EXCHANGE_LEN] {
        ClientExchange { endpoint: self.qp.endpoint(), pool: self.host.remote }.encode()
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
        let qp = self.qp.connect(&theirs).map_err(|e| Failure::Verbs(e.to_string()))?;
        let recv = QpRecv { qp, cq: self.cq };
        recv.post(recvs)?;
        Ok(Link { recv: Box::new(recv), slots: self.host.slots.clone(), stats })
    }
}

/// The verbs half of a connection. It owns the queue pair: a connection drops its link
/// before its pending table, so no slot the table still holds is freed while the queue
/// pair could write into it.
#[derive(Debug)]
pub(in crate::engine) struct Link {
    pub(in crate::engine) recv: Box<dyn RecvQueue>,
    pub(in crate::engine) slots: Arc<SlotPool>,
    pub(in crate::engine) stats: Arc<Stats>,
}
