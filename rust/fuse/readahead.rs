//! Read-ahead across chunks for handles read in order.
//!
//! # Why
//! The kernel keeps at most a few READs of 1 MiB in flight for a sequential reader, so the
//! sidecar's `pread`s of the volume file keep the disk's queue 1-2 deep (measured with
//! `/proc/diskstats` in `benches/mount_seq_cpu.py`), while the disk gives its full speed
//! only with many requests in flight. So once a handle has read in order for two READs,
//! its next windows (`unit` bytes each, planned like any READ) are fetched through the
//! engine's submitted batches and kept until the kernel asks for them: up to `per_handle`
//! bytes ahead of the reader, each window's ops in flight at once.
//!
//! # Correctness and memory
//! The state lives in the handle's [`NativeFile`](super::NativeFile), whose plan is fixed
//! for the life of the open: a window holds the very needles a READ of the same range would
//! read, so it can never be staler than the direct path. It goes when the handle is
//! unregistered (release, or a writer taking the file). Every window's buffer is counted
//! against one budget per loop (`total` bytes) from the moment it is reserved until the
//! buffer is dropped, which for a window dropped in flight is when its batch ends (the batch
//! owns the buffer until then; see `engine::ticket`): so `held` returns to 0 once nothing is
//! read, and can never pass `total`. Beyond it, up to `MAX_SPARES` buffers of passed
//! windows are kept for the next ones while anything is held, and freed once nothing is.
//! A READ that jumps elsewhere drops the handle's windows.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::files::{NativeFile, Planned};
use super::tokens::Tokens;
use crate::engine::{DestBuffer, Engine, Ticket};
use crate::fid::FileId;

/// Bytes a READ may lag behind the end of a window and still find it: READs of one
/// read-ahead burst reach the loop's threads slightly out of order.
const KEEP_BEHIND: u64 = 2 << 20;

/// Window buffers kept for the next windows while anything is read ahead: a fresh buffer
/// costs a page fault per 4 KiB on first touch, more CPU than the copy it saves.
const MAX_SPARES: usize = 4;

/// How far ahead of sequential readers the loop reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadConfig {
    /// Bytes fetched ahead of one handle at most (0: no read-ahead).
    pub per_handle: usize,
    /// Bytes held by read-ahead across all handles at most.
    pub total: usize,
    /// Bytes of one window (one submitted batch).
    pub unit: usize,
}

impl Default for AheadConfig {
    fn default() -> Self {
        AheadConfig { per_handle: 16 << 20, total: 64 << 20, unit: 4 << 20 }
    }
}

/// Read-ahead counters since the loop started, and the bytes held now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AheadStats {
    /// Windows started.
    pub windows: u64,
    /// Bytes those asked for.
    pub window_bytes: u64,
    /// READs answered from windows.
    pub hits: u64,
    /// Bytes those carried.
    pub hit_bytes: u64,
    /// Of the hits, READs that waited for their window's batch to finish.
    pub waits: u64,
    /// READs of a handle being read in order that no window covered.
    pub misses: u64,
    /// Windows whose batch did not deliver every byte (their READs went the direct way).
    pub failed: u64,
    /// Bytes of windows dropped before any READ used them.
    pub unused_bytes: u64,
    /// Windows not started because the loop's budget was spent.
    pub capped: u64,
    /// Bytes held in window buffers now (in flight or fetched).
    pub held: u64,
    /// Most bytes held at once.
    pub most_held: u64,
    /// Bytes of buffers kept for reuse now (none once nothing is held).
    pub spare: u64,
}

#[derive(Debug, Default)]
struct Counters {
    windows: AtomicU64,
    window_bytes: AtomicU64,
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    waits: AtomicU64,
    misses: AtomicU64,
    failed: AtomicU64,
    unused_bytes: AtomicU64,
    capped: AtomicU64,
    held: AtomicUsize,
    most_held: AtomicUsize,
    /// Buffers of dropped windows, for the next ones; emptied whenever `held` drops to 0.
    spares: Mutex<Vec<Vec<u8>>>,
}

impl Counters {
    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The loop's read-ahead: its settings, budget and counters.
#[derive(Debug)]
pub struct ReadAhead {
    cfg: AheadConfig,
    counters: Arc<Counters>,
}

/// A window's buffer, counted in its loop's budget until dropped.
#[derive(Debug)]
pub struct Held {
    buf: Vec<u8>,
    counters: Arc<Counters>,
}

impl DestBuffer for Held {
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // Under the lock, so that the last window's drop empties the spares for good.
        let mut spares = self.counters.spares();
        let left = self.counters.held.fetch_sub(buf.len(), Ordering::AcqRel) - buf.len();
        if left == 0 {
            spares.clear();
        } else if spares.len() < MAX_SPARES {
            spares.push(buf);
        }
    }
}

/// A window's fetch, once started.
pub trait InFlight: Send + Sync + std::fmt::Debug {
    /// Waits until it ends; the buffer when every byte was delivered.
    fn finish(&self) -> Option<Held>;
    /// Whether it has ended (so `finish` will not wait).
    fn done(&self) -> bool;
}

/// Where windows come from: the handle's file, planned and fetched.
pub trait Source {
    /// Bytes readable ahead from `at`, at most `want` (0 at the end of the file), or `None`
    /// when that range cannot be read natively (a READ of it would be declined).
    fn span(&self, at: u64, want: usize) -> Option<usize>;
    /// Starts fetching `buf.len()` bytes from `at` into `buf`; `None` when it cannot start.
    fn start(&self, at: u64, buf: Held) -> Option<Box<dyn InFlight>>;
}

/// One window: `len` bytes of the file from `start`.
#[derive(Debug)]
struct Window {
    start: u64,
    len: usize,
    flight: Box<dyn InFlight>,
    data: OnceLock<Option<Held>>,
    used: AtomicBool,
    counters: Arc<Counters>,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    fn bytes(&self) -> Option<&[u8]> {
        self.data.get_or_init(|| self.flight.finish()).as_ref().map(|h| h.buf.as_slice())
    }

    fn ready(&self) -> bool {
        self.data.get().is_some() || self.flight.done()
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if !self.used.load(Ordering::Relaxed) {
            bump(&self.counters.unused_bytes, self.len as u64);
        }
    }
}

/// One handle's read-ahead state (kept in its `NativeFile`).
#[derive(Debug, Default)]
pub struct Stream {
    inner: Mutex<StreamState>,
}

#[derive(Debug, Default)]
struct StreamState {
    /// End of the furthest READ of the current run of in-order READs.
    max_end: u64,
    /// In-order READs in a row.
    streak: u32,
    /// Where the next window starts.
    issued_to: u64,
    windows: VecDeque<Arc<Window>>,
}

impl StreamState {
    fn bytes(&self) -> usize {
        self.windows.iter().map(|w| w.len).sum()
    }
}

/// The windows that cover one READ, in order, with the range of each it takes.
#[derive(Debug)]
pub struct Hit {
    parts: Vec<(Arc<Window>, Range<usize>)>,
    counters: Arc<Counters>,
}

impl Hit {
    /// The READ's bytes, in pieces, once every window's batch has ended; `None` when one
    /// of them failed (the READ must then be read the direct way).
    pub fn slices(&self) -> Option<Vec<&[u8]>> {
        if self.parts.iter().any(|(w, _)| !w.ready()) {
            bump(&self.counters.waits, 1);
        }
        let mut out = Vec::with_capacity(self.parts.len());
        for (w, r) in &self.parts {
            match w.bytes() {
                Some(b) => out.push(&b[r.clone()]),
                None => {
                    bump(&self.counters.failed, 1);
                    return None;
                }
            }
        }
        for (w, _) in &self.parts {
            w.used.store(true, Ordering::Relaxed);
        }
        Some(out)
    }

    /// Counts the READ as answered from read-ahead.
    pub fn served(&self, len: usize) {
        bump(&self.counters.hits, 1);
        bump(&self.counters.hit_bytes, len as u64);
    }
}

impl ReadAhead {
    /// Read-ahead with these settings (`per_handle` 0 turns it off).
    pub fn new(cfg: AheadConfig) -> ReadAhead {
        let unit = cfg.unit.max(4096);
        ReadAhead { cfg: AheadConfig { unit, ..cfg }, counters: Arc::default() }
    }

    /// Counters, and the bytes held now.
    pub fn stats(&self) -> AheadStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AheadStats {
            windows: get(&c.windows),
            window_bytes: get(&c.window_bytes),
            hits: get(&c.hits),
            hit_bytes: get(&c.hit_bytes),
            waits: get(&c.waits),
            misses: get(&c.misses),
            failed: get(&c.failed),
            unused_bytes: get(&c.unused_bytes),
            capped: get(&c.capped),
            held: c.held.load(Ordering::Acquire) as u64,
            most_held: c.most_held.load(Ordering::Relaxed) as u64,
            spare: c.spares().iter().map(|b| b.len() as u64).sum(),
        }
    }

    /// A buffer of `len` bytes (a spare's old bytes, or zeros), if the budget has room.
    fn reserve(&self, len: usize) -> Option<Held> {
        let c = &self.counters;
        let mut now = c.held.load(Ordering::Acquire);
        loop {
            let next = now.checked_add(len).filter(|&n| n <= self.cfg.total)?;
            match c.held.compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    c.most_held.fetch_max(next, Ordering::Relaxed);
                    let spare = {
                        let mut spares = c.spares();
                        let i = spares.iter().position(|b| b.len() == len);
                        i.map(|i| spares.swap_remove(i))
                    };
                    let buf = spare.unwrap_or_else(|| vec![0; len]);
                    return Some(Held { buf, counters: c.clone() });
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// Notes a READ of `len` bytes at `offset` of the handle whose state is `stream`,
    /// starts the windows an in-order reader has room for, and returns the windows that
    /// hold the READ's bytes, if any do (a READ of 0 bytes never hits).
    pub fn read(&self, stream: &Stream, src: &dyn Source, offset: u64, len: usize) -> Option<Hit> {
        if self.cfg.per_handle == 0 || len == 0 {
            return None;
        }
        let mut s = stream.inner.lock().unwrap_or_else(|e| e.into_inner());
        let end = offset + len as u64;
        let slack = 4 * len as u64;
        let in_window = s.windows.iter().any(|w| w.start <= offset && offset < w.end());
        let in_order = in_window || (offset <= s.max_end + slack && end + slack >= s.max_end);
        if in_order {
            s.streak = s.streak.saturating_add(1);
            s.max_end = s.max_end.max(end);
        } else {
            // Elsewhere: what was read ahead will not be wanted.
            s.streak = 1;
            s.max_end = end;
            s.windows.clear();
            s.issued_to = 0;
        }
        // Windows wholly behind this READ (with room for READs that come late).
        while s.windows.front().is_some_and(|w| w.end() + KEEP_BEHIND <= offset) {
            s.windows.pop_front();
        }
        let hit = cover(&s.windows, offset, end)
            .map(|parts| Hit { parts, counters: self.counters.clone() });
        if hit.is_none() && s.streak > 2 {
            bump(&self.counters.misses, 1);
        }
        if s.streak >= 2 {
            self.top_up(&mut s, src, end);
        }
        hit
    }

    /// Starts windows from where the last one ended (or `from`) while the handle and the
    /// loop have room.
    fn top_up(&self, s: &mut StreamState, src: &dyn Source, from: u64) {
        if s.issued_to < from {
            // Behind the reader (or a fresh run): start at the end of this READ.
            s.issued_to = from;
        }
        let mut ahead = s.bytes();
        while ahead < self.cfg.per_handle {
            let want = self.cfg.unit.min(self.cfg.per_handle - ahead);
            let len = match src.span(s.issued_to, want) {
                Some(0) | None => return,
                Some(n) => n,
            };
            let Some(buf) = self.reserve(len) else {
                bump(&self.counters.capped, 1);
                return;
            };
            let Some(flight) = src.start(s.issued_to, buf) else { return };
            bump(&self.counters.windows, 1);
            bump(&self.counters.window_bytes, len as u64);
            s.windows.push_back(Arc::new(Window {
                start: s.issued_to,
                len,
                flight,
                data: OnceLock::new(),
                used: AtomicBool::new(false),
                counters: self.counters.clone(),
            }));
            s.issued_to += len as u64;
            ahead += len;
        }
    }
}

/// The windows covering `[offset, end)` without a gap, with the part of each it takes.
fn cover(
    windows: &VecDeque<Arc<Window>>,
    offset: u64,
    end: u64,
) -> Option<Vec<(Arc<Window>, Range<usize>)>> {
    let mut parts = Vec::new();
    let mut at = offset;
    for w in windows {
        if w.end() <= at {
            continue;
        }
        if w.start > at {
            return None;
        }
        let take = end.min(w.end());
        parts.push((w.clone(), (at - w.start) as usize..(take - w.start) as usize));
        at = take;
        if at == end {
            return Some(parts);
        }
    }
    None
}

/// A window fetched by the engine.
#[derive(Debug)]
pub struct EngineFlight(pub Ticket<(), Held>);

impl InFlight for EngineFlight {
    fn finish(&self) -> Option<Held> {
        // The batch ends by its deadline, so this wait is bounded.
        self.0.wait(Duration::MAX);
        let ok = self.0.results().is_some_and(|r| r.iter().all(Result::is_ok));
        if ok {
            self.0.take_buffer()
        } else {
            None
        }
    }

    fn done(&self) -> bool {
        self.0.done()
    }
}

/// A registered file's windows, planned like its READs and fetched by the engine.
#[derive(Debug)]
pub struct FileSource<'a> {
    pub engine: &'a Engine,
    pub file: &'a NativeFile,
    pub tokens: Option<&'a Tokens>,
    pub op_bytes: u32,
}

impl FileSource<'_> {
    fn plan(&self, at: u64, want: usize) -> Planned {
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        self.file.plan_read(at, want, self.op_bytes)
    }
}

impl Source for FileSource<'_> {
    fn span(&self, at: u64, want: usize) -> Option<usize> {
        match self.plan(at, want) {
            Planned::Read { len, .. } => Some(len),
            Planned::Decline(_) => None,
        }
    }

    fn start(&self, at: u64, mut buf: Held) -> Option<Box<dyn InFlight>> {
        let Planned::Read { len, mut ops, holes } = self.plan(at, buf.buf.len()) else {
            return None;
        };
        if len != buf.buf.len() {
            return None;
        }
        if let Some(tokens) = self.tokens {
            for op in &mut ops {
                op.jwt =
                    tokens.token(&FileId { volume: op.volume, key: op.key, cookie: op.cookie });
            }
        }
        // The ops fill the rest; a reused buffer still holds an old window's bytes.
        for hole in holes {
            buf.buf[hole].fill(0);
        }
        match self.engine.submit_read_into(buf, ops) {
            Ok(ticket) => Some(Box::new(EngineFlight(ticket))),
            Err(e) => {
                tracing::debug!("read-ahead not started: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "readahead_tests.rs"]
mod tests;
