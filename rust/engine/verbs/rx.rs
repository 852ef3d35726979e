//! The reader task's handling of a DATA frame on a verbs connection: the frame carries the
//! status and byte count, the bytes are already in (or about to land in) the READ's slot.
//!
//! The sidecar sends the frame only after its write completed, so the receive completion is
//! normally there when the frame is read; the reader polls for it with the usual back-off
//! ([`crate::verbs::Backoff`], asynchronously) and bounds the wait. While one answer waits,
//! the next frames wait behind it, which costs nothing in the normal case and keeps one
//! frame in hand at a time. The bytes are then copied from the slot into the caller's
//! buffer (the price of registering one pool rather than each caller's buffer, see
//! `docs/decisions.md`), under the table lock, so a batch giving up meanwhile simply waits
//! for the copy to end.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::matcher::{CompletionStep, FrameStep, Matcher};
use super::{Link, RecvEvent, RecvQueue, SlotLease};
use crate::engine::answer::{data_body, data_header, Carried};
use crate::engine::conn_state::ConnState;
use crate::engine::types::Failure;
use crate::proto::{self, DataHeader, FrameHeader, Status};
use crate::verbs::{Backoff, Pause};

/// Longest wait for a receive completion once its frame is in. The sidecar itself gives a
/// write 10 seconds before it closes the connection; the completion of one that succeeded
/// follows the frame's send by microseconds.
pub(in crate::engine) const WRITE_WAIT: Duration = Duration::from_secs(5);

fn protocol(what: impl Into<String>) -> Failure {
    Failure::protocol(what)
}

/// Why a verbs READ was refused: BAD_REQUEST there is almost always the slot (a whole
/// needle larger than `verbs_slot_size`), so the op is marked for another transport.
pub(in crate::engine) fn refused(why: Failure, slot_size: u32) -> Failure {
    match why {
        Failure::Status(Status::BadRequest) => Failure::Verbs(format!(
            "sidecar refused the read (BAD_REQUEST): larger than the {slot_size}-byte slot?"
        )),
        other => other,
    }
}

/// Takes what the queue has, feeds it to the matcher and re-posts one receive per
/// completion. Returns READ `want`'s slot and length if this completed it.
///
/// # Errors
/// A failed receive or a write for no READ: the connection must close.
pub(in crate::engine) fn pump<S>(
    queue: &dyn RecvQueue,
    matcher: &mut Matcher<S>,
    want: u32,
    events: &mut Vec<RecvEvent>,
) -> Result<Option<(S, u32)>, Failure> {
    events.clear();
    queue.poll(events)?;
    let mut found = None;
    for event in events.drain(..) {
        match event {
            RecvEvent::Failed(why) => return Err(Failure::Verbs(format!("receive: {why}"))),
            RecvEvent::Written(imm) => match matcher.completion(imm) {
                CompletionStep::Early => {}
                CompletionStep::Ready { id, slot, len } if id == want => found = Some((slot, len)),
                // Frames are handled one at a time, each waiting for its completion, so
                // only the awaited READ can have had its frame already.
                CompletionStep::Ready { id, .. } => {
                    return Err(protocol(format!("write for READ {id} completed out of turn")))
                }
                CompletionStep::Stray => {
                    return Err(protocol(format!("RDMA write for no READ (immediate {imm})")))
                }
            },
        }
    }
    let n = matcher.take_reposts();
    if n > 0 {
        queue.post(n)?;
    }
    Ok(found)
}

/// Waits for READ `id`'s receive completion; its frame is in.
async fn wait_written(
    shared: &ConnState,
    link: &Link,
    id: u32,
) -> Result<(SlotLease, u32), Failure> {
    let deadline = Instant::now() + WRITE_WAIT;
    let mut backoff = Backoff::default();
    let mut events = Vec::new();
    loop {
        let found = pump(&*link.recv, shared.table().verbs(), id, &mut events)?;
        if let Some(done) = found {
            return Ok(done);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Verbs(format!("no receive completion for READ {id}")));
        }
        match backoff.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => tokio::task::yield_now().await,
            Pause::Sleep(d) => tokio::time::sleep(d).await,
        }
    }
}

/// Handles a verbs DATA frame whose header has been read.
///
/// # Errors
/// Why the connection must close (lost, protocol, failed receive).
pub(in crate::engine) async fn on_data<R: AsyncRead + Unpin>(
    rd: &mut R,
    shared: &ConnState,
    link: &Link,
    header: FrameHeader,
) -> Result<(), Failure> {
    let id = header.request_id;
    let payload = data_body(&header, Carried::Written)?;
    let mut raw = [0u8; proto::DATA_HEADER_LEN];
    rd.read_exact(&mut raw).await.map_err(|e| Failure::Lost(e.to_string()))?;
    let data = data_header(&raw, payload, Carried::Written)?;
    let wrote = data.status == Status::Ok && data.data_len > 0;
    let step = shared.table().verbs().frame(id, wrote, data.data_len);
    let (lease, len) = match step {
        FrameStep::Unknown => return Err(protocol(format!("DATA for no verbs READ ({id})"))),
        FrameStep::NoWrite(lease) => {
            drop(lease); // nothing was written: the slot is free again
            return answer(shared, link, &header, &data, None);
        }
        FrameStep::Ready { slot, len } => (slot, len),
        FrameStep::Wait => wait_written(shared, link, id).await?,
    };
    if len as usize > lease.bytes().len() {
        return Err(protocol(format!("{len} bytes written into a smaller slot")));
    }
    answer(shared, link, &header, &data, Some((&lease, len)))
    // `lease` drops here: its write has landed, the slot is free again.
}

/// Completes the READ `header` answers from `written` (the slot and byte count) or,
/// without one, from the status alone.
fn answer(
    shared: &ConnState,
    link: &Link,
    header: &FrameHeader,
    data: &DataHeader,
    written: Option<(&SlotLease, u32)>,
) -> Result<(), Failure> {
    let bytes = written.map_or(&[][..], |(lease, len)| &lease.bytes()[..len as usize]);
    let slot_size = link.slots.slot_size();
    shared.table().settle_copied(
        header.request_id,
        header.echo,
        data,
        bytes,
        |why| refused(why, slot_size),
        |n| link.stats.verbs_delivered(n as u64),
    )
}
