//! One TCP connection to a sidecar: the handshake, and the operations batches perform on
//! it (submit, cancel, kill). The requests in flight and their states live in
//! [`super::pending`]; the two tasks that move bytes in [`super::tasks`].

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::conn_state::ConnState;
use super::frames;
use super::pending::{Recipient, Reply};
use super::stats::Stats;
use super::tasks::{self, Outgoing};
use super::types::Failure;
use super::verbs::{self, Host};
use crate::proto::{self, HelloAck, Kind, ReadRequest};

/// Reader-side buffer: large enough to batch small answers into one syscall, small enough
/// that most of a big payload bypasses it and lands straight in the destination.
pub(super) const READ_BUFFER: usize = 16 * 1024;

/// An established connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// What the sidecar granted.
    pub(super) ack: HelloAck,
    shared: Arc<ConnState>,
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
        let prepared = match verbs {
            // Registering the pool pins every page of it (milliseconds for tens of MiB): off
            // the runtime's two worker threads, which carry every connection's traffic.
            Some(host) => {
                let host = host.clone();
                let prepare = tokio::task::spawn_blocking(move || host.prepare(want_inflight));
                let prepared = prepare.await.map_err(|e| Failure::Verbs(e.to_string()))?;
                Some(prepared?)
            }
            None => None,
        };
        // An `ip:port` is connected to as it is: a name would be looked up on a blocking
        // thread of the runtime, one more thread per connect under way.
        let stream = match addr.parse::<std::net::SocketAddr>() {
            Ok(ip) => TcpStream::connect(ip).await,
            Err(_) => TcpStream::connect(addr).await,
        };
        let stream = stream.map_err(|e| Failure::Connect(e.to_string()))?;
        // Requests are small and latency-bound; never let Nagle hold them back.
        stream.set_nodelay(true).map_err(|e| io("TCP_NODELAY", e))?;
        let (rd, mut wr) = stream.into_split();
        let offered = frames::offer(prepared.is_some(), tcp_ok);
        let mut hello = frames::hello(want_inflight, offered).to_vec();
        if let Some(prepared) = &prepared {
            hello.extend_from_slice(&prepared.exchange());
        }
        wr.write_all(&hello).await.map_err(|e| io("HELLO", e))?;
        let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
        let mut raw = [0u8; proto::HELLO_ACK_LEN];
        rd.read_exact(&mut raw).await.map_err(|e| frames::ack_failure(offered, &e))?;
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
        let shared = Arc::new(ConnState::new(link));
        let max_body = frames::max_answer(&ack);
        let reader = tasks::spawn_reader(rd, shared.clone(), max_body);
        let (queue, rx) = mpsc::unbounded_channel();
        let sem = Arc::new(Semaphore::new(permits));
        let writer = tasks::spawn_writer(wr, rx, shared.clone(), sem, slots, reader.clone());
        shared.set_writer(writer.clone());
        Ok(Arc::new(Conn { ack, shared, queue, reader, writer }))
    }

    /// `"verbs"` or `"tcp"`, as the sidecar chose.
    pub(super) fn transport(&self) -> &'static str {
        if self.shared.link().is_some() {
            "verbs"
        } else {
            "tcp"
        }
    }

    /// Whether the connection is over verbs, and so holds a slice of the pinned budget.
    pub(super) fn is_verbs(&self) -> bool {
        self.shared.link().is_some()
    }

    /// False once the connection broke; the pool then replaces it.
    pub(super) fn is_open(&self) -> bool {
        self.shared.table().is_open()
    }

    /// Whether the connection is open and owes no answer (the reaper may close it).
    pub(super) fn is_idle(&self) -> bool {
        let table = self.shared.table();
        table.is_open() && table.is_empty()
    }

    /// Registers a READ and queues it for the writer; returns its request id.
    pub(super) fn submit_read(
        &self,
        req: &ReadRequest,
        recipient: Recipient,
        reply: Reply,
        owner: u64,
    ) -> Result<u32, Failure> {
        if let Some(link) = self.shared.link() {
            verbs::check_fits(req, link.slots.slot_size())?;
        }
        let frame = frames::read_body(req, &self.ack)?;
        self.submit(Kind::Read, frame, recipient, reply, owner)
    }

    /// Registers a PING and queues it.
    pub(super) fn submit_ping(&self, reply: Reply, owner: u64) -> Result<u32, Failure> {
        let frame = vec![0u8; proto::FRAME_HEADER_LEN];
        self.submit(Kind::Ping, frame, Recipient::Pong, reply, owner)
    }

    fn submit(
        &self,
        kind: Kind,
        mut frame: Vec<u8>,
        recipient: Recipient,
        reply: Reply,
        owner: u64,
    ) -> Result<u32, Failure> {
        let echo = if kind == Kind::Read { frames::echo_of(&frame) } else { 0 };
        let id = self.shared.table().register(recipient, reply, owner, echo)?;
        frames::stamp(&mut frame, kind, id);
        let slot = kind == Kind::Read && self.shared.link().is_some();
        if self.queue.send(Outgoing { id, frame, slot }).is_err() {
            self.shared.table().withdraw(id);
            return Err(Failure::Lost("connection writer stopped".into()));
        }
        Ok(id)
    }

    /// Takes a batch's entry back: after this returns `false`, no task can reach the entry's
    /// destination. `true` means the reader is writing into it right now; the caller must
    /// then [`kill_and_wait`](Self::kill_and_wait) before its buffer may be released.
    pub(super) fn cancel(&self, id: u32, owner: u64) -> bool {
        self.shared.table().cancel(id, owner)
    }

    /// Ends the connection and blocks until its reader task is gone.
    ///
    /// Must not be called from a runtime worker thread (it blocks). The wait has no
    /// deadline on purpose: returning earlier could let the reader write into a buffer the
    /// caller already got back. It is short: an aborted task stops at its next `.await`, and
    /// the reader never blocks a thread between two of those.
    pub(super) fn kill_and_wait(&self) {
        self.shared.table().close(Failure::Lost("aborted after a timeout".into()));
        self.writer.abort();
        self.reader.abort();
        self.shared.wait_gone();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Nothing can submit any more; stop both tasks so the socket closes.
        self.writer.abort();
        self.reader.abort();
    }
}
