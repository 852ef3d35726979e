//! One TCP connection to a sidecar: the handshake, the table of pending requests, and the
//! operations batches perform on it (submit, cancel, kill). The two tasks that move bytes
//! live in [`super::tasks`].
//!
//! A pending entry goes `Queued` (registered, waiting for the writer and a permit) ->
//! `Sent` -> (`Writing`, ranged reads only, while the reader fills the destination) ->
//! removed. Its in-flight permit is released only when it is removed, so a request the
//! sidecar still owes an answer for keeps counting against the granted `max_inflight` even
//! after its batch gave up on it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::dest::Dest;
use super::frames;
use super::stats::Stats;
use super::tasks::{self, Outgoing};
use super::types::{Failure, WholeNeedle};
use super::verbs::matcher::Matcher;
use super::verbs::{Host, Link, SlotLease};
use crate::proto::{self, HelloAck, Kind, ReadRequest};

/// Reader-side buffer: large enough to batch small answers into one syscall, small enough
/// that most of a big payload bypasses it and lands straight in the destination.
pub(super) const READ_BUFFER: usize = 16 * 1024;

/// Where the answer to a pending request goes.
#[derive(Debug)]
pub(super) enum Sink {
    /// Straight into the caller's buffer.
    Range(Dest),
    /// Into a fresh `Vec` (whole-needle reads).
    Whole,
    /// A PONG; no payload.
    Pong,
    /// Its batch gave up; read the payload into scratch space and drop it.
    Discard,
}

/// Progress of a pending entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Registered, not yet written to the socket.
    Queued,
    /// Written; the answer is awaited.
    Sent,
    /// The reader task is filling the entry's [`Sink::Range`] destination right now.
    Writing,
}

/// A delivered answer.
#[derive(Debug)]
pub(super) enum Delivered {
    /// That many bytes were written to the destination.
    Range(u32),
    /// The needle's whole data.
    Whole(WholeNeedle),
    /// The sidecar answered a PING.
    Pong,
}

/// What a batch receives for one of its requests.
#[derive(Debug)]
pub(super) struct Done {
    /// The batch's own index for the request.
    pub(super) tag: usize,
    /// The outcome.
    pub(super) result: Result<Delivered, Failure>,
}

/// Where to report a pending entry's outcome.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) tag: usize,
    pub(super) tx: UnboundedSender<Done>,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) stage: Stage,
    pub(super) sink: Sink,
    pub(super) reply: Option<Reply>,
    /// Which batch registered it, so a cancel never hits a recycled request id.
    owner: u64,
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

/// The pending requests of one connection and whether it is still usable.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) map: HashMap<u32, Pending>,
    next_id: u32,
    /// Set once the connection is unusable; new requests fail with it.
    pub(super) closed: Option<Failure>,
    /// Verbs connections: the receive slot of each sent READ until its answer completes
    /// (empty on tcp).
    pub(super) verbs: Matcher<SlotLease>,
}

impl Table {
    /// Removes an entry and reports `result` to its batch, if the batch still listens.
    pub(super) fn finish(&mut self, id: u32, result: Result<Delivered, Failure>) {
        if let Some(Pending { reply: Some(reply), .. }) = self.map.remove(&id) {
            // The batch may have returned already; then nobody needs the answer.
            let _ = reply.tx.send(Done { tag: reply.tag, result });
        }
    }
}

/// State the connection's tasks and its batches share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The queue pair of a verbs connection. Declared before `table` so it is destroyed
    /// first: the slots the table holds are freed only once nothing can write into them.
    link: Option<Link>,
    table: Mutex<Table>,
    /// True once the reader task has ended (its future dropped): from then on nothing
    /// writes into any destination this connection was given.
    gone: Mutex<bool>,
    gone_cv: Condvar,
    /// The writer task, stopped with the reader so a dead connection's socket closes now
    /// rather than when the pool next replaces it.
    writer: OnceLock<AbortHandle>,
}

impl Shared {
    /// The verbs half, on a verbs connection.
    pub(super) fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// The table, even if a panic poisoned the lock: every update to it is a single map
    /// operation, so it is never left half-done.
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called as the reader task's future is dropped: fails every pending entry, refuses
    /// new ones, and wakes whoever waits in [`Conn::kill_and_wait`].
    pub(super) fn reader_gone(&self) {
        {
            let mut table = self.table();
            let why = table
                .closed
                .get_or_insert_with(|| Failure::Lost("connection closed".into()))
                .clone();
            for (_, entry) in table.map.drain() {
                if let Some(reply) = entry.reply {
                    let _ = reply.tx.send(Done { tag: reply.tag, result: Err(why.clone()) });
                }
            }
        }
        if let Some(writer) = self.writer.get() {
            writer.abort();
        }
        *self.gone.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.gone_cv.notify_all();
    }
}

/// An established connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// What the sidecar granted.
    pub(super) ack: HelloAck,
    shared: Arc<Shared>,
    queue: UnboundedSender<Outgoing>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Conn {
    /// Connects, shakes hands and starts the reader and writer tasks. Must run inside the
    /// engine's runtime; the caller bounds it with the connect timeout.
    ///
    /// With `verbs`, the HELLO carries this connection's queue pair and offers verbs, plus
    /// tcp when `tcp_ok`; the sidecar's choice decides which the connection is. Without
    /// `tcp_ok` (an engine told to use verbs) no byte ever travels over tcp: a sidecar that
    /// cannot connect the queue pair closes the connection, and that is a verbs failure.
    pub(super) async fn connect(
        addr: &str,
        want_inflight: u32,
        verbs: Option<&Arc<Host>>,
        tcp_ok: bool,
        stats: &Arc<Stats>,
    ) -> Result<Arc<Conn>, Failure> {
        let io = |what: &str, e: std::io::Error| Failure::Connect(format!("{what}: {e}"));
        let prepared = verbs.map(|host| host.prepare(want_inflight)).transpose()?;
        let stream = TcpStream::connect(addr).await.map_err(|e| Failure::Connect(e.to_string()))?;
        // Requests are small and latency-bound; never let Nagle hold them back.
        stream.set_nodelay(true).map_err(|e| io("TCP_NODELAY", e))?;
        let (rd, mut wr) = stream.into_split();
        let offered = match prepared {
            Some(_) if tcp_ok => proto::TRANSPORT_TCP | proto::TRANSPORT_VERBS,
            Some(_) => proto::TRANSPORT_VERBS,
            None => proto::TRANSPORT_TCP,
        };
        let mut hello = frames::hello(want_inflight, offered).to_vec();
        if let Some(prepared) = &prepared {
            hello.extend_from_slice(&prepared.exchange());
        }
        wr.write_all(&hello).await.map_err(|e| io("HELLO", e))?;
        let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
        let mut raw = [0u8; proto::HELLO_ACK_LEN];
        rd.read_exact(&mut raw).await.map_err(|e| {
            if offered == proto::TRANSPORT_VERBS && e.kind() == std::io::ErrorKind::UnexpectedEof {
                Failure::Verbs(format!(
                    "the sidecar closed a verbs-only handshake (no verbs there, or its queue \
                     pair could not connect; see its log): {e}"
                ))
            } else {
                io("HELLO_ACK", e)
            }
        })?;
        let ack = frames::accept_ack(&raw, offered)?;
        let permits = frames::window(&ack, want_inflight);
        // After a tcp ack nothing follows, and dropping `prepared` destroys the queue pair.
        let link = match prepared {
            Some(prepared) if ack.transport == proto::TRANSPORT_VERBS => {
                let mut theirs = [0u8; crate::verbs::exchange::ENDPOINT_LEN];
                rd.read_exact(&mut theirs).await.map_err(|e| io("VERBS_ENDPOINT", e))?;
                Some(prepared.connect(&theirs, permits as u32, stats.clone())?)
            }
            _ => None,
        };
        let slots = link.as_ref().map(|l| l.slots.clone());
        let shared = Arc::new(Shared { link, ..Shared::default() });
        let max_body = frames::max_answer(&ack);
        let reader = tasks::spawn_reader(rd, shared.clone(), max_body);
        let (queue, rx) = mpsc::unbounded_channel();
        let sem = Arc::new(Semaphore::new(permits));
        let writer = tasks::spawn_writer(wr, rx, shared.clone(), sem, slots, reader.clone());
        let _ = shared.writer.set(writer.clone());
        Ok(Arc::new(Conn { ack, shared, queue, reader, writer }))
    }

    /// `"verbs"` or `"tcp"`, as the sidecar chose.
    pub(super) fn transport(&self) -> &'static str {
        if self.shared.link.is_some() {
            "verbs"
        } else {
            "tcp"
        }
    }

    /// False once the connection broke; the pool then replaces it.
    pub(super) fn is_open(&self) -> bool {
        self.shared.table().closed.is_none()
    }

    /// Registers a READ and queues it for the writer; returns its request id.
    pub(super) fn submit_read(
        &self,
        req: &ReadRequest,
        sink: Sink,
        reply: Reply,
        owner: u64,
    ) -> Result<u32, Failure> {
        if let Some(link) = &self.shared.link {
            let slot_size = link.slots.slot_size();
            if !req.whole() && req.length > slot_size {
                return Err(Failure::Verbs(format!(
                    "read of {} bytes exceeds verbs_slot_size {slot_size}",
                    req.length
                )));
            }
        }
        let frame = frames::read_body(req, &self.ack)?;
        self.submit(Kind::Read, frame, sink, reply, owner)
    }

    /// Registers a PING and queues it.
    pub(super) fn submit_ping(&self, reply: Reply, owner: u64) -> Result<u32, Failure> {
        let frame = vec![0u8; proto::FRAME_HEADER_LEN];
        self.submit(Kind::Ping, frame, Sink::Pong, reply, owner)
    }

    fn submit(
        &self,
        kind: Kind,
        mut frame: Vec<u8>,
        sink: Sink,
        reply: Reply,
        owner: u64,
    ) -> Result<u32, Failure> {
        let id = {
            let mut table = self.shared.table();
            if let Some(why) = &table.closed {
                return Err(why.clone());
            }
            // Skip ids still in use (only possible after 2^32 requests on one connection).
            let mut id = table.next_id;
            while table.map.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            table.next_id = id.wrapping_add(1);
            let entry =
                Pending { stage: Stage::Queued, sink, reply: Some(reply), owner, permit: None };
            table.map.insert(id, entry);
            id
        };
        frames::stamp(&mut frame, kind, id);
        let slot = kind == Kind::Read && self.shared.link.is_some();
        if self.queue.send(Outgoing { id, frame, slot }).is_err() {
            self.shared.table().map.remove(&id);
            return Err(Failure::Lost("connection writer stopped".into()));
        }
        Ok(id)
    }

    /// Takes a batch's entry back: after this returns `false`, no task can reach the entry's
    /// destination. `true` means the reader is writing into it right now; the caller must
    /// then [`kill_and_wait`](Self::kill_and_wait) before its buffer may be released.
    pub(super) fn cancel(&self, id: u32, owner: u64) -> bool {
        let mut table = self.shared.table();
        let Some(entry) = table.map.get_mut(&id).filter(|e| e.owner == owner) else {
            return false; // answered (or failed) already
        };
        match entry.stage {
            Stage::Queued => {
                table.map.remove(&id);
                false
            }
            Stage::Sent => {
                // Keep the entry (and its permit) until the sidecar answers, so the
                // in-flight count stays honest; just forget where the bytes were to go.
                entry.sink = Sink::Discard;
                entry.reply = None;
                false
            }
            Stage::Writing => true,
        }
    }

    /// Ends the connection and blocks until its reader task is gone.
    ///
    /// Must not be called from a runtime worker thread (it blocks). The wait has no
    /// deadline on purpose: returning earlier could let the reader write into a buffer the
    /// caller already got back. It is short: an aborted task stops at its next `.await`, and
    /// the reader never blocks a thread between two of those.
    pub(super) fn kill_and_wait(&self) {
        self.shared.table().closed.get_or_insert(Failure::Lost("aborted after a timeout".into()));
        self.writer.abort();
        self.reader.abort();
        let mut gone = self.shared.gone.lock().unwrap_or_else(PoisonError::into_inner);
        while !*gone {
            gone = self.shared.gone_cv.wait(gone).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Nothing can submit any more; stop both tasks so the socket closes.
        self.writer.abort();
        self.reader.abort();
    }
}
