//! One batch: group ops by sidecar, connect, pipeline every request, wait until all are
//! answered or the deadline passes, then take back whatever is still pending before
//! returning (see [`Registry`]), and fold the outcome into each sidecar's health.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::answer::Delivered;
use super::conn::Conn;
use super::dest::Dest;
use super::pending::{Done, Recipient, Reply};
use super::pool::SidecarPool;
use super::runtime::Generation;
use super::stats::Stats;
use super::types::{EngineConfig, Failure};
use crate::proto::ReadRequest;

/// What one job asks for.
#[derive(Debug)]
pub(super) enum Want {
    /// A range, into the caller's buffer.
    Range(Dest),
    /// The whole needle.
    Whole,
    /// A PING.
    Ping,
}

/// One request of a batch.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) sidecar: String,
    pub(super) req: ReadRequest,
    pub(super) want: Want,
}

/// Everything a batch needs from the engine.
pub(super) struct BatchCtx<'a> {
    pub(super) generation: &'a Arc<Generation>,
    pub(super) cfg: &'a EngineConfig,
    pub(super) stats: &'a Arc<Stats>,
    /// How long the batch's lane waits spin before they sleep.
    pub(super) spin: Duration,
}

/// Tells apart the entries of different batches on one connection.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// The pending entries a batch created, by job index. Releasing it (explicitly, or by drop
/// while unwinding from a panic) leaves no entry of this batch that a task could write
/// through: each is removed, turned into "discard", or, if its reader is writing into it
/// right now, the connection is killed and the reader waited for.
struct Registry {
    owner: u64,
    entries: Vec<Option<(Arc<Conn>, u32)>>,
}

impl Registry {
    /// Returns how many connections had to be killed.
    fn release(&mut self) -> usize {
        let mut writing: Vec<Arc<Conn>> = Vec::new();
        for (conn, id) in self.entries.iter_mut().filter_map(Option::take) {
            if conn.cancel(id, self.owner) && !writing.iter().any(|c| Arc::ptr_eq(c, &conn)) {
                writing.push(conn);
            }
        }
        for conn in &writing {
            conn.kill_and_wait();
        }
        writing.len()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// One job's outcome.
pub(super) type Outcome = Result<Delivered, Failure>;

/// A connection seat as a batch starts: open already, or being connected by a task.
enum Seat {
    Open(Arc<Conn>),
    Connecting(JoinHandle<Result<Arc<Conn>, Failure>>),
}

/// Runs `jobs` and returns one outcome per job, giving up on answers at `deadline`. With
/// `probe`, sidecars in back-off are tried anyway. Must not be called from a task of the
/// engine's runtime (it blocks); its blocking threads are fine.
pub(super) fn run(
    ctx: &BatchCtx<'_>,
    jobs: &[Job],
    probe: bool,
    deadline: Instant,
) -> Vec<Outcome> {
    let mut results: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
    let mut groups: Vec<(Arc<SidecarPool>, Vec<usize>)> = Vec::new();
    let mut by_addr: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let g = *by_addr.entry(&job.sidecar).or_insert_with(|| {
            let pool = ctx.generation.pool(&job.sidecar, ctx.cfg.conns_per_sidecar);
            groups.push((pool, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let now = Instant::now();
    groups.retain(|(pool, idxs)| {
        let down = !probe && pool.in_backoff(now);
        for &i in idxs.iter().filter(|_| down) {
            results[i] = Some(Err(Failure::Down));
        }
        !down
    });

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut reg = Registry {
        owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        entries: jobs.iter().map(|_| None).collect(),
    };
    let mut io = Io {
        ctx,
        jobs,
        results: &mut results,
        reg: &mut reg,
        tx,
        deadline,
        recorded: jobs.iter().map(|_| false).collect(),
    };
    ctx.generation.rt.block_on(io.drive(&groups, &mut rx));
    let recorded = io.recorded;
    let killed = reg.release();
    // From here on no task can reach a destination of this batch.
    if killed > 0 {
        ctx.stats.aborted(killed);
    }
    // Answers that completed between the deadline and the release are delivered after all.
    while let Ok(Done { tag, result }) = rx.try_recv() {
        if results[tag].is_none() && result.is_ok() {
            results[tag] = Some(result);
        }
    }
    let results: Vec<Outcome> =
        results.into_iter().map(|r| r.unwrap_or(Err(Failure::Timeout))).collect();
    for (pool, idxs) in &groups {
        // Connect and handshake failures were recorded where they happened.
        let failures: Vec<Failure> = idxs
            .iter()
            .filter(|&&i| !recorded[i])
            .filter_map(|&i| results[i].as_ref().err())
            .cloned()
            .collect();
        let success = idxs.iter().any(|&i| results[i].is_ok());
        pool.record(&failures, success, ctx.cfg, ctx.stats);
    }
    results
}

/// The async half of a batch, borrowed state only.
struct Io<'a, 'b> {
    ctx: &'a BatchCtx<'b>,
    jobs: &'a [Job],
    results: &'a mut [Option<Outcome>],
    reg: &'a mut Registry,
    tx: UnboundedSender<Done>,
    deadline: Instant,
    /// Ops whose failure is already in the sidecar's health (their connect failed).
    recorded: Vec<bool>,
}

impl Io<'_, '_> {
    async fn drive(
        &mut self,
        groups: &[(Arc<SidecarPool>, Vec<usize>)],
        rx: &mut UnboundedReceiver<Done>,
    ) {
        // Start every connect at once (each bounded), so dead sidecars cost one connect
        // timeout in total, not one each.
        let limit = self
            .ctx
            .cfg
            .connect_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        // Open connections are taken as they are; a task (and its wake-up) only for a seat
        // that needs connecting.
        let found: Vec<Vec<(usize, Option<Arc<Conn>>)>> = groups
            .iter()
            .map(|(pool, idxs)| {
                let seats = pool.pick_seats(idxs.len()).into_iter();
                seats.map(|seat| (seat, pool.open_conn(seat))).collect()
            })
            .collect();
        // Room for every connection this batch is about to make, before any of them starts.
        let adding = found.iter().flatten().filter(|(_, conn)| conn.is_none()).count();
        if adding > 0 {
            self.ctx.generation.make_room(self.ctx.cfg.max_conns, adding, 0, self.ctx.stats);
        }
        let seats: Vec<Vec<Seat>> = groups
            .iter()
            .zip(found)
            .map(|((pool, _), found)| {
                found
                    .into_iter()
                    .map(|(seat, conn)| match conn {
                        Some(conn) => Seat::Open(conn),
                        None => {
                            let cfg = *self.ctx.cfg;
                            let verbs = self.ctx.generation.verbs(&cfg);
                            let stats = self.ctx.stats.clone();
                            let room = Arc::downgrade(self.ctx.generation);
                            let job = pool.clone().conn(seat, cfg, stats, limit, verbs, room);
                            Seat::Connecting(tokio::spawn(job))
                        }
                    })
                    .collect()
            })
            .collect();
        let mut outstanding = 0usize;
        for ((_, idxs), seats) in groups.iter().zip(seats) {
            let mut open = Vec::new();
            let mut first_error = None;
            for seat in seats {
                let handle = match seat {
                    Seat::Open(conn) => {
                        open.push(conn);
                        continue;
                    }
                    Seat::Connecting(handle) => handle,
                };
                match handle.await {
                    Ok(Ok(conn)) => open.push(conn),
                    Ok(Err(why)) => {
                        first_error.get_or_insert(why);
                    }
                    Err(e) => {
                        first_error.get_or_insert(Failure::Connect(format!("connect task: {e}")));
                    }
                }
            }
            for (k, &i) in idxs.iter().enumerate() {
                let submitted = match open.get(k % open.len().max(1)) {
                    Some(conn) => self.submit(conn, i),
                    None => {
                        self.recorded[i] = true;
                        Err(first_error.clone().unwrap_or(Failure::Connect("no connection".into())))
                    }
                };
                match submitted {
                    Ok(()) => outstanding += 1,
                    Err(why) => self.results[i] = Some(Err(why)),
                }
            }
        }
        let deadline = tokio::time::Instant::from_std(self.deadline);
        while outstanding > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Done { tag, result })) => {
                    self.reg.entries[tag] = None;
                    self.results[tag] = Some(result);
                    outstanding -= 1;
                }
                // The deadline passed (the channel cannot close: `self.tx` keeps it open).
                _ => break,
            }
        }
    }

    fn submit(&mut self, conn: &Arc<Conn>, i: usize) -> Result<(), Failure> {
        let job = &self.jobs[i];
        let reply = Reply { tag: i, tx: self.tx.clone() };
        let owner = self.reg.owner;
        let id = match job.want {
            Want::Range(dest) => {
                conn.submit_read(&job.req, Recipient::Range(dest), reply, owner)?
            }
            Want::Whole => conn.submit_read(&job.req, Recipient::Whole, reply, owner)?,
            Want::Ping => conn.submit_ping(reply, owner)?,
        };
        self.reg.entries[i] = Some((conn.clone(), id));
        Ok(())
    }
}
