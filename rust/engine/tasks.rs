//! The two tasks of a connection. The writer sends queued request frames, coalescing what
//! is ready into one `write_all`, within the granted in-flight limit. The reader matches
//! answers to pending entries by request id and puts ranged payloads straight into the
//! caller's buffer.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::answer::{self, Carried, Delivered};
use super::conn_state::ConnState;
use super::frames;
use super::pending::{Claim, Send};
use super::types::{Failure, WholeNeedle};
use super::verbs::{rx, SlotLease, SlotPool};
use crate::proto::{self, FrameHeader, Kind};

/// Scratch space for payloads nobody wants any more.
const DISCARD_CHUNK: usize = 64 * 1024;
/// Stop coalescing request frames into one write past this many bytes.
const COALESCE_LIMIT: usize = 256 * 1024;

/// A request frame, ready to write once its entry gets a permit.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) id: u32,
    pub(super) frame: Vec<u8>,
    /// A verbs READ: it needs a receive slot before it is sent.
    pub(super) slot: bool,
}

/// Fails the connection's entries and signals "gone" when the reader's future is dropped,
/// whether it returned, hit an error, or was aborted (even before its first poll: the guard
/// is captured by the future, so it is dropped with it).
struct ReaderExit(Arc<ConnState>);

impl Drop for ReaderExit {
    fn drop(&mut self) {
        self.0.reader_gone();
    }
}

pub(super) fn spawn_reader(
    rd: BufReader<OwnedReadHalf>,
    shared: Arc<ConnState>,
    max_body: u32,
) -> AbortHandle {
    let exit = ReaderExit(shared);
    tokio::spawn(async move {
        let exit = exit;
        let mut rd = rd;
        let why = read_loop(&mut rd, &exit.0, max_body).await;
        exit.0.table().close(why);
    })
    .abort_handle()
}

pub(super) fn spawn_writer(
    wr: OwnedWriteHalf,
    rx: UnboundedReceiver<Outgoing>,
    shared: Arc<ConnState>,
    sem: Arc<Semaphore>,
    slots: Option<Arc<SlotPool>>,
    reader: AbortHandle,
) -> AbortHandle {
    tokio::spawn(async move {
        if let Some(why) = write_loop(wr, rx, &shared, sem, slots.as_ref()).await {
            shared.table().close(why);
            // The reader's exit guard fails the pending entries.
            reader.abort();
        }
    })
    .abort_handle()
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: UnboundedReceiver<Outgoing>,
    shared: &ConnState,
    sem: Arc<Semaphore>,
    slots: Option<&Arc<SlotPool>>,
) -> Option<Failure> {
    let mut held = None;
    let mut out = Vec::new();
    loop {
        let first = match held.take() {
            Some(o) => o,
            None => rx.recv().await?, // the connection was dropped
        };
        let permit = sem.clone().acquire_owned().await.ok()?;
        // Verbs READs also wait for a receive slot of this connection's pool.
        let lease = match slots.filter(|_| first.slot) {
            Some(pool) => {
                let (lease, waited) = pool.acquire().await?;
                if waited {
                    if let Some(link) = shared.link() {
                        link.stats.slot_wait();
                    }
                }
                Some(lease)
            }
            None => None,
        };
        attach(shared, first, permit, lease, &mut out);
        while out.len() < COALESCE_LIMIT {
            let Ok(next) = rx.try_recv() else { break };
            let lease = match slots.filter(|_| next.slot) {
                Some(pool) => match pool.try_acquire() {
                    Some(lease) => Some(lease),
                    None => {
                        held = Some(next);
                        break;
                    }
                },
                None => None,
            };
            match sem.clone().try_acquire_owned() {
                Ok(permit) => attach(shared, next, permit, lease, &mut out),
                Err(_) => {
                    held = Some(next);
                    break;
                }
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                return Some(Failure::Lost(format!("send: {e}")));
            }
            out.clear();
        }
    }
}

/// Marks a queued entry sent and gives it the permit, and a verbs READ its slot; entries
/// cancelled meanwhile are skipped (dropping the permit and the slot).
fn attach(
    shared: &ConnState,
    mut o: Outgoing,
    permit: tokio::sync::OwnedSemaphorePermit,
    lease: Option<SlotLease>,
    out: &mut Vec<u8>,
) {
    match shared.table().mark_sent(o.id, permit, lease) {
        Send::Skip => {}
        Send::Go { slot } => {
            if let Some(slot) = slot {
                frames::set_dest(&mut o.frame, slot);
            }
            out.extend_from_slice(&o.frame);
        }
    }
}

type Reader = BufReader<OwnedReadHalf>;

fn lost(e: std::io::Error) -> Failure {
    Failure::Lost(e.to_string())
}

/// Reads frames until the connection fails; returns why.
async fn read_loop(rd: &mut Reader, shared: &ConnState, max_body: u32) -> Failure {
    let mut scratch = vec![0u8; DISCARD_CHUNK];
    loop {
        let mut raw = [0u8; proto::FRAME_HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut raw).await {
            return lost(e);
        }
        let header = match FrameHeader::decode(&raw, max_body) {
            Ok(h) => h,
            Err(e) => return Failure::protocol(e.to_string()),
        };
        let step = match header.kind {
            Kind::Data => on_data(rd, shared, header, &mut scratch).await,
            Kind::Pong if header.body_len == 0 => shared.table().pong(header.request_id),
            Kind::Pong => Err(Failure::protocol("PONG with a body")),
            Kind::Read | Kind::Ping => Err(Failure::protocol("sidecar sent a request frame")),
        };
        if let Err(why) = step {
            return why;
        }
    }
}

async fn on_data(
    rd: &mut Reader,
    shared: &ConnState,
    header: FrameHeader,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    if let Some(link) = shared.link() {
        return rx::on_data(rd, shared, link, header).await;
    }
    let id = header.request_id;
    let payload = answer::data_body(&header, Carried::Inline)?;
    let mut raw = [0u8; proto::DATA_HEADER_LEN];
    rd.read_exact(&mut raw).await.map_err(lost)?;
    let data = answer::data_header(&raw, payload, Carried::Inline)?;
    let claim = shared.table().claim(id, header.echo, &data, payload)?;
    match claim {
        Claim::Skip => skip(rd, payload, scratch).await?,
        Claim::Refuse(why) => {
            skip(rd, payload, scratch).await?;
            shared.table().finish(id, Err(why));
        }
        Claim::Whole => {
            let mut bytes = Vec::new();
            bytes
                .try_reserve_exact(payload as usize)
                .map_err(|_| Failure::protocol(format!("cannot allocate {payload} bytes")))?;
            bytes.resize(payload as usize, 0);
            rd.read_exact(&mut bytes).await.map_err(lost)?;
            let needle =
                WholeNeedle { data: bytes, crc: data.crc, needle_flags: data.needle_flags };
            shared.table().finish(id, Ok(Delivered::Whole(needle)));
        }
        Claim::Write(dest) => {
            let want = dest.len();
            // SAFETY: the entry holding `dest` is marked Writing, so no batch will release
            // it (a cancelling batch kills this task and waits for it to be gone instead),
            // and this task is the only one that holds it; `payload <= dest.len()` was
            // checked by the claim. The slice is dropped before the entry is finished below.
            let target = unsafe { dest.slice() };
            rd.read_exact(&mut target[..payload as usize]).await.map_err(lost)?;
            shared.table().finish(id, answer::range_outcome(payload as usize, want));
        }
    }
    Ok(())
}

/// Reads and drops `n` bytes.
async fn skip<R: AsyncRead + Unpin>(
    rd: &mut R,
    mut n: u32,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    while n > 0 {
        let chunk = (n as usize).min(scratch.len());
        rd.read_exact(&mut scratch[..chunk]).await.map_err(lost)?;
        n -= chunk as u32;
    }
    Ok(())
}
