//! The body of a batch, apart from the [`Engine`](super::Engine) that starts it.
//!
//! A blocking call runs it on the caller's thread; a submitted one ([`super::ticket`]) on one
//! of the engine runtime's blocking threads, after the call has returned. So what a batch
//! needs of its engine is gathered in [`EngineCore`], cheap to clone and owned by the batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::answer::Delivered;
use super::batch::{self, BatchCtx, Job, Outcome, Want};
use super::dest;
use super::lane::{self, LaneOp};
use super::pool;
use super::runtime::Generation;
use super::stats::Stats;
use super::types::{EngineConfig, Failure, RangeOp, WholeNeedle, WholeOp};

/// Per-op results of a ranged batch.
pub(super) type RangeResults = Vec<Result<(), Failure>>;
/// Per-op results of a whole-needle batch.
pub(super) type WholeResults = Vec<Result<WholeNeedle, Failure>>;

/// What every batch needs of its engine.
#[derive(Debug, Clone)]
pub(super) struct EngineCore {
    pub(super) cfg: EngineConfig,
    pub(super) stats: Arc<Stats>,
    /// Whether small batches take the lane (always, except in tests of the async path).
    pub(super) use_lane: bool,
    /// Submitted batches running now (see [`EngineCore::submitted_spin`]).
    pub(super) submitted: Arc<AtomicUsize>,
}

impl EngineCore {
    /// Counts a submitted batch as running until the guard drops, and says how long its
    /// lane waits may spin: as long as on a caller's thread while it runs alone (one event
    /// loop task reading at a time gains the wake-up it saves), not at all beside others
    /// (several blocking threads spinning at once take the CPU the event loop and the
    /// sidecar need; measured on a mount with 4 readers: fewer reads per second).
    pub(super) fn submitted_spin(&self) -> (Duration, SubmittedGuard<'_>) {
        let running = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
        let spin = if running == 1 { self.cfg.busy_poll } else { Duration::ZERO };
        (spin, SubmittedGuard(&self.submitted))
    }

    /// `n` failures, for a batch that cannot run because the runtime cannot be built.
    pub(super) fn unavailable<T>(&self, n: usize, e: &std::io::Error) -> Vec<Result<T, Failure>> {
        self.stats.batch();
        let why = Failure::Connect(format!("engine runtime: {e}"));
        (0..n)
            .map(|_| {
                self.stats.failed(&why);
                Err(why.clone())
            })
            .collect()
    }

    /// `n` timeouts, for a submitted batch whose deadline passed before a thread took it up
    /// (it must not touch the network then: a timeout there would mark a healthy sidecar down).
    pub(super) fn expired<T>(&self, n: usize) -> Vec<Result<T, Failure>> {
        self.stats.batch();
        (0..n)
            .map(|_| {
                self.stats.failed(&Failure::Timeout);
                Err(Failure::Timeout)
            })
            .collect()
    }
}

/// One batch: the engine's core, the runtime generation its pools live in, and the moment
/// it gives up.
pub(super) struct ReadBatch<'a> {
    pub(super) core: &'a EngineCore,
    pub(super) generation: &'a Arc<Generation>,
    pub(super) deadline: Instant,
    /// How long a lane wait of this batch spins before it sleeps (see
    /// [`EngineConfig::busy_poll`]).
    pub(super) spin: Duration,
}

/// Counts a submitted batch out when it ends, however it ends.
pub(super) struct SubmittedGuard<'a>(&'a AtomicUsize);

impl Drop for SubmittedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A batch's way onto the lane: the claim on one of the sidecar's lane connections.
type Lane = pool::LaneTicket;

impl ReadBatch<'_> {
    fn ctx(&self) -> BatchCtx<'_> {
        BatchCtx {
            generation: self.generation,
            cfg: &self.core.cfg,
            stats: &self.core.stats,
            spin: self.spin,
        }
    }

    /// Runs `jobs` on the async path; with `probe`, sidecars in back-off are tried anyway.
    pub(super) fn run(&self, jobs: &[Job], probe: bool) -> Vec<Outcome> {
        batch::run(&self.ctx(), jobs, probe, self.deadline)
    }

    fn run_lane(&self, lane: Lane, ops: &mut [LaneOp<'_>]) -> Vec<Outcome> {
        self.core.stats.lane_batch();
        lane::run(&self.ctx(), lane, ops, self.deadline)
    }

    /// A lane connection for a batch, if the batch qualifies (see [`lane::target`]) and
    /// its sidecar has one to spare; `None`: the batch takes the async path.
    fn lane<'o>(&self, ops: impl Iterator<Item = (&'o str, u32)>) -> Option<Lane> {
        let addr = lane::target(ops).filter(|_| self.core.use_lane)?;
        lane::ticket(&self.ctx(), addr)
    }

    fn count(&self, outcome: &Outcome) {
        let stats = &self.core.stats;
        match outcome {
            Ok(Delivered::Range(n)) => stats.delivered(u64::from(*n), false),
            Ok(Delivered::Whole(w)) => stats.delivered(w.data.len() as u64, true),
            Ok(Delivered::Pong) => {}
            Err(why) => stats.failed(why),
        }
    }

    /// [`Engine::read_into`](super::Engine::read_into), up to this batch's deadline.
    pub(super) fn read_into(&self, buf: &mut [u8], ops: &[RangeOp]) -> RangeResults {
        self.core.stats.batch();
        let mut out = dest::validate(buf.len(), ops);
        let valid = ops.iter().zip(&out).filter(|(_, ok)| ok.is_ok());
        let (index, outcomes) = match self.lane(valid.map(|(op, _)| (&*op.sidecar, op.len))) {
            Some(lane) => self.ranges_on_lane(lane, buf, ops, &mut out),
            None => self.ranges_async(buf, ops, &mut out),
        };
        for why in out.iter().filter_map(|r| r.as_ref().err()) {
            self.core.stats.failed(why);
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
        out: &mut [Result<(), Failure>],
    ) -> (Vec<usize>, Vec<Outcome>) {
        let dests = dest::split(buf, ops, out);
        let (index, mut lane_ops): (Vec<usize>, Vec<LaneOp<'_>>) = with_dests(ops, dests, out)
            .map(|(i, op, dest)| {
                (i, LaneOp { req: op.request(), target: lane::Target::Range(dest) })
            })
            .unzip();
        (index, self.run_lane(lane, &mut lane_ops))
    }

    /// The async half of [`read_into`](Self::read_into), answering as
    /// [`ranges_on_lane`](Self::ranges_on_lane) does.
    fn ranges_async(
        &self,
        buf: &mut [u8],
        ops: &[RangeOp],
        out: &mut [Result<(), Failure>],
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

    /// [`Engine::read_whole`](super::Engine::read_whole), up to this batch's deadline.
    pub(super) fn read_whole(&self, ops: &[WholeOp]) -> WholeResults {
        self.core.stats.batch();
        let outcomes = match self.lane(ops.iter().map(|op| (&*op.sidecar, 0))) {
            Some(lane) => {
                let mut lane_ops: Vec<LaneOp<'_>> = ops
                    .iter()
                    .map(|op| LaneOp { req: op.request(), target: lane::Target::Whole })
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
}

/// Pairs each usable op with its destination, by op index; an op that passed validation but
/// got no destination (a null address) fails as a bad op.
fn with_dests<'o, D>(
    ops: &'o [RangeOp],
    dests: Vec<Option<D>>,
    out: &mut [Result<(), Failure>],
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
