//! `NativeReads`: the native FUSE read loop (`crate::fuse`) spliced into pyfuse3's session.

use std::sync::Mutex;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::engine::PyEngine;
use super::plan::PLAN_WITHOUT_GIL;
use super::to_py_err;
use crate::fuse::{
    attach, AheadConfig, Attached, Attr, LoopConfig, Named, NativeFile, Route, MAX_MESSAGE,
};

// The signature below spells the default out, for Python's introspection.
const _: () = assert!(MAX_MESSAGE == 1_114_112);

/// The smallest message bound: a 64 KiB WRITE or READ reply and its headers.
const MIN_MESSAGE: usize = (64 << 10) + 4096;
use crate::plan::ChunkSpec;

/// A chunk of a file and where to read it: the filer's chunk fields (`offset`, `size`,
/// `modified_ts_ns`, `whole`) and the needle behind it on `sidecar` (empty: no sidecar can
/// serve it, so its READs go to pyfuse3).
#[pyclass(frozen, name = "ChunkRoute", module = "seaweed_rdma._core")]
struct PyChunkRoute {
    #[pyo3(get)]
    offset: i64,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    modified_ts_ns: i64,
    #[pyo3(get)]
    whole: bool,
    #[pyo3(get)]
    sidecar: String,
    #[pyo3(get)]
    volume: u32,
    #[pyo3(get)]
    key: u64,
    #[pyo3(get)]
    cookie: u32,
    #[pyo3(get)]
    jwt: String,
}

#[pymethods]
impl PyChunkRoute {
    #[new]
    #[pyo3(
        signature = (offset, size, modified_ts_ns, whole, sidecar, volume, key, cookie, jwt=String::new()),
        text_signature = "(offset, size, modified_ts_ns, whole, sidecar, volume, key, cookie, jwt='')"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        offset: i64,
        size: u64,
        modified_ts_ns: i64,
        whole: bool,
        sidecar: String,
        volume: u32,
        key: u64,
        cookie: u32,
        jwt: String,
    ) -> Self {
        PyChunkRoute { offset, size, modified_ts_ns, whole, sidecar, volume, key, cookie, jwt }
    }

    fn __repr__(&self) -> String {
        format!(
            "ChunkRoute(offset={}, size={}, sidecar={:?}, volume={}, key={:#x})",
            self.offset, self.size, self.sidecar, self.volume, self.key
        )
    }
}

impl PyChunkRoute {
    /// The plan's chunk and, where a sidecar serves it, the engine's route.
    fn to_parts(&self) -> crate::Result<(ChunkSpec, Option<Route>)> {
        let spec = ChunkSpec::from_filer(self.offset, self.size, self.modified_ts_ns, self.whole)?;
        let route = (!self.sidecar.is_empty()).then(|| Route {
            sidecar: self.sidecar.clone(),
            volume: self.volume,
            key: self.key,
            cookie: self.cookie,
            jwt: self.jwt.clone(),
        });
        Ok((spec, route))
    }
}

/// READs of registered handles answered on Rust threads from the engine; every other
/// request goes on to pyfuse3 unchanged.
#[pyclass(frozen, name = "NativeReads", module = "seaweed_rdma._core")]
struct PyNativeReads {
    attached: Mutex<Attached>,
}

impl PyNativeReads {
    fn with<T>(&self, f: impl FnOnce(&mut Attached) -> T) -> T {
        f(&mut self.attached.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[pymethods]
impl PyNativeReads {
    /// `NativeReads(engine, session_fd, threads=4, op_bytes=1 MiB, max_message=1 MiB + 64
    /// KiB)`: splices the loop into the mounted session whose `/dev/fuse` descriptor is
    /// `session_fd`, before pyfuse3's loop has read from it. `max_message` bounds every
    /// message between the kernel and libfuse (INIT's `max_write` and `max_pages` are
    /// lowered to fit). With `jwt_key` (the cluster's `[jwt.signing.read] key`), each read
    /// carries a token minted from it. A handle read in order has up to `read_ahead` bytes
    /// read ahead of it (0: none), in windows of `read_ahead_unit` bytes, and all handles
    /// together hold at most `read_ahead_total` bytes. Raises `OSError` when it cannot
    /// (nothing changed).
    #[new]
    #[pyo3(signature = (engine, session_fd, threads=4, op_bytes=1048576, max_message=1114112, jwt_key=None, read_ahead=16777216, read_ahead_total=67108864, read_ahead_unit=4194304))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        engine: &Bound<'_, PyEngine>,
        session_fd: i32,
        threads: usize,
        op_bytes: u32,
        max_message: usize,
        jwt_key: Option<String>,
        read_ahead: usize,
        read_ahead_total: usize,
        read_ahead_unit: usize,
    ) -> PyResult<Self> {
        if max_message < MIN_MESSAGE {
            return Err(PyValueError::new_err(format!(
                "max_message must be at least {MIN_MESSAGE} bytes, not {max_message}"
            )));
        }
        let engine = engine.get().inner.clone();
        let read_ahead =
            AheadConfig { per_handle: read_ahead, total: read_ahead_total, unit: read_ahead_unit };
        let cfg = LoopConfig {
            op_bytes: op_bytes.max(1),
            max_message,
            read_ahead,
            ..LoopConfig::default()
        };
        let attached = py
            .detach(|| attach(engine, session_fd, threads, cfg, jwt_key.filter(|k| !k.is_empty())))
            .map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string())))?;
        Ok(Self { attached: Mutex::new(attached) })
    }

    /// Answers READs of handle `fh` natively from now on, from `chunks` (`ChunkRoute`s) of
    /// a file whose entry says `attr_size` bytes.
    fn register(
        &self,
        py: Python<'_>,
        fh: u64,
        chunks: Vec<PyRef<'_, PyChunkRoute>>,
        attr_size: u64,
    ) -> PyResult<()> {
        let file = plan(py, &chunks, attr_size)?;
        self.with(|a| a.native().files().insert(fh, file));
        Ok(())
    }

    /// Answers read-only OPENs of `inode` natively from now on (and the RELEASEs of the
    /// handles so opened), reading `chunks` of a file of `attr_size` bytes; the first such
    /// OPEN keeps the kernel's pages when `keep_cache`, later ones always do. With
    /// `lookup` = `(parent, name, attrs, entry_timeout, attr_timeout)`, LOOKUPs of `name`
    /// in directory inode `parent` are answered natively too, giving the kernel `attrs`
    /// (size, blocks, atime_ns, mtime_ns, ctime_ns, mode, nlink, uid, gid, rdev,
    /// blksize) for the timeouts (seconds); take the references those give the kernel
    /// with `take_lookups`.
    #[pyo3(signature = (inode, chunks, attr_size, keep_cache, lookup=None))]
    fn offer(
        &self,
        py: Python<'_>,
        inode: u64,
        chunks: Vec<PyRef<'_, PyChunkRoute>>,
        attr_size: u64,
        keep_cache: bool,
        lookup: Option<LookupArgs>,
    ) -> PyResult<()> {
        let named = lookup.map(named).transpose()?;
        let file = plan(py, &chunks, attr_size)?;
        self.with(|a| a.native().opens().offer(inode, file, keep_cache, named));
        Ok(())
    }

    /// The kernel references to `inode` that LOOKUPs answered natively gave it since the
    /// last call: count them as the mount's own before acting on a FORGET of `inode`.
    fn take_lookups(&self, inode: u64) -> u64 {
        self.with(|a| a.native().opens().take_lookups(inode))
    }

    /// Stops opening `inode` natively, and hands over every handle of it opened natively
    /// and still open (returned): their RELEASEs come to pyfuse3 from now on, their READs
    /// stay native while registered (`unregister` them like any handle).
    fn withdraw(&self, inode: u64) -> Vec<u64> {
        self.with(|a| a.native().opens().withdraw(inode))
    }

    /// Hands over handle `fh` opened natively: its inode, or None when it is not the
    /// loop's (never opened natively, released, or handed over already).
    fn adopt(&self, fh: u64) -> Option<u64> {
        self.with(|a| a.native().opens().adopt(fh))
    }

    /// Stops answering `fh` natively; whether it was registered.
    fn unregister(&self, fh: u64) -> bool {
        self.with(|a| a.native().files().remove(fh))
    }

    /// An eventfd that turns readable once the kernel ended the session (unmounted).
    fn ended_fileno(&self) -> i32 {
        self.with(|a| a.native().ended_fd())
    }

    /// Whether the kernel ended the session.
    #[getter]
    fn ended(&self) -> bool {
        self.with(|a| a.native().has_ended())
    }

    /// Counters: reads, bytes (answered natively), unregistered, declined, failed (sent to
    /// pyfuse3 instead), forwarded (all requests sent to pyfuse3), split (of those, READs sent in
    /// 64 KiB pieces), replies, errors,
    /// engine_us and reply_us (time native READs spent fetching and replying, summed),
    /// most_at_once (native READs in the engine at once, at most), flushes (FLUSHes of
    /// registered handles answered natively), opens and releases (of offered inodes and
    /// their handles, answered natively), lookups (of offered names, answered natively),
    /// ioctls (refused natively, as libfuse would: pyfuse3 has no such operation),
    /// registered (handles now), offered (inodes now), named (names looked up natively
    /// now), native_open (handles opened natively and not yet released or handed over).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, registered, offered, named, native_open) = self.with(|a| {
            let (n, o) = (a.native(), a.native().opens());
            (n.stats(), n.files().len(), o.offered(), o.named(), o.open_handles())
        });
        let d = PyDict::new(py);
        d.set_item("reads", s.reads)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("unregistered", s.unregistered)?;
        d.set_item("declined", s.declined)?;
        d.set_item("failed", s.failed)?;
        d.set_item("forwarded", s.forwarded)?;
        d.set_item("split", s.split)?;
        d.set_item("replies", s.replies)?;
        d.set_item("errors", s.errors)?;
        d.set_item("engine_us", s.engine_us)?;
        d.set_item("reply_us", s.reply_us)?;
        d.set_item("most_at_once", s.most_at_once)?;
        d.set_item("flushes", s.flushes)?;
        d.set_item("opens", s.opens)?;
        d.set_item("releases", s.releases)?;
        d.set_item("lookups", s.lookups)?;
        d.set_item("ioctls", s.ioctls)?;
        d.set_item("registered", registered)?;
        d.set_item("offered", offered)?;
        d.set_item("named", named)?;
        d.set_item("native_open", native_open)?;
        Ok(d)
    }

    /// Read-ahead counters: windows, window_bytes (started), hits, hit_bytes (READs answered
    /// from windows), waits (of those, READs that waited for their window), misses (READs
    /// of a handle read in order that no window held), failed (windows that did not
    /// deliver), unused_bytes (windows dropped unread), capped (windows not started for
    /// want of budget), held (bytes in window buffers now), most_held, spare (bytes of
    /// buffers kept for reuse while anything is held).
    fn read_ahead_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|a| a.native().read_ahead_stats());
        let d = PyDict::new(py);
        d.set_item("windows", s.windows)?;
        d.set_item("window_bytes", s.window_bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("hit_bytes", s.hit_bytes)?;
        d.set_item("waits", s.waits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("failed", s.failed)?;
        d.set_item("unused_bytes", s.unused_bytes)?;
        d.set_item("capped", s.capped)?;
        d.set_item("held", s.held)?;
        d.set_item("most_held", s.most_held)?;
        d.set_item("spare", s.spare)?;
        Ok(d)
    }

    /// Puts pyfuse3's descriptor back and stops the threads; call it after pyfuse3's
    /// loop returned and before `pyfuse3.close()`. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.with(Attached::detach));
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChunkRoute>()?;
    m.add_class::<PyNativeReads>()
}

/// `offer`'s `lookup`: parent inode, name, attributes, entry and attribute timeouts.
type LookupArgs = (u64, Vec<u8>, [u64; 11], f64, f64);

/// A LOOKUP answer from `offer`'s `lookup` argument.
fn named((parent, name, a, entry_timeout, attr_timeout): LookupArgs) -> PyResult<Named> {
    let small = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| PyValueError::new_err(format!("{what} {v} is too large")))
    };
    let valid = |s: f64| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|e| PyValueError::new_err(format!("timeout {s}: {e}")))
    };
    if name.is_empty() || name.contains(&0) || name.contains(&b'/') {
        return Err(PyValueError::new_err(format!("{name:?} is not a name")));
    }
    let attr = Attr {
        size: a[0],
        blocks: a[1],
        atime_ns: a[2],
        mtime_ns: a[3],
        ctime_ns: a[4],
        mode: small(a[5], "mode")?,
        nlink: small(a[6], "nlink")?,
        uid: small(a[7], "uid")?,
        gid: small(a[8], "gid")?,
        rdev: small(a[9], "rdev")?,
        blksize: small(a[10], "blksize")?,
    };
    Ok(Named {
        parent,
        name: name.into(),
        attr,
        entry_valid: valid(entry_timeout)?,
        attr_valid: valid(attr_timeout)?,
    })
}

/// The file `chunks` (`ChunkRoute`s) of `attr_size` bytes make: converted to owned values
/// under the GIL, and planned without it when it has many chunks. Planning does no I/O and
/// a small file's takes microseconds, less than taking the GIL back can cost while another
/// thread runs Python (up to the switch interval, 5 ms): a directory's files offered in a
/// row paid that per file.
fn plan(
    py: Python<'_>,
    chunks: &[PyRef<'_, PyChunkRoute>],
    attr_size: u64,
) -> PyResult<NativeFile> {
    let parts = chunks.iter().map(|c| c.to_parts()).collect::<crate::Result<Vec<_>>>();
    let planned = if chunks.len() > PLAN_WITHOUT_GIL {
        py.detach(move || NativeFile::new(parts?, attr_size))
    } else {
        parts.and_then(|p| NativeFile::new(p, attr_size))
    };
    planned.map_err(to_py_err)
}
