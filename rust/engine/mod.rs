//! The in-process client engine: reads needle bytes from sidecars over the wire protocol
//! (`docs/protocol.md`, tcp transport) straight into the caller's buffer.
//!
//! # Shape
//! An [`Engine`] owns a small tokio runtime (two worker threads named
//! `seaweed-rdma-engine`) and, per sidecar address, a pool of `conns_per_sidecar` TCP
//! connections. Each connection shakes hands (HELLO/HELLO_ACK), then a writer task sends
//! READ frames up to the granted `max_inflight` and a reader task matches DATA answers to
//! their requests by `request_id`, in whatever order they come. A batch spreads its ops over
//! the pool's connections and waits, up to [`EngineConfig::timeout`], for all of them.
//! The public calls block the calling thread; they must not be made from inside a tokio
//! runtime.
//!
//! Small batches skip all that, and its thread hops: up to `LANE_MAX_OPS` ops of at most
//! `LANE_MAX_LEN` bytes each, all for one sidecar, run on the calling thread over a
//! blocking connection of their own (the lane, `lane.rs`; up to `LANE_CONNS` per sidecar,
//! kept between batches). Pings, other batches, and small ones that find every lane
//! connection of their sidecar busy take the async path.
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
//! # Fork
//! The runtime's threads do not survive `fork()`; the first call in a child process builds
//! a fresh runtime and pools (see `runtime.rs`).

mod batch;
mod conn;
mod dest;
mod frames;
mod lane;
mod pool;
mod runtime;
mod stats;
mod tasks;
mod types;
mod wire;

#[cfg(test)]
mod e2e;
#[cfg(test)]
mod lane_tests;
#[cfg(test)]
mod probe;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use types::{EngineConfig, EngineStats, Failure, RangeOp, SidecarHealth, WholeNeedle, WholeOp};

use crate::error::{Error, Result};
use crate::proto::ReadRequest;
use batch::{Ctx, Job, Outcome, Want};
use conn::Delivered;
use lane::LaneOp;
use runtime::{Current, Generation};
use stats::Stats;

/// A batch's way onto the lane: the runtime generation its pools live in, and the claim on
/// one of the sidecar's lane connections.
type Lane = (Arc<Generation>, pool::LaneTicket);

/// The client engine; cheap to share between threads (`&self` everywhere).
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    stats: Arc<Stats>,
    current: Current,
    /// Whether small batches take the lane (always, except in tests of the async path).
    use_lane: bool,
}

impl Engine {
    /// Builds an engine and its runtime; connects lazily, on first use of each sidecar.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout, in-flight limit or connection count, or a
    /// back-off range with `backoff_min > backoff_max`; [`Error::Runtime`] when the
    /// runtime's threads cannot be started.
    pub fn new(cfg: EngineConfig) -> Result<Engine> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if cfg.timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if cfg.max_inflight == 0 || cfg.conns_per_sidecar == 0 {
            return bad("max_inflight and conns_per_sidecar must be at least 1");
        }
        if cfg.backoff_min > cfg.backoff_max {
            return bad("backoff_min must not exceed backoff_max");
        }
        let current = Current::new().map_err(Error::Runtime)?;
        Ok(Engine { cfg, stats: Arc::new(Stats::default()), current, use_lane: true })
    }

    /// The same engine with every batch on the async path, for tests of that path.
    #[cfg(test)]
    pub(crate) fn without_lane(self) -> Engine {
        Engine { use_lane: false, ..self }
    }

    /// The settings this engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Runs `f` with this process's runtime and pools; `n` failures if there are none.
    fn with_ctx(&self, n: usize, f: impl FnOnce(&Ctx<'_>) -> Vec<Outcome>) -> Vec<Outcome> {
        match self.current.get() {
            Ok(generation) => {
                f(&Ctx { generation: &generation, cfg: &self.cfg, stats: &self.stats })
            }
            Err(e) => {
                let why = Failure::Connect(format!("engine runtime: {e}"));
                (0..n).map(|_| Err(why.clone())).collect()
            }
        }
    }

    fn run(&self, jobs: &[Job], probe: bool) -> Vec<Outcome> {
        self.with_ctx(jobs.len(), |ctx| batch::run(ctx, jobs, probe))
    }

    fn run_lane(&self, lane: Lane, ops: &mut [LaneOp<'_>]) -> Vec<Outcome> {
        self.stats.lane_batch();
        let (generation, ticket) = lane;
        lane::run(&Ctx { generation: &generation, cfg: &self.cfg, stats: &self.stats }, ticket, ops)
    }

    /// A lane connection for a batch, if the batch qualifies (see [`lane::target`]) and
    /// its sidecar has one to spare; `None`: the batch takes the async path.
    fn lane<'o>(&self, ops: impl Iterator<Item = (&'o str, u32)>) -> Option<Lane> {
        let addr = lane::target(ops).filter(|_| self.use_lane)?;
        let generation = self.current.get().ok()?;
        let ctx = Ctx { generation: &generation, cfg: &self.cfg, stats: &self.stats };
        let ticket = lane::ticket(&ctx, addr)?;
        Some((generation, ticket))
    }

    fn count(&self, outcome: &Outcome) {
        match outcome {
            Ok(Delivered::Range(n)) => self.stats.delivered(u64::from(*n), false),
            Ok(Delivered::Whole(w)) => self.stats.delivered(w.data.len() as u64, true),
            Ok(Delivered::Pong) => {}
            Err(why) => self.stats.failed(why),
        }
    }

    /// Fills `buf[op.buf_offset .. op.buf_offset + op.len]` for each op and returns one
    /// outcome per op, in order (`Ok` = all `len` bytes delivered).
    ///
    /// Blocks for at most about [`EngineConfig::timeout`]. The buffer is written only while
    /// this call runs; a failed op's destination may hold partial bytes. Ops whose
    /// destinations fall outside `buf` or overlap another op's fail with
    /// [`Failure::BadOp`], as do ops longer than the sidecar's `max_read`.
    pub fn read_into(
        &self,
        buf: &mut [u8],
        ops: &[RangeOp],
    ) -> Vec<std::result::Result<(), Failure>> {
        self.stats.batch();
        let mut out = dest::validate(buf.len(), ops);
        let valid = ops.iter().zip(&out).filter(|(_, ok)| ok.is_ok());
        let (index, outcomes) = match self.lane(valid.map(|(op, _)| (&*op.sidecar, op.len))) {
            Some(lane) => self.ranges_on_lane(lane, buf, ops, &mut out),
            None => self.ranges_async(buf, ops, &mut out),
        };
        for why in out.iter().filter_map(|r| r.as_ref().err()) {
            self.stats.failed(why);
        }
        for (i, outcome) in index.into_iter().zip(outcomes) {
            self.count(&outcome);
            out[i] = outcome.map(|_| ());
        }
        out
    }

    /// The lane half of [`read_into`](Self::read_into): the validated ops' indexes and
    /// outcomes.
    fn ranges_on_lane(
        &self,
        lane: Lane,
        buf: &mut [u8],
        ops: &[RangeOp],
        out: &mut [std::result::Result<(), Failure>],
    ) -> (Vec<usize>, Vec<Outcome>) {
        let dests = dest::split(buf, ops, out);
        let (index, mut lane_ops): (Vec<usize>, Vec<LaneOp<'_>>) = with_dests(ops, dests, out)
            .map(|(i, op, dest)| (i, LaneOp { req: op.request(), sink: lane::Sink::Range(dest) }))
            .unzip();
        (index, self.run_lane(lane, &mut lane_ops))
    }

    /// The async half of [`read_into`](Self::read_into), answering as
    /// [`ranges_on_lane`](Self::ranges_on_lane) does.
    fn ranges_async(
        &self,
        buf: &mut [u8],
        ops: &[RangeOp],
        out: &mut [std::result::Result<(), Failure>],
    ) -> (Vec<usize>, Vec<Outcome>) {
        let dests = dest::carve(buf, ops, out);
        let (index, jobs): (Vec<usize>, Vec<Job>) = with_dests(ops, dests, out)
            .map(|(i, op, dest)| {
                let job =
                    Job { sidecar: op.sidecar.clone(), req: op.request(), want: Want::Range(dest) };
                (i, job)
            })
            .unzip();
        (index, self.run(&jobs, false))
    }

    /// Reads each needle's whole data (with its stored CRC and flags, unverified: see
    /// [`WholeNeedle::verify`]). Blocks for at most about [`EngineConfig::timeout`].
    pub fn read_whole(&self, ops: &[WholeOp]) -> Vec<std::result::Result<WholeNeedle, Failure>> {
        self.stats.batch();
        let outcomes = match self.lane(ops.iter().map(|op| (&*op.sidecar, 0))) {
            Some(lane) => {
                let mut lane_ops: Vec<LaneOp<'_>> = ops
                    .iter()
                    .map(|op| LaneOp { req: op.request(), sink: lane::Sink::Whole })
                    .collect();
                self.run_lane(lane, &mut lane_ops)
            }
            None => {
                let jobs: Vec<Job> = ops
                    .iter()
                    .map(|op| Job {
                        sidecar: op.sidecar.clone(),
                        req: op.request(),
                        want: Want::Whole,
                    })
                    .collect();
                self.run(&jobs, false)
            }
        };
        outcomes
            .into_iter()
            .map(|outcome| {
                self.count(&outcome);
                match outcome {
                    Ok(Delivered::Whole(needle)) => Ok(needle),
                    Ok(_) => Err(Failure::Protocol("unexpected answer kind".into())),
                    Err(why) => Err(why),
                }
            })
            .collect()
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
        let outcome = self.run(std::slice::from_ref(&job), true).pop();
        match outcome {
            Some(Ok(_)) => Ok(start.elapsed()),
            Some(Err(why)) => Err(why),
            None => Err(Failure::Protocol("no outcome".into())),
        }
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
        let sidecars = self.generation().map_or(0, |g| g.pools().len());
        self.stats.snapshot(sidecars)
    }
}

/// Pairs each usable op with its destination, by op index; an op that passed validation but
/// got no destination (a null address) fails as a bad op.
fn with_dests<'o, D>(
    ops: &'o [RangeOp],
    dests: Vec<Option<D>>,
    out: &mut [std::result::Result<(), Failure>],
) -> impl Iterator<Item = (usize, &'o RangeOp, D)> {
    let mut usable = Vec::with_capacity(ops.len());
    for (i, (op, dest)) in ops.iter().zip(dests).enumerate() {
        match dest {
            Some(dest) => usable.push((i, op, dest)),
            None if out[i].is_ok() => {
                out[i] = Err(Failure::BadOp("destination has no address".into()));
            }
            None => {}
        }
    }
    usable.into_iter()
}
