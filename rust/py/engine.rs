//! `Engine`: the client engine, with small typed values (`RangeOp`, `WholeOp`, `Needle`,
//! `OpFailure`) in place of the Rust op structs and results; and `Ticket`, the handle on a
//! submitted batch, for event loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::buffer::{PyDest, WritableView};
use super::failure::PyOpFailure;
use super::polled::PyPolled;
use super::to_py_err;
use crate::engine::{
    Engine, EngineConfig, Failure, RangeOp, Ticket, Transport, WholeNeedle, WholeOp,
};
use crate::error::Error;

/// One ranged read: `length` bytes of a needle's data from `offset`, into the caller's
/// buffer at `buf_offset`.
#[pyclass(frozen, name = "RangeOp", module = "seaweed_rdma._core")]
struct PyRangeOp {
    op: RangeOp,
}

#[pymethods]
impl PyRangeOp {
    #[new]
    #[pyo3(
        signature = (sidecar, volume, key, cookie, offset, length, buf_offset, jwt=String::new()),
        text_signature = "(sidecar, volume, key, cookie, offset, length, buf_offset, jwt='')"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        sidecar: String,
        volume: u32,
        key: u64,
        cookie: u32,
        offset: u64,
        length: u32,
        buf_offset: usize,
        jwt: String,
    ) -> Self {
        let op = RangeOp { sidecar, volume, key, cookie, offset, len: length, buf_offset, jwt };
        Self { op }
    }

    #[getter]
    fn sidecar(&self) -> &str {
        &self.op.sidecar
    }

    #[getter]
    fn length(&self) -> u32 {
        self.op.len
    }

    #[getter]
    fn buf_offset(&self) -> usize {
        self.op.buf_offset
    }

    fn __repr__(&self) -> String {
        let o = &self.op;
        format!(
            "RangeOp({:?}, volume={}, key={:#x}, offset={}, length={}, buf_offset={})",
            o.sidecar, o.volume, o.key, o.offset, o.len, o.buf_offset
        )
    }
}

/// One whole-needle read.
#[pyclass(frozen, name = "WholeOp", module = "seaweed_rdma._core")]
struct PyWholeOp {
    op: WholeOp,
}

#[pymethods]
impl PyWholeOp {
    #[new]
    #[pyo3(
        signature = (sidecar, volume, key, cookie, jwt=String::new()),
        text_signature = "(sidecar, volume, key, cookie, jwt='')"
    )]
    fn new(sidecar: String, volume: u32, key: u64, cookie: u32, jwt: String) -> Self {
        Self { op: WholeOp { sidecar, volume, key, cookie, jwt } }
    }

    #[getter]
    fn sidecar(&self) -> &str {
        &self.op.sidecar
    }
}

/// A needle's whole data as a sidecar sent it: `data`, the stored `crc` and the needle's
/// `flags`. Check `verify()` before using the bytes.
#[pyclass(frozen, name = "Needle", module = "seaweed_rdma._core")]
struct PyNeedle {
    #[pyo3(get)]
    data: Py<PyBytes>,
    #[pyo3(get)]
    crc: u32,
    #[pyo3(get)]
    flags: u8,
}

#[pymethods]
impl PyNeedle {
    /// Whether `data` matches the stored CRC32-C (either stored form).
    fn verify(&self, py: Python<'_>) -> bool {
        let data = self.data.bind(py).as_bytes();
        py.detach(|| crate::needle::crc_matches(data, self.crc))
    }
}

/// Reads needle bytes from sidecars into Python buffers; every call releases the GIL while
/// it waits, and may be made from many threads at once.
#[pyclass(frozen, name = "Engine", module = "seaweed_rdma._core")]
pub(super) struct PyEngine {
    // Shared with the native FUSE loop's threads, which read through the same pools.
    pub(super) inner: Arc<Engine>,
}

#[pymethods]
impl PyEngine {
    /// `Engine(timeout_ms=5000, connect_timeout_ms=1000, max_inflight=128, conns_per_sidecar=2,
    /// transport="auto", verbs_slot_size=1 MiB, verbs_slots=64, busy_poll_us=50,
    /// pinned_budget=64 MiB, idle_timeout_ms=60000, max_conns=128)`.
    /// `transport`: "auto" (verbs where this host and the sidecar can, else tcp), "tcp", or
    /// "verbs" (ops fail with reason "verbs" where this host cannot). `verbs_slots` is per
    /// connection: each verbs connection registers up to that many slots of its own, carved
    /// from one process-wide pinned allocation of `pinned_budget` bytes.
    /// `busy_poll_us`: how long a small read on the calling thread keeps checking for its
    /// answer before it sleeps (0: never). Connections unused for `idle_timeout_ms` are
    /// closed (0: never); past `max_conns` open ones, the least recently used idle one is
    /// closed first.
    #[new]
    #[pyo3(signature = (
        timeout_ms=5000,
        connect_timeout_ms=1000,
        max_inflight=128,
        conns_per_sidecar=2,
        transport="auto",
        verbs_slot_size=1048576,
        verbs_slots=64,
        busy_poll_us=50,
        pinned_budget=67108864,
        idle_timeout_ms=60000,
        max_conns=128,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        timeout_ms: u64,
        connect_timeout_ms: u64,
        max_inflight: u32,
        conns_per_sidecar: usize,
        transport: &str,
        verbs_slot_size: u32,
        verbs_slots: u32,
        busy_poll_us: u64,
        pinned_budget: u64,
        idle_timeout_ms: u64,
        max_conns: usize,
    ) -> PyResult<Self> {
        let Some(transport) = Transport::parse(transport) else {
            return Err(PyValueError::new_err(format!(
                "transport must be \"auto\", \"tcp\" or \"verbs\", not {transport:?}"
            )));
        };
        let cfg = EngineConfig {
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            max_inflight,
            conns_per_sidecar,
            transport,
            verbs_slot_size,
            verbs_slots,
            busy_poll: Duration::from_micros(busy_poll_us),
            pinned_budget,
            idle_timeout: Duration::from_millis(idle_timeout_ms),
            max_conns,
            ..EngineConfig::default()
        };
        Ok(Self { inner: Arc::new(Engine::new(cfg).map_err(to_py_err)?) })
    }

    /// Fills `buffer` (any writable C-contiguous buffer: bytearray, memoryview, mmap,
    /// numpy array...) from the sidecars; returns, per op, None when delivered or an
    /// `OpFailure`.
    fn read_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        ops: Vec<Bound<'_, PyRangeOp>>,
    ) -> PyResult<Vec<Option<PyOpFailure>>> {
        let ops = range_ops(&ops);
        let view = WritableView::new(buffer)?;
        let target: &mut [u8] = match view.addr {
            0 => &mut [],
            addr => {
                // SAFETY: `view._export` holds a writable, contiguous buffer export of `len`
                // bytes at `addr`, which keeps the memory alive and stops the exporter from
                // resizing it until `view` is dropped, after the last use of `target`. As with
                // `socket.recv_into`, callers must not touch the buffer from other threads
                // while the call runs; the engine writes to it only inside `read_into`.
                unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, view.len) }
            }
        };
        let out = py.detach(|| self.inner.read_into(target, &ops));
        drop(view);
        Ok(out.iter().map(|r| r.as_ref().err().map(PyOpFailure::from_failure)).collect())
    }

    /// Whole needles: per op a `Needle` (verify it before use) or an `OpFailure`.
    fn read_whole<'py>(
        &self,
        py: Python<'py>,
        ops: Vec<Bound<'py, PyWholeOp>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let ops = whole_ops(&ops);
        let out = py.detach(|| self.inner.read_whole(&ops));
        out.iter().map(|r| whole_result(py, r)).collect()
    }

    /// Starts `read_into` on the engine's threads and returns a `Ticket` at once. The
    /// ticket keeps `buffer` exported (so alive and not resizable) until the batch is over;
    /// do not read or write it before `results()`. A ticket dropped early leaves the
    /// buffer to the batch, which may write it until its deadline.
    fn submit_read_into(
        &self,
        buffer: &Bound<'_, PyAny>,
        ops: Vec<Bound<'_, PyRangeOp>>,
    ) -> PyResult<PyTicket> {
        let dest = WritableView::new(buffer)?.into_dest();
        let ticket = self.inner.submit_read_into(dest, range_ops(&ops))?;
        Ok(PyTicket { pending: Pending::Range(ticket) })
    }

    /// Sends a small batch (one sidecar, at most 64 KiB) on an idle connection from this
    /// thread and returns a `PolledRead` for an event loop to drive: wait until its
    /// `fileno()` is readable, then `poll()`. `None` when the batch does not qualify (use
    /// `submit_read_into`). The buffer is written only inside `poll()`.
    fn start_polled(
        &self,
        buffer: &Bound<'_, PyAny>,
        ops: Vec<Bound<'_, PyRangeOp>>,
    ) -> PyResult<Option<PyPolled>> {
        let dest = WritableView::new(buffer)?.into_dest();
        Ok(self.inner.start_polled(dest, range_ops(&ops)).ok().map(PyPolled::new))
    }

    /// Starts `read_whole` on the engine's threads and returns a `Ticket` at once.
    fn submit_read_whole(&self, ops: Vec<Bound<'_, PyWholeOp>>) -> PyResult<PyTicket> {
        let ticket = self.inner.submit_read_whole(whole_ops(&ops))?;
        Ok(PyTicket { pending: Pending::Whole(ticket) })
    }

    /// Round-trip time to `addr` in seconds; raises `Unreachable` when no PONG comes.
    fn ping(&self, py: Python<'_>, addr: &str) -> PyResult<f64> {
        let addr = addr.to_owned();
        match py.detach(|| self.inner.ping(&addr)) {
            Ok(rtt) => Ok(rtt.as_secs_f64()),
            Err(why) => Err(to_py_err(Error::Sidecar { addr, reason: why.to_string() })),
        }
    }

    /// Closes every connection and stops the engine's threads (waiting, without the GIL,
    /// up to `timeout_s` for batches still running). Later reads fail with reason
    /// "closed". Idempotent.
    #[pyo3(signature = (timeout_s=2.0))]
    fn close(&self, py: Python<'_>, timeout_s: f64) {
        let wait = Duration::try_from_secs_f64(timeout_s.max(0.0)).unwrap_or(Duration::ZERO);
        py.detach(|| self.inner.close(wait));
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// One dict per sidecar: addr, up, failures, retry_in (seconds or None), transport,
    /// server_id.
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .health()
            .into_iter()
            .map(|h| {
                let d = PyDict::new(py);
                d.set_item("addr", h.addr)?;
                d.set_item("up", h.up)?;
                d.set_item("failures", h.failures)?;
                d.set_item("retry_in", h.retry_in.map(|t| t.as_secs_f64()))?;
                d.set_item("transport", h.transport)?;
                d.set_item("server_id", h.server_id)?;
                Ok(d)
            })
            .collect()
    }

    /// Counters since the engine was created, `failures_by_reason` and
    /// `bytes_by_transport` ("tcp", "verbs") as nested dicts.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("batches", s.batches)?;
        d.set_item("lane_batches", s.lane_batches)?;
        d.set_item("polled_batches", s.polled_batches)?;
        d.set_item("reads", s.reads)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("bytes_by_transport", s.bytes_by_transport)?;
        d.set_item("whole_reads", s.whole_reads)?;
        d.set_item("failures_by_reason", s.failures_by_reason)?;
        d.set_item("connects", s.connects)?;
        d.set_item("reconnects", s.reconnects)?;
        d.set_item("marked_down", s.marked_down)?;
        d.set_item("aborted", s.aborted)?;
        d.set_item("sidecars", s.sidecars)?;
        d.set_item("open_conns", s.open_conns)?;
        d.set_item("reaped", s.reaped)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("pinned_evicted", s.pinned_evicted)?;
        d.set_item("over_cap", s.over_cap)?;
        d.set_item("slot_waits", s.slot_waits)?;
        d.set_item("pinned_bytes", s.pinned_bytes)?;
        d.set_item("pinned_budget", s.pinned_budget)?;
        d.set_item("pinned_leases", s.pinned_leases)?;
        Ok(d)
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyTicket>()?;
    m.add_class::<PyPolled>()?;
    m.add_class::<PyRangeOp>()?;
    m.add_class::<PyWholeOp>()?;
    m.add_class::<PyNeedle>()?;
    m.add_class::<PyOpFailure>()?;
    m.add_function(wrap_pyfunction!(writable_bytes, m)?)
}

fn range_ops(ops: &[Bound<'_, PyRangeOp>]) -> Vec<RangeOp> {
    ops.iter().map(|o| o.get().op.clone()).collect()
}

fn whole_ops(ops: &[Bound<'_, PyWholeOp>]) -> Vec<WholeOp> {
    ops.iter().map(|o| o.get().op.clone()).collect()
}

/// A `Needle`, or the `OpFailure`.
fn whole_result<'py>(
    py: Python<'py>,
    r: &Result<WholeNeedle, Failure>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match r {
        Ok(n) => {
            let needle = PyNeedle {
                data: PyBytes::new(py, &n.data).unbind(),
                crc: n.crc,
                flags: n.needle_flags,
            };
            Bound::new(py, needle)?.into_any()
        }
        Err(why) => Bound::new(py, PyOpFailure::from_failure(why))?.into_any(),
    })
}

/// A new `bytes` object of `size` bytes that nobody has seen yet, and a writable memoryview
/// of its storage, so a read can fill the result in place instead of filling a bytearray
/// and copying it. The view keeps the bytes alive. Every byte must be written before the
/// bytes object is handed out (its contents start undefined), and the view released.
#[pyfunction]
fn writable_bytes(py: Python<'_>, size: usize) -> PyResult<(Bound<'_, PyBytes>, Bound<'_, PyAny>)> {
    let len = pyo3::ffi::Py_ssize_t::try_from(size)
        .map_err(|_| PyValueError::new_err("size too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `len` bytes;
    // the call returns a new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` turns into an owned `Bound` or that error.
    let bytes = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
        )?
    }
    .cast_into::<PyBytes>()?;
    // `as_bytes` points at the object's own storage, which never moves while it lives.
    let addr = bytes.as_bytes().as_ptr() as usize;
    if advise_huge_pages(addr, size) {
        prefault_behind(&bytes, addr, size);
    }
    let view = if size == 0 {
        py.import("builtins")?
            .getattr("memoryview")?
            .call1((pyo3::types::PyByteArray::new(py, &[]),))?
    } else {
        let ctypes = py.import("ctypes")?;
        let array = ctypes.getattr("c_char")?.call_method1("__mul__", (size,))?;
        let array = array.call_method1("from_address", (addr,))?;
        // The array points into `bytes` without owning it; this reference keeps it alive
        // for as long as the array, and so any view of it, lives.
        array.setattr("_owner", &bytes)?;
        py.import("builtins")?
            .getattr("memoryview")?
            .call1((array,))?
            .call_method1("cast", ("B",))?
    };
    Ok((bytes, view))
}

/// Asks for transparent huge pages over a large fresh buffer: the engine's first writes
/// into it fault pages in one by one, and with 4 KiB pages a 256 MiB read takes 65,536
/// faults (a third of its time on a fast path); with 2 MiB pages, 128. Advisory: a kernel
/// without THP (or with it off) just ignores it. Returns whether the buffer is that large.
fn advise_huge_pages(addr: usize, size: usize) -> bool {
    const HUGE: usize = 2 << 20;
    if size < 4 * HUGE {
        return false;
    }
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + size) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the `size` bytes at `addr`, which the new bytes
        // object owns and nobody else has seen; MADV_HUGEPAGE changes how the kernel backs
        // the range, never its contents or mapping, and on failure changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    true
}

/// Faults a large new buffer in on a helper thread, from its end (`pages.rs`), while the
/// read that fills it runs: the kernel's zeroing of fresh pages then overlaps the network
/// instead of stalling the engine's receives one page at a time. The thread holds a
/// reference to `bytes`, so the memory lives until it is done (the reference is dropped
/// without the GIL; pyo3 releases it when a thread next holds it). If no thread can be
/// started the read faults the pages in itself, as before.
fn prefault_behind(bytes: &Bound<'_, PyBytes>, addr: usize, size: usize) {
    let keep = bytes.clone().unbind();
    let spawned =
        std::thread::Builder::new().name("seaweed-rdma-prefault".into()).spawn(move || {
            crate::pages::populate_from_end(addr, size);
            drop(keep);
        });
    if let Err(e) = spawned {
        tracing::debug!("no prefault thread: {e}");
    }
}

/// The handle on a submitted batch.
///
/// `fileno()` is an eventfd that turns readable once the results are in: an event loop waits
/// for it (`trio.lowlevel.wait_readable(t.fileno())`), then calls `results()`, which never
/// blocks. Reading the eventfd is optional.
#[pyclass(frozen, name = "Ticket", module = "seaweed_rdma._core")]
struct PyTicket {
    pending: Pending,
}

enum Pending {
    Range(Ticket<(), PyDest>),
    Whole(Ticket<WholeNeedle>),
}

impl Pending {
    fn done(&self) -> bool {
        match self {
            Pending::Range(t) => t.done(),
            Pending::Whole(t) => t.done(),
        }
    }
}

#[pymethods]
impl PyTicket {
    /// The eventfd to wait on; open while the ticket lives.
    fn fileno(&self) -> i32 {
        match &self.pending {
            Pending::Range(t) => t.fileno(),
            Pending::Whole(t) => t.fileno(),
        }
    }

    /// Whether the batch has finished.
    fn done(&self) -> bool {
        self.pending.done()
    }

    /// Blocks, without the GIL, until the batch has finished or `timeout_s` seconds have
    /// passed (negative: none; infinite: no limit); whether it finished.
    fn wait(&self, py: Python<'_>, timeout_s: f64) -> bool {
        let until = Duration::try_from_secs_f64(timeout_s.max(0.0))
            .ok()
            .and_then(|d| Instant::now().checked_add(d));
        py.detach(|| match &self.pending {
            Pending::Range(t) => t.wait_until(until),
            Pending::Whole(t) => t.wait_until(until),
        })
    }

    /// Per op: for `submit_read_into`, None when delivered or an `OpFailure`; for
    /// `submit_read_whole`, a `Needle` or an `OpFailure`. Raises RuntimeError before the
    /// batch has finished. A read_into ticket releases its buffer here, so it may be
    /// resized again.
    fn results<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let not_done = || PyRuntimeError::new_err("the batch has not finished yet");
        match &self.pending {
            Pending::Range(t) => {
                let results = t.results().ok_or_else(not_done)?;
                drop(t.take_buffer()); // the GIL is held: the export goes now
                results
                    .iter()
                    .map(|r| match r {
                        Ok(()) => Ok(py.None().into_bound(py)),
                        Err(why) => Ok(Bound::new(py, PyOpFailure::from_failure(why))?.into_any()),
                    })
                    .collect()
            }
            Pending::Whole(t) => {
                t.results().ok_or_else(not_done)?.iter().map(|r| whole_result(py, r)).collect()
            }
        }
    }
}

impl Drop for PyTicket {
    /// Never waits: a ticket is dropped on an event loop's thread when its task is
    /// cancelled, and a wait there would stall every other task. The batch owns its
    /// destination (`PyDest`) until it finishes, so the memory stays valid whatever the
    /// order; the batch drops the export when it is done (pyo3 then defers the decref to
    /// the next time a thread holds the GIL). Until then the caller must not reuse the
    /// buffer, which the batch may still write.
    fn drop(&mut self) {
        if let Pending::Range(ticket) = &self.pending {
            drop(ticket.take_buffer()); // finished: with the GIL held, the export goes now
        }
    }
}
