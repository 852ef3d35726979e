//! The lane's half of a verbs connection: the same queue pair, own pool and [`Matcher`] as
//! an async connection's, driven from the calling thread.
//!
//! Each READ of a lane batch takes a slot of the connection's pool before it is sent; its
//! answer is complete once both the DATA frame and the receive completion are in. The frame
//! is read first (the sidecar sends it after its write completed), then the completion
//! queue is polled on the calling thread with the verbs [`Backoff`], bounded by the
//! batch's deadline. After any error or timeout the lane drops the whole connection, which
//! destroys the queue pair before the matcher lets any held slot go (field order below), so
//! a late write can never land in a slot a later READ was given.

use std::time::{Duration, Instant};

use super::matcher::{FrameStep, Matcher};
use super::rx::{pump, WRITE_WAIT};
use super::{Link, RecvEvent, SlotLease};
use crate::engine::types::Failure;
use crate::proto::{DataHeader, Status};
use crate::verbs::{Backoff, Pause};

/// A lane connection's queue pair, pool and matching state.
#[derive(Debug)]
pub(in crate::engine) struct LaneLink {
    // Declared before `matcher`: the queue pair is destroyed before held slots go back.
    link: Link,
    matcher: Matcher<SlotLease>,
    events: Vec<RecvEvent>,
}

impl LaneLink {
    pub(in crate::engine) fn new(link: Link) -> LaneLink {
        LaneLink { link, matcher: Matcher::default(), events: Vec::new() }
    }

    /// Bytes per receive slot.
    pub(in crate::engine) fn slot_size(&self) -> u32 {
        self.link.slots.slot_size()
    }

    /// Gives READ `id` a free slot and returns its index; `None` while every slot is held
    /// by a READ in flight.
    ///
    /// # Errors
    /// `id` is still in use (the lane never reuses an id on a connection it keeps).
    pub(in crate::engine) fn assign(&mut self, id: u32) -> Result<Option<u32>, Failure> {
        let Some(lease) = self.link.slots.try_acquire() else { return Ok(None) };
        let index = lease.index();
        self.matcher
            .assign(id, lease)
            .map_err(|_| Failure::protocol(format!("request id {id} is still in use")))?;
        Ok(Some(index))
    }

    /// READ `id`'s DATA header is in: returns its slot and byte count once its write has
    /// landed, or `None` for an answer that wrote nothing (its slot is free again).
    ///
    /// # Errors
    /// [`Failure::Timeout`] at `deadline`; a failed receive, a missing completion or a
    /// protocol violation: the connection must be dropped.
    pub(in crate::engine) fn complete(
        &mut self,
        id: u32,
        data: &DataHeader,
        deadline: Instant,
    ) -> Result<Option<(SlotLease, u32)>, Failure> {
        let wrote = data.status == Status::Ok && data.data_len > 0;
        let (lease, len) = match self.matcher.frame(id, wrote, data.data_len) {
            FrameStep::Unknown => {
                return Err(Failure::protocol(format!("DATA for no verbs READ ({id})")))
            }
            FrameStep::NoWrite(_) => return Ok(None),
            FrameStep::Ready { slot, len } => (slot, len),
            FrameStep::Wait => self.wait_written(id, deadline)?,
        };
        if len as usize > lease.bytes().len() {
            return Err(Failure::protocol(format!("{len} bytes written into a smaller slot")));
        }
        Ok(Some((lease, len)))
    }

    /// Polls for READ `id`'s receive completion on the calling thread.
    fn wait_written(&mut self, id: u32, deadline: Instant) -> Result<(SlotLease, u32), Failure> {
        let give_up = deadline.min(Instant::now() + WRITE_WAIT);
        let mut backoff = Backoff::default();
        loop {
            if let Some(done) = pump(&*self.link.recv, &mut self.matcher, id, &mut self.events)? {
                return Ok(done);
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(if now >= deadline {
                    Failure::Timeout
                } else {
                    Failure::Verbs(format!("no receive completion for READ {id}"))
                });
            }
            match backoff.next_pause() {
                Pause::Spin => std::hint::spin_loop(),
                Pause::Yield => std::thread::yield_now(),
                Pause::Sleep(d) => std::thread::sleep(d.min(give_up - now).max(MIN_SLEEP)),
            }
        }
    }

    /// Counts `n` bytes delivered over verbs.
    pub(in crate::engine) fn delivered(&self, n: usize) {
        self.link.stats.verbs_delivered(n as u64);
    }

    /// Whether no READ holds a slot: the connection owes nothing and may serve another batch.
    pub(in crate::engine) fn is_idle(&self) -> bool {
        self.matcher.is_empty()
    }
}

/// Shortest sleep between two polls once the back-off sleeps at all.
const MIN_SLEEP: Duration = Duration::from_micros(1);
