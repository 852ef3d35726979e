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
use super::{Link, RecvEvent, RecvQueue, SlotLease};
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
        let Some(lease) = self.link.slots.try_acquire() else {
            // The READ waits for an answer to free a slot (counted once per try).
            self.link.stats.slot_wait();
            return Ok(None);
        };
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
        let give_up = deadline.min(Instant::now() + WRITE_WAIT);
        let recv = &*self.link.recv;
        let done = settle(recv, &mut self.matcher, id, data, deadline, give_up, &mut self.events)?;
        match done {
            Some((lease, len)) if len as usize > lease.bytes().len() => {
                Err(Failure::protocol(format!("{len} bytes written into a smaller slot")))
            }
            done => Ok(done),
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

/// What READ `id`'s DATA header (`data`) means for its slot: `Some((slot, len))` once its
/// write has landed (waiting for the receive completion on the calling thread, polling with
/// the verbs [`Backoff`]), `None` for an answer that wrote nothing (its slot is free again).
///
/// # Errors
/// [`Failure::Timeout`] once `deadline` passed; [`Failure::Verbs`] once `give_up` (at most
/// `deadline`) passed without the completion, or a receive failed; a protocol violation.
fn settle<S>(
    queue: &dyn RecvQueue,
    matcher: &mut Matcher<S>,
    id: u32,
    data: &DataHeader,
    deadline: Instant,
    give_up: Instant,
    events: &mut Vec<RecvEvent>,
) -> Result<Option<(S, u32)>, Failure> {
    let wrote = data.status == Status::Ok && data.data_len > 0;
    match matcher.frame(id, wrote, data.data_len) {
        FrameStep::Unknown => Err(Failure::protocol(format!("DATA for no verbs READ ({id})"))),
        FrameStep::NoWrite(_) => Ok(None),
        FrameStep::Ready { slot, len } => Ok(Some((slot, len))),
        FrameStep::Wait => {
            let mut backoff = Backoff::default();
            loop {
                if let Some(done) = pump(queue, matcher, id, events)? {
                    return Ok(Some(done));
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
    }
}

/// Shortest sleep between two polls once the back-off sleeps at all.
const MIN_SLEEP: Duration = Duration::from_micros(1);

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::settle;
    use crate::engine::types::Failure;
    use crate::engine::verbs::matcher::Matcher;
    use crate::engine::verbs::rx_tests::FakeQueue;
    use crate::engine::verbs::RecvEvent;
    use crate::proto::{DataHeader, Status};

    fn header(status: Status, len: u32) -> DataHeader {
        DataHeader { status, needle_flags: 0, data_len: len, needle_size: len, crc: 0 }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn an_answer_waits_for_its_own_write_and_keeps_others_for_their_frames() {
        let q = FakeQueue::default();
        let (mut m, mut events) = (Matcher::default(), Vec::new());
        m.assign(1, 10u32).expect("free id");
        m.assign(2, 20u32).expect("free id");
        q.land(RecvEvent::Written(2));
        q.land(RecvEvent::Written(1));
        let ok = header(Status::Ok, 7);
        let got = settle(&q, &mut m, 1, &ok, soon(5000), soon(5000), &mut events);
        assert_eq!(got, Ok(Some((10, 7))));
        let got = settle(&q, &mut m, 2, &ok, soon(5000), soon(5000), &mut events);
        assert_eq!(got, Ok(Some((20, 7))), "its completion was kept");
        assert!(m.is_empty(), "both slots free again");
    }

    #[test]
    fn answers_without_a_write_do_not_wait() {
        let q = FakeQueue::default();
        let (mut m, mut events) = (Matcher::default(), Vec::new());
        m.assign(3, 30u32).expect("free id");
        let missing = header(Status::NotFound, 0);
        let got = settle(&q, &mut m, 3, &missing, soon(5000), soon(5000), &mut events);
        assert_eq!(got, Ok(None));
        assert!(m.is_empty());
        let got = settle(&q, &mut m, 3, &missing, soon(5000), soon(5000), &mut events);
        assert!(matches!(got, Err(Failure::Protocol(_))), "answered already: {got:?}");
    }

    #[test]
    fn a_missing_write_is_a_timeout_at_the_deadline_and_keeps_its_slot() {
        let q = FakeQueue::default();
        let (mut m, mut events) = (Matcher::default(), Vec::new());
        m.assign(4, 40u32).expect("free id");
        let deadline = soon(30);
        let got = settle(&q, &mut m, 4, &header(Status::Ok, 9), deadline, deadline, &mut events);
        assert_eq!(got, Err(Failure::Timeout));
        assert!(!m.is_empty(), "the write may still land: the slot stays retired");
        let mut m = Matcher::default();
        m.assign(5, 50u32).expect("free id");
        let got = settle(&q, &mut m, 5, &header(Status::Ok, 9), soon(5000), soon(20), &mut events);
        assert!(matches!(got, Err(Failure::Verbs(_))), "before the deadline: {got:?}");
    }

    #[test]
    fn a_failed_receive_ends_the_wait() {
        let q = FakeQueue::default();
        let (mut m, mut events) = (Matcher::default(), Vec::new());
        m.assign(6, 60u32).expect("free id");
        q.land(RecvEvent::Failed("IBV_WC_REM_ACCESS_ERR".into()));
        let got =
            settle(&q, &mut m, 6, &header(Status::Ok, 9), soon(5000), soon(5000), &mut events);
        assert!(matches!(got, Err(Failure::Verbs(_))), "{got:?}");
    }
}
