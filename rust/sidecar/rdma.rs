//! The sidecar's RDMA device: opened and its staging memory registered once at start-up
//! ([`setup`]); per verbs connection a completion queue and a server queue pair
//! ([`DeviceBackend`]), and a [`QpWriter`] that RDMA-writes answers into the client's slot.
//!
//! Nothing here runs without a device; what does not need one (the bounds rule, the
//! handshake, the framing) is in `transport.rs` and `handshake.rs`, tested everywhere.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::info;

use super::config::TransportChoice;
use super::transport::{
    BoxFuture, PushError, Pusher, RemoteWriter, VerbsBackend, VerbsPusher, WriteResult,
};
use crate::verbs::{
    check_memlock, device_names, has_cap_ipc_lock, Access, Backoff, ClientExchange,
    CompletionQueue, ConnectedQp, Context, Endpoint, GidKind, Loader, LocalPort, MemlockLimit,
    Pause, ProtectionDomain, QpCaps, Role, Slot, VerbsError, VerbsResult,
};

/// Most scatter/gather entries per write: one per staging slab; a read over more slabs
/// goes as several writes. Bounds the size of each send-queue entry.
const MAX_SEND_SGE: u32 = 16;
/// Send-queue entries beyond the granted in-flight count, for reads that need several.
const EXTRA_SEND_WR: u32 = 16;
/// How long one answer's writes may take to complete before the connection is given up.
/// Far above a healthy transfer (64 MiB at 1 GB/s is 64 ms) and above the transport's
/// own retries (7 tries of about 67 ms), so only a dead peer or path reaches it.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// An opened device and its registered staging slots.
pub(crate) struct VerbsSetup {
    pub(crate) backend: Arc<dyn VerbsBackend>,
    pub(crate) slots: Vec<Slot>,
}

/// Opens the RDMA device for `choice` and registers `slab_count` slabs of `slab_size`
/// bytes. `Ok(None)` means tcp only: `--transport tcp`, or `auto` without a usable device
/// (logged once, saying why). Blocking: run it on a blocking thread.
///
/// # Errors
/// For `--transport verbs`, why the device cannot be used (the memlock case names
/// `ulimit -l`).
pub(crate) fn setup(
    choice: TransportChoice,
    device: Option<&str>,
    slab_size: usize,
    slab_count: usize,
) -> Result<Option<VerbsSetup>, VerbsError> {
    match choice {
        TransportChoice::Tcp => Ok(None),
        TransportChoice::Verbs => open(device, slab_size, slab_count).map(Some),
        TransportChoice::Auto => match open(device, slab_size, slab_count) {
            Ok(setup) => Ok(Some(setup)),
            Err(e) => {
                info!("verbs transport unavailable, serving tcp only: {e}");
                Ok(None)
            }
        },
    }
}

fn open(device: Option<&str>, slab_size: usize, slab_count: usize) -> VerbsResult<VerbsSetup> {
    open_device(device, slab_size, slab_count).map_err(|e| match e {
        // ENOSYS: the kernel has no RDMA support at all, which "no devices" says better.
        VerbsError::GetDeviceList(io) if io.raw_os_error() == Some(libc::ENOSYS) => {
            VerbsError::NoDevices
        }
        other => other,
    })
}

fn open_device(
    device: Option<&str>,
    slab_size: usize,
    slab_count: usize,
) -> VerbsResult<VerbsSetup> {
    let lib = Loader::global()?;
    let (ctx, port) = match device {
        Some(name) => {
            let ctx = Context::open(lib, Some(name))?;
            let port = ctx.local_port(None, None)?;
            (ctx, port)
        }
        None => first_usable(&lib)?,
    };
    let attr = ctx.query_device()?;
    let too_big = |what: &str| VerbsError::Invalid(format!("{what} does not fit in 32 bits"));
    let slot_size = u32::try_from(slab_size).map_err(|_| too_big("--staging-slab-kib"))?;
    let slot_count = u32::try_from(slab_count).map_err(|_| too_big("the staging slab count"))?;
    let needed = u64::from(slot_size) * u64::from(slot_count);
    check_memlock(needed, MemlockLimit::current(), has_cap_ipc_lock())?;
    let pd = ctx.alloc_pd()?;
    let slots = pd.register_pool(slot_size, slot_count, Access::LocalOnly)?.into_slots();
    let positive = |v: i32| u32::try_from(v).unwrap_or(0).max(1);
    let backend = DeviceBackend {
        ports: PortCache::new(&ctx, port),
        max_send_sge: positive(attr.max_sge).min(MAX_SEND_SGE),
        max_qp_wr: positive(attr.max_qp_wr),
        max_cqe: positive(attr.max_cqe),
        ctx,
        pd,
    };
    info!(
        device = backend.ctx.name(),
        port = backend.ports.default.port_num,
        "verbs transport ready"
    );
    Ok(VerbsSetup { backend: Arc::new(backend), slots })
}

/// The first device with a port that can carry a connection.
fn first_usable(lib: &Arc<Loader>) -> VerbsResult<(Context, LocalPort)> {
    let names = device_names(lib)?;
    if names.is_empty() {
        return Err(VerbsError::NoDevices);
    }
    let mut why = Vec::new();
    for name in names {
        let opened = Context::open(Arc::clone(lib), Some(&name))
            .and_then(|ctx| ctx.local_port(None, None).map(|port| (ctx, port)));
        match opened {
            Ok(found) => return Ok(found),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(VerbsError::NoUsablePort { device: "any RDMA device".into(), reason: why.join("; ") })
}

/// The port and GID to use per GID kind a client may announce, found once at start-up:
/// looking them up reads the whole GID table (one query and two sysfs reads per entry),
/// too slow per connection. A GID that changes later (a new address on the netdev) is seen
/// after a restart.
#[derive(Debug)]
struct PortCache {
    default: LocalPort,
    by_kind: Vec<(GidKind, LocalPort)>,
}

impl PortCache {
    fn new(ctx: &Context, default: LocalPort) -> PortCache {
        let by_kind = [GidKind::Ib, GidKind::RoceV1, GidKind::RoceV2]
            .into_iter()
            .filter_map(|kind| {
                // Same port for every client; only the GID differs.
                ctx.local_port(Some(default.port_num), Some(kind)).ok().map(|p| (kind, p))
            })
            .collect();
        PortCache { default, by_kind }
    }

    /// A GID of the client's kind when there is one (an unknown kind is no preference).
    fn for_kind(&self, kind: GidKind) -> &LocalPort {
        self.by_kind.iter().find(|(k, _)| *k == kind).map_or(&self.default, |(_, p)| p)
    }
}

/// The device side of verbs connections.
pub(crate) struct DeviceBackend {
    ctx: Context,
    pd: ProtectionDomain,
    ports: PortCache,
    max_send_sge: u32,
    max_qp_wr: u32,
    max_cqe: u32,
}

impl std::fmt::Debug for DeviceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBackend").field("device", &self.ctx.name()).finish_non_exhaustive()
    }
}

impl VerbsBackend for DeviceBackend {
    fn device(&self) -> &str {
        self.ctx.name()
    }

    fn accept(
        &self,
        ex: &ClientExchange,
        max_inflight: u32,
    ) -> Result<(Endpoint, Arc<dyn Pusher>), String> {
        let port = self.ports.for_kind(ex.endpoint.gid_kind).clone();
        let max_send_wr = max_inflight.saturating_add(EXTRA_SEND_WR).min(self.max_qp_wr);
        // Only the last write of each answer is signaled, but every write may complete
        // with an error once the queue pair fails: room for all of them.
        let cq = self.ctx.create_cq(max_send_wr.saturating_add(1).min(self.max_cqe));
        let cq = cq.map_err(|e| e.to_string())?;
        // The sidecar posts no receives; one is the least every provider accepts.
        let caps = QpCaps { max_send_wr, max_recv_wr: 1, max_send_sge: self.max_send_sge };
        let qp = self.pd.create_qp(&cq, &cq, caps, port, Role::Server);
        let qp = qp.map_err(|e| e.to_string())?;
        let endpoint = qp.endpoint();
        let qp = qp.connect(&ex.endpoint).map_err(|e| e.to_string())?;
        let writer = QpWriter::new(qp, cq, max_send_wr, self.max_send_sge);
        Ok((endpoint, Arc::new(VerbsPusher::new(ex.pool, Arc::new(writer)))))
    }
}

/// Completions polled so far and the leases the NIC may still be reading.
#[derive(Default)]
struct CqState {
    /// Signaled writes polled by one waiter on behalf of another (every waiter polls the
    /// shared queue and takes whatever it finds).
    done: HashSet<u64>,
    /// Leases of posted writes, by the id of their last (signaled) work request. A waiter
    /// takes its lease back after the completion; one that gives up leaves it here, so its
    /// slabs go back to the pool only when the queue pair is destroyed and the NIC can no
    /// longer read them (another read could reuse the slabs too early otherwise, and the
    /// NIC would send that read's bytes to this client).
    in_flight: std::collections::HashMap<u64, super::staging::Lease>,
    /// The first failure; every later write on the connection fails with it.
    failed: Option<String>,
}

/// RDMA-writes answers over one connected queue pair and waits for their completions by
/// polling its completion queue with the verbs [`Backoff`] (cooperatively: whichever
/// waiter polls records the completions it finds for the others).
pub(crate) struct QpWriter {
    // Declared first so it is dropped first: destroying the queue pair stops the NIC from
    // reading the leases in `state`, which are dropped after it.
    qp: ConnectedQp,
    cq: CompletionQueue,
    max_sge: usize,
    /// One permit per send-queue entry: an unsignaled write holds its entry until the
    /// signaled write after it completes, so permits are returned only then.
    send_queue: Arc<Semaphore>,
    send_queue_len: u32,
    next_wr: AtomicU64,
    state: Mutex<CqState>,
}

impl std::fmt::Debug for QpWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpWriter").field("qp", &self.qp).finish_non_exhaustive()
    }
}

impl QpWriter {
    fn new(qp: ConnectedQp, cq: CompletionQueue, send_queue_len: u32, max_sge: u32) -> QpWriter {
        QpWriter {
            qp,
            cq,
            max_sge: max_sge.max(1) as usize,
            send_queue: Arc::new(Semaphore::new(send_queue_len as usize)),
            send_queue_len,
            next_wr: AtomicU64::new(1),
            state: Mutex::new(CqState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CqState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `reason` as the connection's failure and returns it as a fatal error.
    fn fail(&self, reason: String) -> PushError {
        let mut state = self.lock();
        let first = state.failed.get_or_insert(reason);
        PushError::Fatal(first.clone())
    }

    async fn write_lease(
        &self,
        addr: u64,
        rkey: u32,
        imm: u32,
        lease: super::staging::Lease,
    ) -> WriteResult {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let sges = lease.sges().map_err(|e| self.fail(e.to_string()))?;
        let parts: Vec<_> = sges.chunks(self.max_sge).collect();
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        if count > self.send_queue_len {
            // Only with tiny slabs and a huge read; nothing was written, the client falls
            // back for this read alone.
            return Err(PushError::Refused(crate::proto::Status::Internal));
        }
        if let Some(reason) = &self.lock().failed {
            return Err(PushError::Fatal(reason.clone()));
        }
        let permits = Arc::clone(&self.send_queue).acquire_many_owned(count);
        let permits = match tokio::time::timeout_at(deadline, permits).await {
            Ok(Ok(permits)) => permits,
            _ => return Err(self.fail(format!("send queue stayed full for {WRITE_DEADLINE:?}"))),
        };
        let first = self.next_wr.fetch_add(u64::from(count), Ordering::Relaxed);
        let last = first + u64::from(count) - 1;
        self.lock().in_flight.insert(last, lease);
        let mut at = addr;
        for (i, part) in parts.iter().enumerate() {
            let wr_id = first + i as u64;
            let posted = if wr_id == last {
                self.qp.post_write_with_imm(wr_id, part, at, rkey, imm, true)
            } else {
                self.qp.post_write(wr_id, part, at, rkey, false)
            };
            if let Err(e) = posted {
                permits.forget(); // what was posted keeps its entries until the QP dies
                return Err(self.fail(e.to_string()));
            }
            at += part.iter().map(|s| u64::from(s.len())).sum::<u64>();
        }
        match self.wait(last, deadline).await {
            Ok(()) => {
                // The NIC is done with the slabs: back to the pool.
                drop(self.lock().in_flight.remove(&last));
                drop(permits);
                Ok(())
            }
            Err(reason) => {
                permits.forget();
                Err(self.fail(reason))
            }
        }
    }

    /// Polls until the signaled write `wr_id` completes, the queue pair fails, or `deadline`.
    async fn wait(&self, wr_id: u64, deadline: Instant) -> Result<(), String> {
        let mut backoff = Backoff::default();
        loop {
            match self.poll_for(wr_id)? {
                Progress::Done => return Ok(()),
                Progress::Other => backoff = Backoff::default(),
                Progress::Nothing => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("RDMA write not completed within {WRITE_DEADLINE:?}"));
            }
            match backoff.next_pause() {
                Pause::Spin => std::hint::spin_loop(),
                // On the runtime, not the thread: other reads' tasks run meanwhile.
                Pause::Yield => tokio::task::yield_now().await,
                Pause::Sleep(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// One look at the completion queue, under the lock so completions are never lost
    /// between pollers.
    fn poll_for(&self, wr_id: u64) -> Result<Progress, String> {
        let mut state = self.lock();
        if let Some(reason) = &state.failed {
            return Err(reason.clone());
        }
        if state.done.remove(&wr_id) {
            return Ok(Progress::Done);
        }
        let mut got = Vec::new();
        self.cq.poll(&mut got, 16).map_err(|e| e.to_string())?;
        let mut progress = if got.is_empty() { Progress::Nothing } else { Progress::Other };
        for c in got {
            if let Err(e) = self.cq.check(c) {
                // The queue pair is in the error state now; every write on it fails.
                return Err(state.failed.get_or_insert(e.to_string()).clone());
            }
            if c.wr_id == wr_id {
                progress = Progress::Done;
            } else {
                state.done.insert(c.wr_id);
            }
        }
        Ok(progress)
    }
}

enum Progress {
    Done,
    Other,
    Nothing,
}

impl RemoteWriter for QpWriter {
    fn write(
        &self,
        addr: u64,
        rkey: u32,
        imm: u32,
        lease: super::staging::Lease,
    ) -> BoxFuture<'_, WriteResult> {
        Box::pin(self.write_lease(addr, rkey, imm, lease))
    }
}
