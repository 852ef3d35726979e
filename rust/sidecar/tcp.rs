//! The protocol over TCP (`docs/protocol.md`).
//!
//! Per connection: the handshake under a deadline (`handshake.rs`), then a reader that
//! decodes frames and spawns one task per READ (at most the granted in-flight count; beyond
//! it the answer is BUSY), and one writer task that owns the socket's write half. Each
//! READ's task hands an OK answer to the connection's [`Pusher`]: over tcp the writer then
//! sends the DATA header followed by the payload straight from its staging slabs; over
//! verbs the bytes are RDMA-written into the client's slot first and the DATA frame carries
//! only the header. A peer that breaks the protocol, or a verbs write that fails, loses its
//! connection and nothing else.
//!
//! A client that sends READs and does not read the answers cannot hold the sidecar's
//! staging: a connection draws its slabs through its own capped view of the pool
//! (`--conn-staging-mib`), so its reads wait on its own answers, and once the client has
//! taken no bytes for `--write-timeout-secs` while answers wait, the connection is closed
//! (logged, and counted as `stalled`) and every slab it held goes back.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::accept::next_connection;
use super::busy::BusyPoll;
use super::handshake::{handshake, Session};
use super::limits::{protocol, End, Limits};
use super::read::Span;
use super::read::{Answer, ReadAsk};
use super::service::Service;
use super::staging::{Lease, StagingPool};
use super::stall::{is_stall, WriteDeadline};
use super::transport::{deliver, Dest, Pusher};
use crate::fid::FileId;
use crate::proto::{
    self, DataHeader, FrameHeader, Kind, ReadRequest, Status, DATA_HEADER_LEN, FRAME_HEADER_LEN,
};

/// Once a frame has started, the rest of it must arrive within this time.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// How long a closing connection may take to send the answers still in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// At most one "too many connections" warning per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

enum Reply {
    Data {
        request_id: u32,
        /// `proto::read_echo` of the READ answered: the client checks it.
        echo: u32,
        header: DataHeader,
        payload: Option<Lease>,
        permit: Option<OwnedSemaphorePermit>,
    },
    Pong {
        request_id: u32,
    },
    /// Ends the connection (a verbs write failed): the writer stops, the reader with it.
    Close(String),
}

/// Accepts connections until `shutdown` flips.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    while let Some((stream, peer)) =
        next_connection(&listener, &mut shutdown, &mut conns, "a connection").await
    {
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            service.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            refused += 1;
            if last_warning.map_or(true, |t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                warn!(%peer, refused, "at --max-connections {}: closing new connections", limits.max_connections);
                last_warning = Some(Instant::now());
                refused = 0;
            }
            drop(stream);
            continue;
        };
        let handler = Handler {
            peer,
            service: Arc::clone(&service),
            limits: Arc::clone(&limits),
            shutdown: shutdown.clone(),
        };
        conns.spawn(async move {
            handler.run(stream).await;
            drop(permit);
        });
    }
    // The connections saw the same signal; let them finish their answers briefly.
    let drained =
        timeout(Duration::from_secs(2), async { while conns.join_next().await.is_some() {} });
    if drained.await.is_err() {
        conns.abort_all();
    }
}

/// One protocol connection: what every step of serving it needs.
struct Handler {
    peer: SocketAddr,
    service: Arc<Service>,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
}

/// The READ being dispatched, and this connection's per-session state it needs.
struct Read<'a> {
    request_id: u32,
    pusher: &'a Arc<dyn Pusher>,
    /// The connection's capped view of the staging pool.
    staging: &'a StagingPool,
    tx: &'a mpsc::Sender<Reply>,
    inflight: &'a Arc<Semaphore>,
}

impl Handler {
    /// Serves the connection to its end, counting and logging how it ended.
    async fn run(mut self, stream: TcpStream) {
        let peer = self.peer;
        let service = Arc::clone(&self.service);
        let stats = &service.stats;
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, "connection open");
        match self.handle(stream).await {
            Ok(()) => debug!(%peer, "connection closed"),
            Err(End::Protocol(reason)) => {
                stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, "closing connection: {reason}");
            }
            Err(End::Io(e)) => debug!(%peer, "connection closed: {e}"),
            Err(End::Transport(reason)) => {
                stats.verbs_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, "closing connection: {reason}");
            }
            Err(End::Stalled(reason)) => {
                stats.connections_stalled.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, "closing connection: {reason}; releasing its staging");
            }
        }
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn handle(&mut self, stream: TcpStream) -> Result<(), End> {
        // Answers are latency-bound small frames as often as bulk data.
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let session = handshake(&mut rd, &mut wr, &self.limits).await?;
        let transport = session.pusher.transport();
        self.service.stats.opened(transport);
        let result = self.serve_session(rd, wr, session).await;
        self.service.stats.closed(transport);
        result
    }

    async fn serve_session(
        &mut self,
        mut rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        session: Session,
    ) -> Result<(), End> {
        let (tx, rx) = mpsc::channel(session.granted + 16);
        let wr = WriteDeadline::new(wr, self.limits.write_timeout);
        let busy = Arc::new(BusyPoll::new(self.limits.busy_poll));
        let mut writer = tokio::spawn(write_loop(wr, rx, Arc::clone(&busy)));
        let reading = self.read_loop(&mut rd, tx, &session, &busy);
        let result = tokio::select! {
            result = reading => result,
            // The writer stops early only when the socket or a verbs write failed.
            written = &mut writer => return match written {
                Ok(result) => result,
                Err(e) => Err(End::Io(io::Error::other(e))),
            },
        };
        if result.is_ok() {
            if timeout(DRAIN_DEADLINE, &mut writer).await.is_err() {
                writer.abort();
            }
        } else {
            // Dropping the write half sends FIN; answers still in flight are discarded.
            writer.abort();
        }
        result
    }

    async fn read_loop(
        &mut self,
        rd: &mut OwnedReadHalf,
        tx: mpsc::Sender<Reply>,
        session: &Session,
        busy: &BusyPoll,
    ) -> Result<(), End> {
        let (peer, limits) = (self.peer, Arc::clone(&self.limits));
        let granted = session.granted;
        let inflight = Arc::new(Semaphore::new(granted));
        // This connection's answers wait in these slabs until the socket takes them.
        let staging = self.service.pool.limited(limits.conn_staging_slabs);
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut body = Vec::new();
        loop {
            let first = match busy.read(rd, &mut header).await {
                Some(read) => Some(read),
                // `read` (unlike `read_exact`) loses nothing when the idle timer or shutdown
                // wins.
                None => tokio::select! {
                    read = maybe_timeout(limits.idle, rd.read(&mut header)) => read,
                    _ = self.shutdown.changed() => return Ok(()),
                },
            };
            let n = match first {
                Some(read) => read.map_err(End::Io)?,
                None if inflight.available_permits() == granted => {
                    debug!(%peer, "idle connection timed out");
                    self.service.stats.connections_idle_closed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                None => continue,
            };
            if n == 0 {
                return Ok(());
            }
            read_full(rd, &mut header[n..], "frame header").await?;
            let frame = FrameHeader::decode(&header, limits.max_frame).map_err(protocol)?;
            body.resize(frame.body_len as usize, 0);
            read_full(rd, &mut body, "frame body").await?;
            let reply = match frame.kind {
                Kind::Ping => Reply::Pong { request_id: frame.request_id },
                Kind::Read => {
                    let read = Read {
                        request_id: frame.request_id,
                        pusher: &session.pusher,
                        staging: &staging,
                        tx: &tx,
                        inflight: &inflight,
                    };
                    match self.dispatch(&body, read) {
                        Some(reply) => reply,
                        None => continue,
                    }
                }
                Kind::Data | Kind::Pong => {
                    return Err(protocol(format!("a client may not send {:?} frames", frame.kind)))
                }
            };
            if tx.send(reply).await.is_err() {
                return Ok(()); // The writer is gone: the socket failed.
            }
        }
    }

    /// Starts a READ; returns an immediate answer for one that cannot start.
    fn dispatch(&self, body: &[u8], read: Read<'_>) -> Option<Reply> {
        let Read { request_id, pusher, staging, tx, inflight } = read;
        let (peer, service) = (self.peer, &self.service);
        let echo = proto::read_echo(body);
        let refuse = |status: Status| {
            service.stats.record(status, None, 0);
            Some(Reply::Data {
                request_id,
                echo,
                header: DataHeader::error(status),
                payload: None,
                permit: None,
            })
        };
        let req = match ReadRequest::decode(body) {
            Ok(req) => req,
            Err(e) => {
                // The frame itself was whole, so the stream is still in step: answer, go on.
                warn!(%peer, request_id, "malformed READ: {e}");
                return refuse(Status::BadRequest);
            }
        };
        if !req.whole() && req.length > self.limits.max_read {
            return refuse(Status::BadRequest);
        }
        let dest = Dest { slot: req.dest_slot, offset: req.dest_offset };
        if let Err(status) = pusher.check(dest) {
            return refuse(status);
        }
        let Ok(permit) = Arc::clone(inflight).try_acquire_owned() else {
            return refuse(Status::Busy);
        };
        let span = if req.whole() {
            Span::WHOLE
        } else {
            Span { offset: req.offset, len: u64::from(req.length) }
        };
        let ask = ReadAsk { fid: FileId::new(req.volume, req.key, req.cookie), span, jwt: req.jwt };
        let (tx, service, pusher) = (tx.clone(), Arc::clone(service), Arc::clone(pusher));
        let staging = staging.clone();
        tokio::spawn(async move {
            let Answer { header, payload, source } = service.answer(ask, &staging).await;
            let reply = match deliver(&*pusher, request_id, dest, header, payload).await {
                Ok((header, payload)) => {
                    let delivered = header.status == Status::Ok;
                    let bytes = if delivered { header.data_len as usize } else { 0 };
                    service.stats.record(header.status, source.filter(|_| delivered), bytes);
                    if delivered {
                        service.stats.delivered(pusher.transport(), bytes);
                    }
                    Reply::Data { request_id, echo, header, payload, permit: Some(permit) }
                }
                Err(reason) => Reply::Close(format!("READ {request_id}: {reason}")),
            };
            // A send error means the connection is closing; the answer has nowhere to go.
            let _ = tx.send(reply).await;
        });
        None
    }
}

async fn maybe_timeout<F: std::future::Future>(limit: Option<Duration>, f: F) -> Option<F::Output> {
    match limit {
        Some(limit) => timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}

async fn read_full(rd: &mut OwnedReadHalf, buf: &mut [u8], what: &str) -> Result<(), End> {
    match timeout(FRAME_DEADLINE, rd.read_exact(buf)).await {
        Err(_) => Err(protocol(format!("{what} not completed within {FRAME_DEADLINE:?}"))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(protocol(format!("truncated frame: the connection ended inside the {what}")))
        }
        Ok(Err(e)) => Err(End::Io(e)),
        Ok(Ok(_)) => Ok(()),
    }
}

type Out = BufWriter<WriteDeadline<OwnedWriteHalf>>;

async fn write_loop(
    wr: WriteDeadline<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Reply>,
    busy: Arc<BusyPoll>,
) -> Result<(), End> {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    // Returning drops `rx`, and with it the answers still queued and their slabs; the
    // READ tasks still running find the channel closed and drop theirs.
    let failed = |e: io::Error, rx: &mpsc::Receiver<Reply>| {
        if is_stall(&e) {
            End::Stalled(format!("{e}, with {} answers waiting", rx.len() + 1))
        } else {
            End::Io(e)
        }
    };
    while let Some(mut reply) = rx.recv().await {
        // Answers that are already waiting share one flush.
        loop {
            if let Reply::Close(reason) = reply {
                // The answers before it still go out; then the connection closes.
                let _ = out.flush().await;
                return Err(End::Transport(reason));
            }
            write_reply(&mut out, reply).await.map_err(|e| failed(e, &rx))?;
            match rx.try_recv() {
                Ok(next) => reply = next,
                Err(_) => break,
            }
        }
        out.flush().await.map_err(|e| failed(e, &rx))?;
        busy.answered();
    }
    out.shutdown().await.map_err(End::Io)
}

async fn write_reply(out: &mut Out, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Close(_) => Ok(()), // write_loop ends the connection before getting here
        Reply::Pong { request_id } => {
            let frame =
                FrameHeader { kind: Kind::Pong, flags: 0, request_id, body_len: 0, echo: 0 };
            out.write_all(&frame.encode()).await
        }
        Reply::Data { request_id, echo, header, payload, permit } => {
            // The slot frees before the client can see the answer, so a client that sends
            // its next READ on receipt is never refused BUSY for a slot not yet released.
            drop(permit);
            // Over verbs `data_len` bytes were written into the client's slot, none follow.
            let payload_len = payload.as_ref().map_or(0, Lease::len);
            let body_len = DATA_HEADER_LEN as u32 + u32::try_from(payload_len).unwrap_or(0);
            let mut head = [0u8; FRAME_HEADER_LEN + DATA_HEADER_LEN];
            head[..FRAME_HEADER_LEN].copy_from_slice(
                &FrameHeader { kind: Kind::Data, flags: 0, request_id, body_len, echo }.encode(),
            );
            head[FRAME_HEADER_LEN..].copy_from_slice(&header.encode());
            out.write_all(&head).await?;
            for chunk in payload.iter().flat_map(Lease::chunks) {
                out.write_all(chunk).await?;
            }
            Ok(())
        }
    }
}
