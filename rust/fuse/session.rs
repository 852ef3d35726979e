//! The loop's threads: readers of the kernel's requests, and the pump that carries the
//! Python operations' replies back to the device each request came from.
//!
//! Each reader owns one device descriptor (a clone of the session's `/dev/fuse`: the
//! kernel hands every request to exactly one reader, and its reply must be written to that
//! same descriptor). A READ of a registered handle is answered on the reader's thread: the
//! engine fills the reader's buffer (the lane for small reads, the async path for large
//! ones) and one `writev` sends header and bytes. Anything else, and any READ the engine
//! did not fully deliver, is sent whole to the Python side's end of a message socket, which
//! libfuse reads as if it were the device; before it is sent, its `unique` is noted with
//! its device so the pump can route the reply.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::abi::{
    flush_fh, init_max_pages, init_max_write, init_minor, interrupt_target, lookup_name, opcode,
    open_flags, open_reply, out_header, release_fh, reply_unique, set_init_max_pages,
    set_init_max_write, InHeader, ReadIn, ENTRY_OUT, FOPEN_KEEP_CACHE, OUT_HEADER,
};
use super::fd;
use super::files::{NativeFile, Planned, Registry};
use super::opens::Opens;
use super::pieces::{Outcome, Pieces};
use super::readahead::{AheadConfig, AheadStats, FileSource, ReadAhead};
use super::tokens::Tokens;
use crate::engine::Engine;
use crate::fid::FileId;

/// The largest message either way: a 1 MiB WRITE or READ reply plus headers, with room.
pub const MAX_MESSAGE: usize = (1 << 20) + (64 << 10);

/// Pieces a forwarded READ is cut into: a reply of this size needs at most an order-2
/// kernel allocation in the message socket.
pub const FORWARD_PIECE: u32 = 64 << 10;

/// How often a request is offered again to a message socket that has no memory for it,
/// waiting twice as long each time from 1 ms (about a second in all).
const SEND_TRIES: u32 = 10;

/// A WRITE request's headers (`fuse_in_header` + `fuse_write_in`) with room to spare.
const INIT_WRITE_OVERHEAD: usize = 4096;

/// How the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// Longest single engine op (a READ is cut into ops of at most this).
    pub op_bytes: u32,
    /// Buffer size for one message; the device must never send a larger one.
    pub max_message: usize,
    /// Largest READ handed to the Python side whole; larger ones go in pieces of this
    /// size (see `pieces`).
    pub forward_piece: u32,
    /// Read-ahead for handles read in order (see `readahead.rs`).
    pub read_ahead: AheadConfig,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            op_bytes: 1 << 20,
            max_message: MAX_MESSAGE,
            forward_piece: FORWARD_PIECE,
            read_ahead: AheadConfig::default(),
        }
    }
}

/// Counters since the loop started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    /// READs answered from the engine.
    pub reads: u64,
    /// Bytes those carried.
    pub bytes: u64,
    /// READs of handles that are not registered, sent to the Python side.
    pub unregistered: u64,
    /// READs the plan declined (whole or unrouted chunks), sent to the Python side.
    pub declined: u64,
    /// READs the engine did not fully deliver, sent to the Python side.
    pub failed: u64,
    /// Requests of every kind sent to the Python side.
    pub forwarded: u64,
    /// Of those, READs sent in pieces.
    pub split: u64,
    /// Replies routed back to the kernel.
    pub replies: u64,
    /// Replies, or requests, that could not be delivered (see the log).
    pub errors: u64,
    /// Time native READs spent in the engine, in microseconds (all READs together).
    pub engine_us: u64,
    /// Time native READs spent writing their replies to the device, in microseconds.
    pub reply_us: u64,
    /// Most native READs in the engine at once since the loop started.
    pub most_at_once: u64,
    /// FLUSHes of registered handles, answered here (they have nothing to commit).
    pub flushes: u64,
    /// OPENs of offered inodes answered here.
    pub opens: u64,
    /// RELEASEs of handles opened here answered here.
    pub releases: u64,
    /// LOOKUPs of offered names answered here.
    pub lookups: u64,
    /// IOCTLs answered here (all of them: see `no_ioctl`).
    pub ioctls: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    bytes: AtomicU64,
    unregistered: AtomicU64,
    declined: AtomicU64,
    failed: AtomicU64,
    forwarded: AtomicU64,
    split: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
    engine_us: AtomicU64,
    reply_us: AtomicU64,
    at_once: AtomicU64,
    most_at_once: AtomicU64,
    flushes: AtomicU64,
    opens: AtomicU64,
    releases: AtomicU64,
    lookups: AtomicU64,
    ioctls: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Debug)]
struct SessionState {
    engine: Arc<Engine>,
    files: Registry,
    ahead: ReadAhead,
    opens: Opens,
    cfg: LoopConfig,
    /// `unique` of each request the Python side owes a reply -> its device and opcode.
    routes: Mutex<HashMap<u64, (RawFd, u32)>>,
    pieces: Mutex<Pieces>,
    /// Read JWTs, on clusters that want them.
    tokens: Option<Tokens>,
    to_python: OwnedFd,
    /// Notifications (replies with `unique` 0) for the notifier thread: writing one can
    /// block until a request the Python side is answering completes (an invalidation
    /// waits for the directory's lock), so the pump must never write them itself.
    notices: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    stop: OwnedFd,
    ended: OwnedFd,
    has_ended: AtomicBool,
    /// The protocol minor the session runs (from libfuse's INIT reply); 0 until then.
    minor: AtomicU32,
    counters: Counters,
}

/// The running loop. Stopping it (or dropping it) joins its threads and then closes its
/// devices.
#[derive(Debug)]
pub struct NativeLoop {
    shared: Arc<SessionState>,
    threads: Vec<JoinHandle<()>>,
    devices: Vec<OwnedFd>,
}

impl NativeLoop {
    /// Starts one reader per device, the pump and the notifier. `devices` deliver one
    /// request per read and take one reply per write; `notify` takes notifications only
    /// (a device of its own, so that no request waits on it); `to_python` is the loop's
    /// end of the message socket; `tokens` sign the reads where the cluster wants JWTs.
    ///
    /// # Errors
    /// No devices, or an eventfd or thread could not be created.
    pub fn start(
        engine: Arc<Engine>,
        devices: Vec<OwnedFd>,
        notify: OwnedFd,
        to_python: OwnedFd,
        cfg: LoopConfig,
        tokens: Option<Tokens>,
    ) -> io::Result<NativeLoop> {
        if devices.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no device to read"));
        }
        for d in &devices {
            fd::set_nonblocking(d.as_raw_fd())?;
        }
        let (notices, queue) = mpsc::channel();
        let shared = Arc::new(SessionState {
            engine,
            files: Registry::default(),
            ahead: ReadAhead::new(cfg.read_ahead),
            opens: Opens::default(),
            cfg,
            routes: Mutex::new(HashMap::new()),
            pieces: Mutex::new(Pieces::default()),
            tokens,
            to_python,
            notices: Mutex::new(Some(notices)),
            stop: fd::eventfd()?,
            ended: fd::eventfd()?,
            has_ended: AtomicBool::new(false),
            minor: AtomicU32::new(0),
            counters: Counters::default(),
        });
        let mut native = NativeLoop { shared: shared.clone(), threads: Vec::new(), devices };
        for (i, d) in native.devices.iter().enumerate() {
            let (s, dev) = (shared.clone(), d.as_raw_fd());
            let t = std::thread::Builder::new()
                .name(format!("seaweed-rdma-fuse-{i}"))
                .spawn(move || s.serve_device(dev));
            match t {
                Ok(t) => native.threads.push(t),
                Err(e) => return Err(e), // drop stops the threads already started
            }
        }
        let s = shared.clone();
        native.threads.push(
            std::thread::Builder::new()
                .name("seaweed-rdma-fuse-replies".into())
                .spawn(move || s.pump())?,
        );
        // Not joined: it may be blocked in the kernel until the session ends (see
        // `notices`). It owns its descriptor, so nothing it writes can reach another file.
        std::thread::Builder::new()
            .name("seaweed-rdma-fuse-notify".into())
            .spawn(move || notifier(&queue, &notify))?;
        Ok(native)
    }

    /// The handles READs are answered for.
    pub fn files(&self) -> &Registry {
        &self.shared.files
    }

    /// The inodes OPENs are answered for, and the handles opened here.
    pub fn opens(&self) -> &Opens {
        &self.shared.opens
    }

    /// An eventfd that turns readable once the kernel has ended the session (unmounted).
    pub fn ended_fd(&self) -> RawFd {
        self.shared.ended.as_raw_fd()
    }

    /// Whether the kernel has ended the session.
    pub fn has_ended(&self) -> bool {
        self.shared.has_ended.load(Ordering::SeqCst)
    }

    /// Read-ahead counters since the loop started, and the bytes it holds now.
    pub fn read_ahead_stats(&self) -> AheadStats {
        self.shared.ahead.stats()
    }

    /// Counters since the loop started.
    pub fn stats(&self) -> LoopStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoopStats {
            reads: get(&c.reads),
            bytes: get(&c.bytes),
            unregistered: get(&c.unregistered),
            declined: get(&c.declined),
            failed: get(&c.failed),
            forwarded: get(&c.forwarded),
            split: get(&c.split),
            replies: get(&c.replies),
            errors: get(&c.errors),
            engine_us: get(&c.engine_us),
            reply_us: get(&c.reply_us),
            most_at_once: get(&c.most_at_once),
            flushes: get(&c.flushes),
            opens: get(&c.opens),
            releases: get(&c.releases),
            lookups: get(&c.lookups),
            ioctls: get(&c.ioctls),
        }
    }

    /// Stops the threads and closes the devices. Idempotent. Requests the kernel sends
    /// afterwards wait until the session is unmounted.
    pub fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        fd::signal(&self.shared.stop);
        self.shared.notices.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A reader blocked sending to a Python side that no longer reads returns now.
        fd::shutdown(&self.shared.to_python);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a native FUSE thread panicked");
            }
        }
        self.devices.clear();
    }
}

impl Drop for NativeLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes notifications to the device, in order, until the loop stops.
fn notifier(queue: &mpsc::Receiver<Vec<u8>>, dev: &OwnedFd) {
    while let Ok(msg) = queue.recv() {
        match fd::writev(dev.as_raw_fd(), &[&msg]) {
            Ok(_) => {}
            // ENOENT: the kernel no longer knows the inode or entry.
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV | libc::ENOTCONN) => {}
            Err(e) => tracing::warn!("writing a FUSE notification: {e}"),
        }
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

impl SessionState {
    fn end(&self, why: &str) {
        if !self.has_ended.swap(true, Ordering::SeqCst) {
            tracing::info!("FUSE session ended: {why}");
            fd::signal(&self.ended);
        }
    }

    fn serve_device(&self, dev: RawFd) {
        let mut msg = vec![0u8; self.cfg.max_message];
        let mut data = Vec::new();
        loop {
            match fd::wait_readable(dev, &self.stop) {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => {
                    tracing::error!("waiting on the FUSE device: {e}");
                    return self.end("the device could not be waited on");
                }
            }
            let n = match fd::read(dev, &mut msg) {
                Ok(0) => return self.end("the device was closed"),
                Ok(n) => n,
                // EAGAIN: another reader took it; ENOENT: the kernel withdrew an
                // interrupted request before we read it.
                Err(e) if matches!(errno(&e), libc::EAGAIN | libc::ENOENT) => continue,
                Err(e) if errno(&e) == libc::ENODEV => return self.end("unmounted"),
                Err(e) => {
                    tracing::error!("reading the FUSE device: {e}");
                    return self.end("the device could not be read");
                }
            };
            let req = &msg[..n];
            let Some(h) = InHeader::parse(req) else {
                tracing::warn!("a {n}-byte FUSE request is malformed; ignored");
                bump(&self.counters.errors, 1);
                continue;
            };
            let handled = match h.opcode {
                opcode::READ => self.read(dev, h, req, &mut data),
                opcode::FLUSH => self.flush(dev, h, req),
                opcode::OPEN => self.open(dev, h, req),
                opcode::RELEASE => self.release(dev, h, req),
                opcode::LOOKUP => self.lookup(dev, h, req),
                opcode::IOCTL => self.no_ioctl(dev, h),
                // An interrupted native READ finishes anyway; only a request the Python
                // side still owes a reply for is worth interrupting.
                opcode::INTERRUPT => !interrupt_target(req).is_some_and(|t| self.owed(t)),
                _ => false,
            };
            if !handled {
                self.forward(dev, h, req);
            }
        }
    }

    /// Whether a reply the loop wrote reached the kernel. A requester that was
    /// interrupted (ENOENT) or a session that is gone (ENODEV) waits for nothing any more;
    /// any other failure is logged and counted in `errors`.
    fn replied<T>(&self, sent: io::Result<T>, what: &str) -> bool {
        match sent {
            Ok(_) => true,
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV) => false,
            Err(e) => {
                tracing::warn!("replying to {what}: {e}");
                bump(&self.counters.errors, 1);
                false
            }
        }
    }

    fn owed(&self, unique: u64) -> bool {
        self.routes().contains_key(&unique)
    }

    /// Answers the FLUSH of a registered handle: only read handles of files not written
    /// through this mount are registered (a writer unregisters its file's handles first),
    /// so there is nothing to commit, and the close of each small file read through the
    /// mount costs the Python side one request less. False when the Python side must.
    fn flush(&self, dev: RawFd, h: InHeader, req: &[u8]) -> bool {
        let Some(fh) = flush_fh(req) else { return false };
        if self.files.get(fh).is_none() {
            return false;
        }
        if self.replied(fd::writev(dev, &[&out_header(OUT_HEADER, 0, h.unique)]), "a FLUSH") {
            bump(&self.counters.flushes, 1);
        }
        true
    }

    /// Answers a read-only OPEN of an offered inode (see `opens.rs`); false when the
    /// Python side must. Flags that could write, truncate or create are the Python
    /// side's, as are flags this loop does not know to be harmless to a reader.
    fn open(&self, dev: RawFd, h: InHeader, req: &[u8]) -> bool {
        let Some(flags) = open_flags(req) else { return false };
        let flags = flags as i32;
        let writes = libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT;
        if flags & writes != 0 {
            return false;
        }
        let reply = |opened: super::Opened| {
            let keep = if opened.keep_cache { FOPEN_KEEP_CACHE } else { 0 };
            fd::writev(dev, &[&open_reply(h.unique, opened.fh, keep)]).map(|_| ())
        };
        // A reply that fails (the opener interrupted, the session gone) ends the handle in
        // `open`: the kernel sends no RELEASE for a handle it never got.
        let Some(sent) = self.opens.open(h.nodeid, &self.files, reply) else { return false };
        if self.replied(sent, "an OPEN") {
            bump(&self.counters.opens, 1);
        }
        true
    }

    /// Answers an IOCTL as libfuse does for pyfuse3, which has no such operation: ENOSYS
    /// (the kernel tells the caller ENOTTY). Python's `open()` asks `isatty()` of every
    /// file it opens, so without this each open would cost a trip through the Python
    /// side for that answer.
    fn no_ioctl(&self, dev: RawFd, h: InHeader) -> bool {
        let refused = fd::writev(dev, &[&out_header(OUT_HEADER, -libc::ENOSYS, h.unique)]);
        if self.replied(refused, "an IOCTL") {
            bump(&self.counters.ioctls, 1);
        }
        true
    }

    /// Answers a LOOKUP of a name an offer carries (see `opens.rs`); false when the
    /// Python side must.
    fn lookup(&self, dev: RawFd, h: InHeader, req: &[u8]) -> bool {
        // `fuse_entry_out` has had its present size since protocol 7.9.
        if self.minor.load(Ordering::Relaxed) < 9 {
            return false;
        }
        let Some(name) = lookup_name(req) else { return false };
        let header = out_header(OUT_HEADER + ENTRY_OUT, 0, h.unique);
        let reply = |body: &[u8; ENTRY_OUT]| fd::writev(dev, &[&header, body]).map(|_| ());
        // A reply that fails (the looker interrupted, the session gone) gives the kernel no
        // reference, and `lookup` counts none.
        let Some(sent) = self.opens.lookup(h.nodeid, name, reply) else { return false };
        if self.replied(sent, "a LOOKUP") {
            bump(&self.counters.lookups, 1);
        }
        true
    }

    /// Answers the RELEASE of a handle this loop opened and still owns; false when the
    /// Python side must (its own handles, and those it adopted).
    fn release(&self, dev: RawFd, h: InHeader, req: &[u8]) -> bool {
        let Some(fh) = release_fh(req) else { return false };
        if !self.opens.release(fh, &self.files) {
            return false;
        }
        if self.replied(fd::writev(dev, &[&out_header(OUT_HEADER, 0, h.unique)]), "a RELEASE") {
            bump(&self.counters.releases, 1);
        }
        true
    }

    /// Answers a READ from the engine; false when the Python side must.
    fn read(&self, dev: RawFd, h: InHeader, req: &[u8], data: &mut Vec<u8>) -> bool {
        let c = &self.counters;
        let Some(r) = ReadIn::parse(req) else { return false };
        let Some(file) = self.files.get(r.fh) else {
            bump(&c.unregistered, 1);
            return false;
        };
        let (len, mut ops, holes) = match file.plan_read(r.offset, r.size, self.cfg.op_bytes) {
            Planned::Read { len, ops, holes } => (len, ops, holes),
            Planned::Decline(why) => {
                tracing::debug!("READ of handle {} at {}: {why}", r.fh, r.offset);
                bump(&c.declined, 1);
                return false;
            }
        };
        if self.read_ahead(dev, h, &file, r.offset, len) {
            return true;
        }
        if let Some(tokens) = &self.tokens {
            for op in &mut ops {
                op.jwt =
                    tokens.token(&FileId { volume: op.volume, key: op.key, cookie: op.cookie });
            }
        }
        if data.len() < len {
            data.resize(len, 0);
        }
        let buf = &mut data[..len];
        for hole in holes {
            buf[hole].fill(0);
        }
        let started = Instant::now();
        let now = c.at_once.fetch_add(1, Ordering::Relaxed) + 1;
        c.most_at_once.fetch_max(now, Ordering::Relaxed);
        let results = self.engine.read_into(buf, &ops);
        c.at_once.fetch_sub(1, Ordering::Relaxed);
        let fetched = Instant::now();
        bump(&c.engine_us, (fetched - started).as_micros() as u64);
        if let Some(why) = results.iter().find_map(|r| r.as_ref().err()) {
            tracing::debug!(
                "READ of handle {} at {}+{len}: {why}; the mount answers it",
                r.fh,
                r.offset
            );
            bump(&c.failed, 1);
            return false;
        }
        let header = out_header(OUT_HEADER + len, 0, h.unique);
        let written = fd::writev(dev, &[&header, buf]);
        bump(&c.reply_us, fetched.elapsed().as_micros() as u64);
        if self.replied(written, "a READ") {
            bump(&c.reads, 1);
            bump(&c.bytes, len as u64);
        }
        true
    }

    /// Notes the READ in the handle's read-ahead (which may start windows) and answers it
    /// from the windows that hold its bytes; false when none do, or one failed.
    fn read_ahead(
        &self,
        dev: RawFd,
        h: InHeader,
        file: &NativeFile,
        offset: u64,
        len: usize,
    ) -> bool {
        let c = &self.counters;
        let src = FileSource {
            engine: &self.engine,
            file,
            tokens: self.tokens.as_ref(),
            op_bytes: self.cfg.op_bytes,
        };
        let Some(hit) = self.ahead.read(&file.ahead, &src, offset, len) else { return false };
        let started = Instant::now();
        let Some(slices) = hit.slices() else { return false };
        let fetched = Instant::now();
        bump(&c.engine_us, (fetched - started).as_micros() as u64);
        let header = out_header(OUT_HEADER + len, 0, h.unique);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(slices.len() + 1);
        parts.push(&header);
        parts.extend(slices);
        let written = fd::writev(dev, &parts);
        bump(&c.reply_us, fetched.elapsed().as_micros() as u64);
        if self.replied(written, "a READ") {
            hit.served(len);
            bump(&c.reads, 1);
            bump(&c.bytes, len as u64);
        }
        true
    }

    fn forward(&self, dev: RawFd, h: InHeader, req: &[u8]) {
        if h.opcode == opcode::READ {
            let split = self.pieces().split(dev, h, req, self.cfg.forward_piece);
            if let Some(subs) = split {
                return self.forward_pieces(h, subs);
            }
        }
        if h.wants_reply() {
            self.routes().insert(h.unique, (dev, h.opcode));
        }
        bump(&self.counters.forwarded, 1);
        if let Err(e) = self.send_to_python(req) {
            self.routes().remove(&h.unique);
            if fd::is_readable(&self.stop) {
                return;
            }
            tracing::error!(
                "handing FUSE request {} (opcode {}) to the mount: {e}",
                h.unique,
                h.opcode
            );
            bump(&self.counters.errors, 1);
            // The kernel would wait for this reply for ever; fail the call instead.
            if h.wants_reply() {
                let _ = fd::writev(dev, &[&out_header(OUT_HEADER, -libc::EIO, h.unique)]);
            }
        }
    }

    fn forward_pieces(&self, h: InHeader, subs: Vec<(u64, Vec<u8>)>) {
        bump(&self.counters.forwarded, 1);
        bump(&self.counters.split, 1);
        for (id, sub) in subs {
            if let Err(e) = self.send_to_python(&sub) {
                if !fd::is_readable(&self.stop) {
                    tracing::error!("handing a piece of FUSE READ {} to the mount: {e}", h.unique);
                    bump(&self.counters.errors, 1);
                }
                let outcome = self.pieces().fail(id, -libc::EIO);
                self.finish_split(outcome);
            }
        }
    }

    fn finish_split(&self, outcome: Outcome) {
        if let Outcome::Done { dev, reply } = outcome {
            self.reply_to(dev, &reply);
        }
    }

    /// Sends one request to the Python side. A datagram needs a contiguous kernel buffer
    /// of nearly its size, which fragmented memory may lack for a while (ENOBUFS, ENOMEM):
    /// such a send is tried again after a pause rather than failing the call at once.
    fn send_to_python(&self, msg: &[u8]) -> io::Result<()> {
        let mut pause = std::time::Duration::from_millis(1);
        let mut tries = 1;
        loop {
            match fd::send(self.to_python.as_raw_fd(), msg) {
                Err(e)
                    if matches!(errno(&e), libc::ENOBUFS | libc::ENOMEM) && tries < SEND_TRIES =>
                {
                    if tries == 1 {
                        tracing::warn!(
                            "no kernel memory for a {}-byte request yet: {e}; retrying",
                            msg.len()
                        );
                    }
                    std::thread::sleep(pause);
                    pause *= 2;
                    tries += 1;
                }
                sent => return sent,
            }
        }
    }

    /// Carries each reply from the Python side to the device its request came from.
    fn pump(&self) {
        let mut buf = vec![0u8; self.cfg.max_message];
        let sock = self.to_python.as_raw_fd();
        loop {
            match fd::wait_readable(sock, &self.stop) {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => return tracing::error!("waiting for the mount's replies: {e}"),
            }
            let n = match fd::recv(sock, &mut buf) {
                Ok(0) => return, // the Python side closed its end
                Ok(n) => n,
                Err(e) if errno(&e) == libc::EAGAIN => continue,
                Err(e) => return tracing::error!("reading the mount's replies: {e}"),
            };
            self.route(&buf[..n.min(buf.len())], n);
        }
    }

    fn route(&self, msg: &[u8], real_len: usize) {
        let c = &self.counters;
        if real_len > msg.len() {
            return self.fail_cut(msg, real_len);
        }
        let Some(unique) = reply_unique(msg) else {
            tracing::warn!("a {}-byte reply from the mount is malformed; dropped", msg.len());
            bump(&c.errors, 1);
            return;
        };
        if unique == 0 {
            let notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = notices.as_ref() {
                if tx.send(msg.to_vec()).is_ok() {
                    bump(&c.replies, 1);
                }
            }
            return;
        }
        if unique & 1 == 1 {
            // libfuse answering an INTERRUPT it could not match (EAGAIN, with the
            // interrupt's odd id): the loop never asks for those, the kernel needs none.
            return;
        }
        let outcome = self.pieces().answer(unique, msg);
        if outcome != Outcome::NotMine {
            return self.finish_split(outcome);
        }
        let Some((dev, op)) = self.take_route(unique) else {
            tracing::warn!("a reply to request {unique}, which nobody waits for; dropped");
            bump(&c.errors, 1);
            return;
        };
        let mut init = Vec::new();
        let msg = if op == opcode::INIT {
            init.extend_from_slice(msg);
            self.fit_init(&mut init);
            &init
        } else {
            msg
        };
        self.reply_to(dev, msg);
    }

    fn reply_to(&self, dev: RawFd, msg: &[u8]) {
        let c = &self.counters;
        match fd::writev(dev, &[msg]) {
            Ok(_) => bump(&c.replies, 1),
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV) => {}
            Err(e) => {
                let unique = reply_unique(msg).unwrap_or(0);
                tracing::warn!("writing a reply to request {unique}: {e}");
                bump(&c.errors, 1);
            }
        }
    }

    /// A reply larger than the buffer: the kernel must still hear about the request, or
    /// its caller waits for ever.
    fn fail_cut(&self, msg: &[u8], real_len: usize) {
        tracing::error!("a {real_len}-byte reply is larger than {}; failing it", msg.len());
        bump(&self.counters.errors, 1);
        let unique = msg.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        if let Some(outcome) = unique.map(|u| self.pieces().fail(u, -libc::EIO)) {
            if outcome != Outcome::NotMine {
                return self.finish_split(outcome);
            }
        }
        if let Some((u, (dev, _))) = unique.and_then(|u| self.take_route(u).map(|d| (u, d))) {
            let _ = fd::writev(dev, &[&out_header(OUT_HEADER, -libc::EIO, u)]);
        }
    }

    /// Keeps libfuse's INIT reply within what the loop's buffers hold: the kernel refuses
    /// device reads shorter than a WRITE of `max_write` bytes, and a READ of `max_pages`
    /// pages answered by libfuse must fit one message.
    fn fit_init(&self, reply: &mut [u8]) {
        if let Some(minor) = init_minor(reply) {
            self.minor.store(minor, Ordering::Relaxed);
        }
        let room = self.cfg.max_message.saturating_sub(INIT_WRITE_OVERHEAD);
        if let Some(max_write) = init_max_write(reply) {
            if max_write as usize > room {
                tracing::info!("FUSE max_write {max_write} lowered to {room} for native reads");
                set_init_max_write(reply, room as u32);
            }
        }
        if let Some(max_pages) = init_max_pages(reply) {
            // SAFETY: sysconf takes no pointers.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            let fit = u16::try_from((room / page).max(1)).unwrap_or(u16::MAX);
            if max_pages > fit {
                tracing::info!("FUSE max_pages {max_pages} lowered to {fit} for native reads");
                set_init_max_pages(reply, fit);
            }
        }
    }

    fn take_route(&self, unique: u64) -> Option<(RawFd, u32)> {
        self.routes().remove(&unique)
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<u64, (RawFd, u32)>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pieces(&self) -> MutexGuard<'_, Pieces> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }
}
