//! The in-process client engine: reads needle bytes from sidecars over the wire protocol
//! (`docs/protocol.md`) straight into the caller's buffer, over tcp or, where this host and
//! the sidecar both have an RDMA device, verbs ([`EngineConfig::transport`]; see `verbs/`).
//!
//! # Shape
//! An [`Engine`] owns a small tokio runtime (two worker threads named
//! `seaweed-rdma-engine`) and, per sidecar address, a pool of `conns_per_sidecar` TCP
//! connections. Each connection shakes hands (HELLO/HELLO_ACK), then a writer task sends
//! READ frames up to the granted `max_inflight` and a reader task matches DATA answers to
//! their requests by `request_id`, in whatever order they come. A batch spreads its ops over
//! the pool's connections and waits, up to [`EngineConfig::timeout`], for all of them.
//! The blocking calls block the calling thread; they must not be made from inside a tokio
//! runtime. Their `submit_*` twins return a [`Ticket`] at once and run the same batch on one
//! of the runtime's blocking threads; the ticket's eventfd turns readable when the results
//! are in, for event loops (`ticket.rs`).
//!
//! Small batches skip all that, and its thread hops: up to `LANE_MAX_OPS` ops of at most
//! `LANE_MAX_LEN` bytes each, all for one sidecar, run on the calling thread over a
//! blocking connection of their own (the lane, `lane.rs`; up to `LANE_CONNS` per sidecar,
//! kept between batches). Pings, other batches, and small ones that find every lane
//! connection of their sidecar busy take the async path. A lane wait spins for
//! [`EngineConfig::busy_poll`] before it sleeps (on a submitted batch only while it runs
//! alone), so an answer due in microseconds costs no wake-up.
//!
//! An event loop can drive a small batch (at most [`POLLED_MAX_BYTES`], one sidecar, over
//! tcp) itself instead of submitting it: [`Engine::start_polled`] sends the READs on an idle
//! lane connection from the loop's thread, the loop waits for that socket, and
//! [`Polled::poll`] reads what has arrived without blocking and writes complete answers
//! into the buffer, on the loop's thread (`polled.rs`). No engine thread wakes, and a batch
//! the loop gives up on writes nothing afterwards.
//!
//! # Failures and health
//! Every op gets its own outcome; a [`Failure`] tells the caller to read that extent another
//! way. A sidecar whose connect or handshake fails, that times out or breaks the protocol is
//! marked down for a back-off (`backoff_min`, doubling up to `backoff_max`); meanwhile its
//! ops fail at once with [`Failure::Down`]. The first batch after the back-off is the probe:
//! a successful handshake brings the sidecar back up. Needle answers (NOT_FOUND, DELETED,
//! UNAUTHORIZED, BAD_REQUEST) say nothing about health; BUSY, INTERNAL and dropped
//! connections are strikes, three batches in a row of nothing but those mark it down.
//!
//! # Soundness of the in-place writes
//! The lane fills plain `&mut` slices split off the caller's buffer on the calling thread;
//! nothing outlives the call. On the async path, [`Engine::read_into`] hands each op's
//! destination to the connection's reader task as a raw pointer, so ranged payloads are
//! read from the socket straight into the caller's buffer. This is sound because:
//! - destinations are checked to lie inside the buffer and not to overlap each other
//!   (overlapping or out-of-bounds ops fail with [`Failure::BadOp`]);
//! - a destination is reachable only through its pending entry (under the connection's
//!   lock) and, during the write, from the reader task that marked the entry "writing";
//! - before `read_into` returns (or unwinds), every entry of the batch has been answered,
//!   removed, or turned into "discard" under that lock, and if one was being written at that
//!   moment, the connection's reader task is aborted and `read_into` blocks until the task
//!   is gone. Late payloads for discarded entries go to a scratch buffer.
//!
//! A submitted batch runs exactly that code on another thread, over a buffer it owns
//! ([`DestBuffer`], moved in by [`Engine::submit_read_into`]) rather than borrows: the
//! buffer goes back to the ticket only once the batch is over, and is dropped by the batch
//! if the ticket is gone by then.
//!
//! # Verbs
//! With [`Transport::Auto`] (the default) or [`Transport::Verbs`], new connections, async and
//! lane alike, offer verbs as well as tcp; the sidecar chooses. A verbs connection is the
//! same TCP control stream, but it registers a receive pool of its own at connect (at most
//! `verbs_slots` slots, one per READ it asks to have in flight; its own memory region and
//! rkey, so a sidecar can write only into the slots of its own connection; a slice of the
//! process's one pinned arena of [`EngineConfig::pinned_budget`] bytes), each READ
//! names one of those slots, and the sidecar RDMA-writes the bytes there. The answer is
//! complete once both the DATA frame and the receive completion are in; the bytes are
//! then copied into the caller's buffer, by the reader task (`verbs/rx.rs`) or on the
//! lane by the calling thread (`verbs/lane.rs`). A connection's queue pair is destroyed
//! before its pool is deregistered. Without a usable device, `Auto` is plain tcp and
//! `Verbs` fails every op with [`Failure::Verbs`]; a memlock limit too low for another
//! pool fails the connect the same way (under `Auto`: tcp to that sidecar from then on).
//!
//! # Connections over time
//! A reaper task closes connections unused for [`EngineConfig::idle_timeout`]; a new
//! connection past [`EngineConfig::max_conns`] first closes the least recently used idle
//! one (`pool.rs`, `runtime.rs`). Both give a verbs connection's slice back to the arena.
//!
//! # Fork
//! The runtime's threads do not survive `fork()`; the first call in a child process builds
//! a fresh runtime and pools (see `runtime.rs`).

mod answer;
mod batch;
mod conn;
mod conn_state;
mod dest;
mod frames;
mod lane;
mod lane_conn;
mod pending;
mod polled;
mod pool;
mod reads;
mod reclaim;
mod runtime;
mod stats;
mod tasks;
mod ticket;
mod types;
mod verbs;

#[cfg(test)]
mod e2e;
#[cfg(test)]
mod lane_tests;
#[cfg(test)]
mod latency_tests;
#[cfg(test)]
mod scale_tests;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod ticket_tests;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use polled::{Polled, POLLED_MAX_BYTES};
pub(crate) use ticket::{eventfd, signal};
pub use ticket::{DestBuffer, Ticket};
pub use types::{
    EngineConfig, EngineStats, Failure, RangeOp, SidecarHealth, Transport, WholeNeedle, WholeOp,
};
pub use verbs::DEVICE_ENV;

use crate::error::{Error, Result};
use crate::proto::ReadRequest;
use batch::{Job, Want};
use reads::{EngineCore, RangeResults, ReadBatch, WholeResults};
use runtime::{Current, Generation, Lease};
use stats::Stats;

/// The client engine; cheap to share between threads (`&self` everywhere).
#[derive(Debug)]
pub struct Engine {
    core: EngineCore,
    current: Current,
}

impl Engine {
    /// Builds an engine and its runtime; connects lazily, on first use of each sidecar.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout, in-flight limit or connection count (per
    /// sidecar or `max_conns`), or a
    /// back-off range with `backoff_min > backoff_max`; [`Error::Runtime`] when the
    /// runtime's threads cannot be started.
    pub fn new(cfg: EngineConfig) -> Result<Engine> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if cfg.timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if cfg.max_inflight == 0 || cfg.conns_per_sidecar == 0 || cfg.max_conns == 0 {
            return bad("max_inflight, conns_per_sidecar and max_conns must be at least 1");
        }
        if cfg.backoff_min > cfg.backoff_max {
            return bad("backoff_min must not exceed backoff_max");
        }
        if cfg.transport != Transport::Tcp && (cfg.verbs_slot_size == 0 || cfg.verbs_slots == 0) {
            return bad("verbs_slot_size and verbs_slots must be at least 1");
        }
        let stats = Arc::new(Stats::default());
        let current = Current::new(cfg.idle_timeout, stats.clone()).map_err(Error::Runtime)?;
        let core =
            EngineCore { cfg, stats, use_lane: true, submitted: Arc::new(AtomicUsize::new(0)) };
        Ok(Engine { core, current })
    }

    /// The same engine with every batch on the async path, for tests of that path.
    #[cfg(test)]
    pub(crate) fn without_lane(self) -> Engine {
        Engine { core: EngineCore { use_lane: false, ..self.core }, ..self }
    }

    /// The settings this engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.core.cfg
    }

    /// The moment a batch started now gives up.
    fn deadline(&self) -> Instant {
        Instant::now() + self.core.cfg.timeout
    }

    /// Runs a batch of `n` ops on the calling thread with this process's runtime and pools
    /// (`n` failures if there are none).
    fn blocking<T>(
        &self,
        n: usize,
        f: impl FnOnce(&ReadBatch<'_>) -> Vec<std::result::Result<T, Failure>>,
    ) -> Vec<std::result::Result<T, Failure>> {
        let deadline = self.deadline();
        match self.current.get() {
            Ok(generation) => {
                // The caller's own thread waits, so it may spin for a prompt answer.
                let spin = self.core.cfg.busy_poll;
                f(&ReadBatch { core: &self.core, generation: &generation, deadline, spin })
            }
            Err(e) => self.core.unavailable(n, &e),
        }
    }

    /// Fills `buf[op.buf_offset .. op.buf_offset + op.len]` for each op and returns one
    /// outcome per op, in order (`Ok` = all `len` bytes delivered).
    ///
    /// Blocks for at most about [`EngineConfig::timeout`]. The buffer is written only while
    /// this call runs; a failed op's destination may hold partial bytes. Ops whose
    /// destinations fall outside `buf` or overlap another op's fail with
    /// [`Failure::BadOp`], as do ops longer than the sidecar's `max_read`.
    pub fn read_into(&self, buf: &mut [u8], ops: &[RangeOp]) -> RangeResults {
        self.blocking(ops.len(), |batch| batch.read_into(buf, ops))
    }

    /// Reads each needle's whole data (with its stored CRC and flags, unverified: see
    /// [`WholeNeedle::verify`]). Blocks for at most about [`EngineConfig::timeout`].
    pub fn read_whole(&self, ops: &[WholeOp]) -> WholeResults {
        self.blocking(ops.len(), |batch| batch.read_whole(ops))
    }

    /// Starts [`read_into`](Self::read_into) on the engine's threads and returns at once;
    /// the ticket says when the batch is done, has its results, and gives `dest` back.
    ///
    /// The batch owns `dest` until it finishes, by its deadline ([`Ticket::deadline`],
    /// [`EngineConfig::timeout`] from now), or later only when the runtime's blocking
    /// threads are all busy: a batch that gets a thread after its deadline fails with
    /// [`Failure::Timeout`] without sending anything.
    ///
    /// # Errors
    /// The ticket's eventfd could not be created.
    pub fn submit_read_into<B: DestBuffer>(
        &self,
        dest: B,
        ops: Vec<RangeOp>,
    ) -> std::io::Result<Ticket<(), B>> {
        self.submit(ops.len(), dest, move |batch, dest| batch.read_into(dest.bytes(), &ops))
    }

    /// Starts [`read_whole`](Self::read_whole) on the engine's threads and returns at once,
    /// as [`submit_read_into`](Self::submit_read_into) does.
    ///
    /// # Errors
    /// The ticket's eventfd could not be created.
    pub fn submit_read_whole(&self, ops: Vec<WholeOp>) -> std::io::Result<Ticket<WholeNeedle>> {
        self.submit(ops.len(), (), move |batch, ()| batch.read_whole(&ops))
    }

    /// Runs `work` over `buffer` on one of the runtime's blocking threads; see
    /// [`submit_read_into`](Self::submit_read_into).
    fn submit<T, B>(
        &self,
        n: usize,
        mut buffer: B,
        work: impl FnOnce(&ReadBatch<'_>, &mut B) -> Vec<std::result::Result<T, Failure>>
            + Send
            + 'static,
    ) -> std::io::Result<Ticket<T, B>>
    where
        T: Send + Sync + 'static,
        B: Send + 'static,
    {
        let deadline = self.deadline();
        let (ticket, completer) = ticket::pair(n, deadline)?;
        let generation = match self.current.get() {
            Ok(generation) => generation,
            Err(e) => {
                completer.finish(self.core.unavailable(n, &e), Some(buffer));
                return Ok(ticket);
            }
        };
        let rt = generation.rt.handle().clone();
        let (core, lease) = (self.core.clone(), Lease::new(generation));
        // Whatever happens to this closure (it returns, panics, or is dropped unrun by a
        // runtime that shuts down), `completer` finishes the ticket and `lease` lets go of
        // the runtime safely; `buffer` is only written while `work` runs.
        rt.spawn_blocking(move || {
            let out = match lease.get() {
                Some(generation) if Instant::now() < deadline => {
                    let (spin, _running) = core.submitted_spin();
                    work(&ReadBatch { core: &core, generation, deadline, spin }, &mut buffer)
                }
                _ => core.expired(n),
            };
            completer.finish(out, Some(buffer));
            drop(lease);
        });
        Ok(ticket)
    }

    /// Round-trip time of a PING to `sidecar` (connecting first if needed). An explicit
    /// probe: it is tried even while the sidecar is in back-off, and updates its health.
    ///
    /// # Errors
    /// The [`Failure`] that kept the PONG from arriving within [`EngineConfig::timeout`].
    pub fn ping(&self, sidecar: &str) -> std::result::Result<Duration, Failure> {
        let job =
            Job { sidecar: sidecar.to_owned(), req: ReadRequest::default(), want: Want::Ping };
        let start = Instant::now();
        let outcome = self.blocking(1, |batch| batch.run(std::slice::from_ref(&job), true)).pop();
        match outcome {
            Some(Ok(_)) => Ok(start.elapsed()),
            Some(Err(why)) => Err(why),
            None => Err(Failure::Protocol("no outcome".into())),
        }
    }

    /// Closes every connection and stops the engine's threads, waiting up to `wait` for
    /// tasks still running. Batches after this fail at once (reason `"connect"`: "the engine
    /// is closed"). A batch still running keeps the runtime until it ends, and stops it then.
    /// Idempotent; must not be called from inside the engine's own runtime.
    pub fn close(&self, wait: Duration) {
        if let Some(generation) = self.current.close() {
            runtime::shut_down(generation, wait);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.current.is_closed()
    }

    fn generation(&self) -> Option<Arc<Generation>> {
        self.current.peek()
    }

    /// Every sidecar the engine has talked to (in this process), sorted by address.
    pub fn health(&self) -> Vec<SidecarHealth> {
        let now = Instant::now();
        let pools = self.generation().map(|g| g.pools()).unwrap_or_default();
        pools.iter().map(|p| p.report(now)).collect()
    }

    /// Counters since the engine was created.
    pub fn stats(&self) -> EngineStats {
        let generation = self.generation();
        let sidecars = generation.as_ref().map_or(0, |g| g.pools().len());
        let open = generation.as_ref().map_or(0, |g| g.open_conns());
        let pinned = generation.as_ref().map_or((0, 0, 0), |g| g.pinned());
        self.core.stats.snapshot(sidecars, open, pinned)
    }
}
