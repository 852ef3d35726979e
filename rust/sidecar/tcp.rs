//! The protocol over TCP (`docs/protocol.md`).
//!
//! Per connection: the handshake under a deadline, then a reader that decodes frames and
//! spawns one task per READ (at most the granted in-flight count; beyond it the answer is
//! BUSY), and one writer task that owns the socket's write half and sends each DATA header
//! followed by the payload straight from its staging slabs. A peer that breaks the protocol
//! loses its connection and nothing else.

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

use super::service::{Answer, ReadAsk, Service};
use super::staging::Lease;
use super::store::Span;
use super::HANDSHAKE_DEADLINE;
use crate::fid::FileId;
use crate::proto::{
    DataHeader, FrameHeader, Hello, HelloAck, Kind, ReadRequest, Status, DATA_HEADER_LEN,
    FRAME_HEADER_LEN, HELLO_LEN, TRANSPORT_TCP, VERSION,
};

/// Once a frame has started, the rest of it must arrive within this time.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// How long a closing connection may take to send the answers still in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// At most one "too many connections" warning per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What the handshake announces and the reader enforces.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_frame: u32,
    pub(crate) max_read: u32,
    pub(crate) max_inflight: u32,
    pub(crate) max_connections: usize,
    pub(crate) idle: Option<Duration>,
    pub(crate) server_id: u64,
}

/// Why a connection ended early.
enum End {
    /// The peer broke the protocol: logged as a warning.
    Protocol(String),
    /// The socket failed, or the peer went quiet or away mid-handshake.
    Io(io::Error),
}

fn protocol(reason: impl std::fmt::Display) -> End {
    End::Protocol(reason.to_string())
}

enum Reply {
    Data {
        request_id: u32,
        header: DataHeader,
        payload: Option<Lease>,
        permit: Option<OwnedSemaphorePermit>,
    },
    Pong {
        request_id: u32,
    },
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
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors; pausing lets connections close.
                warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
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
        let (service, limits, shutdown) =
            (Arc::clone(&service), Arc::clone(&limits), shutdown.clone());
        conns.spawn(async move {
            connection(stream, peer, &service, &limits, shutdown).await;
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

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: &Arc<Service>,
    limits: &Limits,
    shutdown: watch::Receiver<bool>,
) {
    let stats = &service.stats;
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, "connection open");
    match handle(stream, peer, service, limits, shutdown).await {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(End::Protocol(reason)) => {
            stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, "closing connection: {reason}");
        }
        Err(End::Io(e)) => debug!(%peer, "connection closed: {e}"),
    }
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    service: &Arc<Service>,
    limits: &Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<(), End> {
    // Answers are latency-bound small frames as often as bulk data.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = [0u8; HELLO_LEN];
    match timeout(HANDSHAKE_DEADLINE, rd.read_exact(&mut hello)).await {
        Err(_) => return Err(protocol(format!("no HELLO within {HANDSHAKE_DEADLINE:?}"))),
        Ok(Err(e)) => return Err(End::Io(e)),
        Ok(Ok(_)) => {}
    }
    let hello = Hello::decode(&hello).map_err(protocol)?;
    let mut ack = HelloAck {
        version: VERSION,
        transport: TRANSPORT_TCP,
        max_inflight: match hello.max_inflight {
            0 => limits.max_inflight,
            wanted => wanted.min(limits.max_inflight),
        },
        max_frame: limits.max_frame,
        max_read: limits.max_read,
        server_id: limits.server_id,
    };
    if hello.version != VERSION {
        ack.version = 0;
        let _ = wr.write_all(&ack.encode()).await;
        return Err(protocol(format!(
            "client speaks protocol version {}, this sidecar {VERSION}",
            hello.version
        )));
    }
    if hello.transports & TRANSPORT_TCP == 0 {
        return Err(protocol(format!(
            "client offers transports {:#x}, this sidecar serves tcp",
            hello.transports
        )));
    }
    wr.write_all(&ack.encode()).await.map_err(End::Io)?;

    let granted = ack.max_inflight as usize;
    let (tx, rx) = mpsc::channel(granted + 16);
    let mut writer = tokio::spawn(write_loop(wr, rx));
    let result = read_loop(&mut rd, peer, tx, granted, service, limits, shutdown).await;
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
    rd: &mut OwnedReadHalf,
    peer: SocketAddr,
    tx: mpsc::Sender<Reply>,
    granted: usize,
    service: &Arc<Service>,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), End> {
    let inflight = Arc::new(Semaphore::new(granted));
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut body = Vec::new();
    loop {
        // `read` (unlike `read_exact`) loses nothing when the idle timer or shutdown wins.
        let first = tokio::select! {
            read = maybe_timeout(limits.idle, rd.read(&mut header)) => read,
            _ = shutdown.changed() => return Ok(()),
        };
        let n = match first {
            Some(read) => read.map_err(End::Io)?,
            None if inflight.available_permits() == granted => {
                debug!(%peer, "idle connection timed out");
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
                match dispatch(&body, frame.request_id, peer, &tx, &inflight, service, limits) {
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
fn dispatch(
    body: &[u8],
    request_id: u32,
    peer: SocketAddr,
    tx: &mpsc::Sender<Reply>,
    inflight: &Arc<Semaphore>,
    service: &Arc<Service>,
    limits: &Limits,
) -> Option<Reply> {
    let refuse = |status: Status| {
        service.stats.record(status, None, 0);
        Some(Reply::Data {
            request_id,
            header: DataHeader::error(status),
            payload: None,
            permit: None,
        })
    };
    let req = match ReadRequest::decode(body) {
        Ok(req) => req,
        Err(e) => {
            // The frame itself was whole, so the stream is still in step: answer, keep going.
            warn!(%peer, request_id, "malformed READ: {e}");
            return refuse(Status::BadRequest);
        }
    };
    if !req.whole() && req.length > limits.max_read {
        return refuse(Status::BadRequest);
    }
    let Ok(permit) = Arc::clone(inflight).try_acquire_owned() else { return refuse(Status::Busy) };
    let span = if req.whole() {
        Span::WHOLE
    } else {
        Span { offset: req.offset, len: u64::from(req.length) }
    };
    let ask = ReadAsk { fid: FileId::new(req.volume, req.key, req.cookie), span, jwt: req.jwt };
    let (tx, service) = (tx.clone(), Arc::clone(service));
    tokio::spawn(async move {
        let Answer { header, payload, .. } = service.read(ask).await;
        // A send error means the connection is closing; the answer has nowhere to go.
        let _ = tx.send(Reply::Data { request_id, header, payload, permit: Some(permit) }).await;
    });
    None
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

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Reply>) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(reply) = rx.recv().await {
        write_reply(&mut out, reply).await?;
        // Answers that are already waiting share one flush.
        while let Ok(reply) = rx.try_recv() {
            write_reply(&mut out, reply).await?;
        }
        out.flush().await?;
    }
    out.shutdown().await
}

async fn write_reply(out: &mut BufWriter<OwnedWriteHalf>, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Pong { request_id } => {
            let frame = FrameHeader { kind: Kind::Pong, flags: 0, request_id, body_len: 0 };
            out.write_all(&frame.encode()).await
        }
        Reply::Data { request_id, header, payload, permit } => {
            // The slot frees before the client can see the answer, so a client that sends
            // its next READ on receipt is never refused BUSY for a slot not yet released.
            drop(permit);
            let body_len = DATA_HEADER_LEN as u32 + header.data_len;
            let mut head = [0u8; FRAME_HEADER_LEN + DATA_HEADER_LEN];
            head[..FRAME_HEADER_LEN].copy_from_slice(
                &FrameHeader { kind: Kind::Data, flags: 0, request_id, body_len }.encode(),
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
