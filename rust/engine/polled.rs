//! A small batch that an event loop drives itself ([`Engine::start_polled`]): its READs
//! go out on one of the sidecar's idle lane connections from the calling thread, the loop
//! waits until that socket is readable, and [`Polled::poll`] takes what has arrived without
//! blocking, writing each complete answer into the caller's buffer.
//!
//! A submitted batch ([`Engine::submit_read_into`]) hands the work to a blocking thread and
//! the result back through an eventfd: two thread hops per read, each a wake-up of a thread
//! that may sit on an idle CPU. Here the only thread involved is the loop's own, which wakes
//! once, when the answer is in. It is for small reads only (answers that arrive in a segment
//! or two, so a few polls finish them), over tcp, on a connection that already exists;
//! anything else is left to the submitted path (`None` from `start_polled`).
//!
//! Bytes are written into the caller's buffer only inside `poll`, on the caller's thread,
//! so a batch given up early (dropped) writes nothing afterwards; its connection, which
//! may still owe answers, is dropped with it.

use std::time::Instant;

use super::answer::{self, Asked, Carried, Verdict};
use super::dest;
use super::frames;
use super::lane;
use super::lane_conn::LaneConn;
use super::pool::LaneTicket;
use super::reads::EngineCore;
use super::ticket::DestBuffer;
use super::types::{Failure, RangeOp};
use super::Engine;
use crate::proto::{FrameHeader, Kind, DATA_HEADER_LEN, FRAME_HEADER_LEN};

/// Largest batch (bytes asked in all) a polled batch takes.
pub const POLLED_MAX_BYTES: u64 = 64 << 10;

/// A small batch in flight on a lane connection; see the module docs.
pub struct Polled<B: DestBuffer> {
    core: EngineCore,
    ticket: Option<LaneTicket>,
    wire: Option<LaneConn>,
    dest: B,
    ops: Vec<RangeOp>,
    /// `(request id, op index, echo its answer must carry)` of READs not yet answered.
    pending: Vec<(u32, usize, u32)>,
    out: Vec<Result<(), Failure>>,
    /// Bytes read and not yet settled: the start of the next answer.
    rx: Vec<u8>,
    max_body: u32,
    deadline: Instant,
    finished: bool,
}

impl Engine {
    /// Sends `ops` on an idle lane connection to their sidecar and returns the batch to
    /// [`poll`](Polled::poll), or gives `dest` back when the batch does not qualify: more
    /// than one sidecar, more than [`POLLED_MAX_BYTES`] or what the lane takes, an op the
    /// buffer cannot hold, a sidecar in back-off, no idle tcp lane connection, or a socket
    /// that did not take the requests at once. The caller then submits it instead.
    ///
    /// # Errors
    /// `Err(dest)`: the batch did not start; nothing was written.
    pub fn start_polled<B: DestBuffer>(
        &self,
        mut dest: B,
        ops: Vec<RangeOp>,
    ) -> Result<Polled<B>, B> {
        let total: u64 = ops.iter().map(|op| u64::from(op.len)).sum();
        if !self.core.use_lane || total > POLLED_MAX_BYTES {
            return Err(dest);
        }
        let Some(addr) = lane::target(ops.iter().map(|op| (&*op.sidecar, op.len))) else {
            return Err(dest);
        };
        let out = dest::validate(dest.bytes().len(), &ops);
        if out.iter().any(Result::is_err) {
            return Err(dest);
        }
        let Ok(generation) = self.current.get() else { return Err(dest) };
        let pool = generation.pool(addr, self.core.cfg.conns_per_sidecar);
        if pool.in_backoff(Instant::now()) {
            return Err(dest);
        }
        let Some(mut ticket) = pool.lane_ticket() else { return Err(dest) };
        let Some(mut wire) = ticket.wire.take() else { return Err(dest) };
        let want = self.core.cfg.max_inflight.min(lane::LANE_MAX_OPS as u32);
        if wire.verbs.is_some() || ops.len() > frames::window(&wire.ack, want) {
            ticket.keep(wire);
            return Err(dest);
        }
        let mut frames_out = Vec::new();
        let mut pending = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let Ok(mut frame) = frames::read_body(&op.request(), &wire.ack) else {
                ticket.keep(wire);
                return Err(dest);
            };
            let id = wire.next_id();
            frames::stamp(&mut frame, Kind::Read, id);
            frames_out.extend_from_slice(&frame);
            pending.push((id, i, frames::echo_of(&frame)));
        }
        match wire.try_send(&frames_out) {
            Ok(true) => {}
            _ => {
                // Part of a frame may be out: the connection is unusable.
                pool.lane_broke();
                return Err(dest);
            }
        }
        self.core.stats.batch();
        self.core.stats.lane_batch();
        self.core.stats.polled_batch();
        Ok(Polled {
            core: self.core.clone(),
            max_body: frames::max_answer(&wire.ack),
            ticket: Some(ticket),
            wire: Some(wire),
            dest,
            ops,
            pending,
            out,
            rx: Vec::new(),
            deadline: Instant::now() + self.core.cfg.timeout,
            finished: false,
        })
    }
}

impl<B: DestBuffer> Polled<B> {
    /// The socket to wait on (readable: call [`poll`](Self::poll)); -1 once finished.
    pub fn fd(&self) -> i32 {
        self.wire.as_ref().map_or(-1, LaneConn::raw_fd)
    }

    /// Whether the outcomes were given (or the batch given up): `poll` has nothing more.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// When the batch gives up: a `poll` after it fails what is still unanswered.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Settles what has arrived, without blocking: the outcome of every op (`Ok`: all its
    /// bytes are in the buffer) once the last answer is in or the deadline has passed,
    /// else `None` (wait for the socket again). After the outcomes, always `None`.
    pub fn poll(&mut self) -> Option<Vec<Result<(), Failure>>> {
        if self.finished {
            return None;
        }
        let step = self.settle_arrived();
        match step {
            Ok(()) if self.pending.is_empty() => Some(self.finish(None)),
            Ok(()) if Instant::now() >= self.deadline => Some(self.finish(Some(Failure::Timeout))),
            Ok(()) => None,
            Err(why) => Some(self.finish(Some(why))),
        }
    }

    /// Reads what the socket has and settles every complete answer in it.
    fn settle_arrived(&mut self) -> Result<(), Failure> {
        let Some(wire) = self.wire.as_mut() else {
            return Err(Failure::Lost("connection gone".into()));
        };
        if let Err(e) = wire.read_available(&mut self.rx) {
            return Err(Failure::Lost(e.to_string()));
        }
        let mut at = 0;
        while self.rx.len() - at >= FRAME_HEADER_LEN {
            let mut raw = [0u8; FRAME_HEADER_LEN];
            raw.copy_from_slice(&self.rx[at..at + FRAME_HEADER_LEN]);
            let header = FrameHeader::decode(&raw, self.max_body)
                .map_err(|e| Failure::protocol(e.to_string()))?;
            let end = at + FRAME_HEADER_LEN + header.body_len as usize;
            if self.rx.len() < end {
                break;
            }
            self.settle_one(&header, at + FRAME_HEADER_LEN, end)?;
            at = end;
        }
        self.rx.drain(..at);
        Ok(())
    }

    /// Settles the answer whose body is `rx[body..end]`.
    fn settle_one(&mut self, header: &FrameHeader, body: usize, end: usize) -> Result<(), Failure> {
        if header.kind != Kind::Data {
            return Err(Failure::protocol(format!("{:?} frame where DATA was due", header.kind)));
        }
        let id = header.request_id;
        let at = self.pending.iter().position(|&(p, _, _)| p == id).ok_or_else(|| {
            Failure::protocol(format!("answer to request {id}, which is not pending"))
        })?;
        let (_, i, echo) = self.pending.swap_remove(at);
        // Its outcome starts as the validation's `Ok`: a fault in its own answer must
        // replace that, not only the outcomes of the ops still pending.
        let settled = self.settle_op(i, id, echo, header, body, end);
        if let Err(why) = &settled {
            self.out[i] = Err(why.clone());
        }
        settled
    }

    /// Settles op `i` (request `id`, whose answer must echo `echo`) from its answer.
    fn settle_op(
        &mut self,
        i: usize,
        id: u32,
        echo: u32,
        header: &FrameHeader,
        body: usize,
        end: usize,
    ) -> Result<(), Failure> {
        answer::check_echo(id, header.echo, echo)?;
        let payload = answer::data_body(header, Carried::Inline)?;
        let data =
            answer::data_header(&self.rx[body..body + DATA_HEADER_LEN], payload, Carried::Inline)?;
        let bytes = &self.rx[body + DATA_HEADER_LEN..end];
        let op = &self.ops[i];
        let want = op.len as usize;
        self.out[i] = match answer::judge(&data, bytes.len(), Asked::Range(want))? {
            Verdict::Refuse(why) => Err(why),
            Verdict::Write => {
                let dst = &mut self.dest.bytes()[op.buf_offset..op.buf_offset + bytes.len()];
                dst.copy_from_slice(bytes);
                answer::range_outcome(bytes.len(), want).map(|_| ())
            }
            Verdict::Whole => Err(Failure::protocol("a whole needle for a ranged read")),
        };
        Ok(())
    }

    /// Ends the batch: unanswered ops get `why`, the connection goes back to the idle list
    /// if it ended clean, the sidecar's health and the counters are updated.
    fn finish(&mut self, why: Option<Failure>) -> Vec<Result<(), Failure>> {
        self.finished = true;
        let broken = why.is_some() || !self.rx.is_empty();
        if let Some(why) = why {
            for &(_, i, _) in &self.pending {
                self.out[i] = Err(why.clone());
            }
            self.pending.clear();
        }
        let (ticket, wire) = (self.ticket.take(), self.wire.take());
        if let Some(ticket) = ticket {
            let pool = ticket.pool().clone();
            match wire {
                Some(wire) if !broken => ticket.keep(wire),
                _ => pool.lane_broke(),
            }
            pool.record_results(&self.out, &self.core.cfg, &self.core.stats);
        }
        for (op, r) in self.ops.iter().zip(&self.out) {
            match r {
                Ok(()) => self.core.stats.delivered(u64::from(op.len), false),
                Err(why) => self.core.stats.failed(why),
            }
        }
        self.out.clone()
    }

    /// Drops the connection of a batch not finished: it may still owe answers.
    fn give_up(&mut self) {
        if !self.finished {
            self.finished = true;
            if let Some(ticket) = self.ticket.take() {
                ticket.pool().lane_broke();
            }
            self.wire = None;
        }
    }
}

impl<B: DestBuffer> Drop for Polled<B> {
    fn drop(&mut self) {
        self.give_up();
    }
}

#[cfg(test)]
#[path = "polled_tests.rs"]
mod tests;
