//! The lane: a small batch for one sidecar, run entirely on the calling thread over a
//! blocking connection ([`LaneConn`]).
//!
//! The async path costs several thread hops per batch (the caller wakes the writer task,
//! the reader task wakes the caller), each a wake-up and a context switch; on a small
//! machine those dominate a 4 KiB read. The lane writes every READ of the batch in one
//! `write`, then reads the answers (in any order, matched by request id) itself, ranged
//! payloads straight into the caller's slices. Because the caller's buffer is only used
//! while the call runs, plain borrows do: no raw pointers, no cancellation protocol.
//!
//! Over verbs (a connection whose sidecar chose verbs in the handshake, offered exactly as
//! on an async connection) each READ names a slot of the connection's own receive pool, and
//! an answer is complete once both its DATA frame and its receive completion are in; the
//! calling thread polls for the completion itself and copies the bytes from the slot into
//! the caller's slice (`verbs/lane.rs`).
//!
//! A lane connection goes back to its sidecar's idle list only after a batch that ended
//! cleanly (every request answered, nothing left unread); after any error or timeout it is
//! dropped, since answers it still owes would otherwise reach the next batch (and over
//! verbs its queue pair is destroyed before its pool, so late writes land nowhere). Health
//! works as on the async path: a sidecar in back-off is not tried, a connect failure,
//! timeout or protocol error marks it down, and a handshake or an answer brings it back up.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::answer::{self, Asked, Carried, Delivered, Verdict};
use super::batch::{BatchCtx, Outcome};
use super::frames;
use super::lane_conn::{timed_out, LaneConn, Offer};
use super::pool::{LaneTicket, SidecarPool};
use super::types::{EngineConfig, Failure, Transport, WholeNeedle};
use super::verbs::{self, lane::LaneLink, rx};
use crate::proto::{self, FrameHeader, Kind, ReadRequest};

/// Most ops a batch may have to take the lane: a handful of requests pipelined on one
/// connection; larger batches gain from spreading over the async connections.
pub(super) const LANE_MAX_OPS: usize = 8;
/// Largest ranged op the lane takes: past this, transfer time dwarfs the hops saved, and
/// the async path spreads big batches over several connections.
pub(super) const LANE_MAX_LEN: u32 = 1 << 20;
/// Largest batch (bytes asked for in all) whose waits spin: past this the transfer takes
/// long enough that a wake-up is a small part of it, and spinning threads (several
/// readers of a mount at once) take the CPU the sidecar and the kernel need to send it.
pub(super) const SPIN_MAX_BYTES: u64 = 64 << 10;

/// Where an answer goes.
#[derive(Debug)]
pub(super) enum Target<'b> {
    /// Into this slice of the caller's buffer.
    Range(&'b mut [u8]),
    /// Into a fresh `Vec` (whole-needle reads).
    Whole,
}

/// One request of a lane batch.
#[derive(Debug)]
pub(super) struct LaneOp<'b> {
    pub(super) req: ReadRequest,
    pub(super) target: Target<'b>,
}

/// How long the waits of a lane batch spin: `spin` for small ranged batches (at most
/// [`SPIN_MAX_BYTES`] in all), else not at all.
pub(super) fn spin_for(ops: &[LaneOp<'_>], spin: Duration) -> Duration {
    let asked: u64 = ops.iter().map(|op| u64::from(op.req.length)).sum();
    let whole = ops.iter().any(|op| matches!(op.target, Target::Whole));
    if whole || asked > SPIN_MAX_BYTES {
        Duration::ZERO
    } else {
        spin
    }
}

/// The sidecar a batch should go to over the lane, given each op's sidecar and length
/// (0 for whole reads): `None` unless there are 1 to [`LANE_MAX_OPS`] ops, all for one
/// sidecar and none longer than [`LANE_MAX_LEN`].
pub(super) fn target<'o>(mut ops: impl Iterator<Item = (&'o str, u32)>) -> Option<&'o str> {
    let (addr, len) = ops.next()?;
    let mut count = 1;
    if len > LANE_MAX_LEN {
        return None;
    }
    for (other, len) in ops {
        count += 1;
        if count > LANE_MAX_OPS || other != addr || len > LANE_MAX_LEN {
            return None;
        }
    }
    Some(addr)
}

/// The claim on a lane connection of `addr`'s sidecar for one batch, unless the sidecar's
/// lane connections are all busy (the batch then takes the async path).
pub(super) fn ticket(ctx: &BatchCtx<'_>, addr: &str) -> Option<LaneTicket> {
    ctx.generation.pool(addr, ctx.cfg.conns_per_sidecar).lane_ticket()
}

/// Runs `ops` on the ticket's sidecar and returns one outcome per op, giving up at
/// `deadline`.
pub(super) fn run(
    ctx: &BatchCtx<'_>,
    mut ticket: LaneTicket,
    ops: &mut [LaneOp<'_>],
    deadline: Instant,
) -> Vec<Outcome> {
    let pool = ticket.pool().clone();
    if pool.in_backoff(Instant::now()) {
        return ops.iter().map(|_| Err(Failure::Down)).collect();
    }
    let mut wire = match ticket.wire.take() {
        Some(wire) => wire,
        None => match connect(ctx, &pool, deadline) {
            Ok(wire) => wire,
            Err(why) => {
                pool.record(std::slice::from_ref(&why), false, ctx.cfg, ctx.stats);
                return ops.iter().map(|_| Err(why.clone())).collect();
            }
        },
    };
    wire.spin = spin_for(ops, ctx.spin);
    let mut exchange = Exchange {
        max_body: frames::max_answer(&wire.ack),
        window: frames::window(&wire.ack, want_inflight(ctx.cfg)),
        wire: &mut wire,
        deadline,
        pending: Vec::with_capacity(ops.len()),
        results: ops.iter().map(|_| None).collect(),
        aborted: false,
    };
    let ended = exchange.run(ops);
    let (aborted, results) = (exchange.aborted, exchange.results);
    if aborted {
        ctx.stats.aborted(1);
    }
    let results: Vec<Outcome> = match ended {
        Ok(()) => {
            ticket.keep(wire);
            // Every op was answered or refused before sending; `Timeout` cannot show.
            results.into_iter().map(|r| r.unwrap_or(Err(Failure::Timeout))).collect()
        }
        Err(why) => {
            drop((wire, ticket)); // it may owe answers: never reuse it
            pool.lane_broke();
            results.into_iter().map(|r| r.unwrap_or_else(|| Err(why.clone()))).collect()
        }
    };
    pool.record_results(&results, ctx.cfg, ctx.stats);
    results
}

/// Requests a lane connection asks to have in flight: a batch has at most
/// [`LANE_MAX_OPS`], so asking for more would only make a verbs connection register slots
/// and post receives it never uses.
fn want_inflight(cfg: &EngineConfig) -> u32 {
    cfg.max_inflight.min(LANE_MAX_OPS as u32)
}

/// A new lane connection, within the connect timeout (and the batch's deadline). It offers
/// verbs exactly when a new async connection would ([`SidecarPool::conn`]), makes room in a
/// full pinned budget the same way, and falls back the same way under [`Transport::Auto`].
fn connect(ctx: &BatchCtx<'_>, pool: &SidecarPool, deadline: Instant) -> Result<LaneConn, Failure> {
    let limit = deadline.min(Instant::now() + ctx.cfg.connect_timeout);
    ctx.generation.make_room(ctx.cfg.max_conns, 1, 1, ctx.stats);
    let host = ctx.generation.verbs(ctx.cfg)?;
    if let Some(short) = pool.short_of_room(host.as_ref()) {
        // The caller's thread, not a runtime worker: it may wait for the slices it frees.
        ctx.generation.reclaim_pinned(&short, ctx.stats, limit);
    }
    let host = pool.offer_verbs(host, ctx.cfg.transport)?;
    let addrs = resolve(ctx, &pool.addr, limit)?;
    let want = want_inflight(ctx.cfg);
    let tcp_ok = ctx.cfg.transport != Transport::Verbs;
    let offer = host.as_ref().map(|host| Offer { host, tcp_ok, stats: ctx.stats });
    let wire = match LaneConn::connect(&addrs, want, limit, offer) {
        Err(Failure::Verbs(why)) if ctx.cfg.transport == Transport::Auto => {
            pool.verbs_failed(&why);
            LaneConn::connect(&addrs, want, limit, None)?
        }
        other => other?,
    };
    pool.note_transport(wire.transport());
    pool.connected(wire.ack.server_id, pool.lane_replaces(), ctx.cfg, ctx.stats);
    Ok(wire)
}

/// The addresses of `addr`: parsed when it is an `ip:port`, else looked up on the engine
/// runtime's blocking threads, so the wait has a deadline (`getaddrinfo` has none).
fn resolve(ctx: &BatchCtx<'_>, addr: &str, limit: Instant) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(one) = addr.parse::<SocketAddr>() {
        return Ok(vec![one]);
    }
    let wait = limit.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let lookup = tokio::time::timeout(wait, tokio::net::lookup_host(addr));
    match ctx.generation.rt.block_on(lookup) {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(e)) => Err(Failure::Connect(format!("resolve {addr}: {e}"))),
        Err(_) => Err(Failure::Connect(format!("resolve {addr}: no answer in time"))),
    }
}

fn io_failure(e: io::Error) -> Failure {
    if timed_out(&e) {
        Failure::Timeout
    } else {
        Failure::Lost(e.to_string())
    }
}

fn protocol(what: impl Into<String>) -> Failure {
    Failure::protocol(what)
}

/// One batch's requests and answers on one connection.
struct Exchange<'w> {
    wire: &'w mut LaneConn,
    deadline: Instant,
    max_body: u32,
    /// Requests allowed in flight at once.
    window: usize,
    /// `(request id, op index, echo its answer must carry)` of requests sent and not yet
    /// answered.
    pending: Vec<(u32, usize, u32)>,
    results: Vec<Option<Outcome>>,
    /// The deadline passed while a payload was landing in the caller's buffer.
    aborted: bool,
}

impl Exchange<'_> {
    /// Sends and answers every op; `Err` ends the batch (and the connection): ops without
    /// a result share that failure.
    fn run(&mut self, ops: &mut [LaneOp<'_>]) -> Result<(), Failure> {
        // Ops the sidecar would refuse, or that do not fit a receive slot, fail here; the
        // rest queue up.
        let slot_size = self.wire.verbs.as_ref().map(LaneLink::slot_size);
        let mut queue = VecDeque::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let fits = slot_size.map_or(Ok(()), |size| verbs::check_fits(&op.req, size));
            match fits.and_then(|()| frames::read_body(&op.req, &self.wire.ack)) {
                Ok(frame) => queue.push_back((i, frame)),
                Err(why) => self.results[i] = Some(Err(why)),
            }
        }
        self.send(&mut queue)?;
        while !self.pending.is_empty() {
            self.answer(ops)?;
            self.send(&mut queue)?;
        }
        Ok(())
    }

    /// Sends queued requests, in one write, until the window is full (or, on verbs, every
    /// receive slot is held) or the queue empty.
    fn send(&mut self, queue: &mut VecDeque<(usize, Vec<u8>)>) -> Result<(), Failure> {
        let mut out = Vec::new();
        while self.pending.len() < self.window {
            let Some((i, mut frame)) = queue.pop_front() else { break };
            let id = self.wire.next_id();
            if let Some(link) = self.wire.verbs.as_mut() {
                match link.assign(id)? {
                    Some(slot) => frames::set_dest(&mut frame, slot),
                    None if self.pending.is_empty() => {
                        // Cannot happen: a kept connection holds no slot between batches.
                        return Err(Failure::Verbs("no free receive slot".into()));
                    }
                    None => {
                        queue.push_front((i, frame));
                        break;
                    }
                }
            }
            frames::stamp(&mut frame, Kind::Read, id);
            let echo = frames::echo_of(&frame);
            if out.is_empty() {
                out = frame; // the usual single request: no copy
            } else {
                out.extend_from_slice(&frame);
            }
            self.pending.push((id, i, echo));
        }
        if out.is_empty() {
            return Ok(());
        }
        self.wire.send(&out, self.deadline).map_err(io_failure)
    }

    /// Reads one answer and settles its op.
    fn answer(&mut self, ops: &mut [LaneOp<'_>]) -> Result<(), Failure> {
        let deadline = self.deadline;
        let mut raw = [0u8; proto::FRAME_HEADER_LEN];
        self.wire.read_exact(&mut raw, deadline).map_err(io_failure)?;
        let header =
            FrameHeader::decode(&raw, self.max_body).map_err(|e| protocol(e.to_string()))?;
        if header.kind != Kind::Data {
            return Err(protocol(format!("{:?} frame where DATA was due", header.kind)));
        }
        // A lane connection owes no answers from earlier batches: an unknown id is a fault.
        let id = header.request_id;
        let at = self
            .pending
            .iter()
            .position(|&(pending, _, _)| pending == id)
            .ok_or_else(|| protocol(format!("answer to request {id}, which is not pending")))?;
        let (_, i, echo) = self.pending.swap_remove(at);
        answer::check_echo(id, header.echo, echo)?;
        if self.wire.verbs.is_some() {
            let result = self.answer_verbs(id, &header, &mut ops[i].target)?;
            self.results[i] = Some(result);
            return Ok(());
        }
        let payload = answer::data_body(&header, Carried::Inline)?;
        let mut raw = [0u8; proto::DATA_HEADER_LEN];
        self.wire.read_exact(&mut raw, deadline).map_err(io_failure)?;
        let data = answer::data_header(&raw, payload, Carried::Inline)?;
        let n = payload as usize;
        let asked = match &ops[i].target {
            Target::Range(dest) => Asked::Range(dest.len()),
            Target::Whole => Asked::Whole,
        };
        let result = match (answer::judge(&data, n, asked)?, &mut ops[i].target) {
            (Verdict::Refuse(why), _) => {
                self.wire.skip(n, deadline).map_err(io_failure)?;
                Err(why)
            }
            (Verdict::Write, Target::Range(dest)) => {
                if let Err(e) = self.wire.read_exact(&mut dest[..n], deadline) {
                    let why = io_failure(e);
                    self.aborted = why == Failure::Timeout;
                    return Err(why);
                }
                answer::range_outcome(n, dest.len())
            }
            _ => {
                let mut bytes = Vec::new();
                bytes
                    .try_reserve_exact(n)
                    .map_err(|_| protocol(format!("cannot allocate {n} bytes")))?;
                bytes.resize(n, 0);
                self.wire.read_exact(&mut bytes, deadline).map_err(io_failure)?;
                let needle =
                    WholeNeedle { data: bytes, crc: data.crc, needle_flags: data.needle_flags };
                Ok(Delivered::Whole(needle))
            }
        };
        self.results[i] = Some(result);
        Ok(())
    }

    /// Settles READ `id` on a verbs connection: the frame's body is the DATA header alone,
    /// the bytes are in the READ's receive slot once its completion is in; they are copied
    /// from there into the caller's slice (or a new `Vec`).
    fn answer_verbs(
        &mut self,
        id: u32,
        header: &FrameHeader,
        target: &mut Target<'_>,
    ) -> Result<Outcome, Failure> {
        let payload = answer::data_body(header, Carried::Written)?;
        let mut raw = [0u8; proto::DATA_HEADER_LEN];
        self.wire.read_exact(&mut raw, self.deadline).map_err(io_failure)?;
        let data = answer::data_header(&raw, payload, Carried::Written)?;
        let Some(link) = self.wire.verbs.as_mut() else {
            return Err(protocol("verbs answer on a tcp connection"));
        };
        let written = link.complete(id, &data, self.deadline)?;
        let bytes =
            written.as_ref().map_or(&[][..], |(lease, len)| &lease.bytes()[..*len as usize]);
        let asked = match target {
            Target::Range(dest) => Asked::Range(dest.len()),
            Target::Whole => Asked::Whole,
        };
        let outcome = match (answer::judge(&data, bytes.len(), asked)?, target) {
            (Verdict::Refuse(why), _) => Err(rx::refused(why, link.slot_size())),
            (Verdict::Write, Target::Range(dest)) => {
                dest[..bytes.len()].copy_from_slice(bytes);
                answer::range_outcome(bytes.len(), dest.len())
            }
            _ => Ok(Delivered::Whole(WholeNeedle {
                data: bytes.to_vec(),
                crc: data.crc,
                needle_flags: data.needle_flags,
            })),
        };
        if outcome.is_ok() {
            link.delivered(bytes.len());
        }
        Ok(outcome)
        // The slot's lease drops here: its write has landed, the slot is free again.
    }
}
