//! The handshake (`docs/protocol.md`, "Connection and handshake" and "verbs"): `HELLO`,
//! then `VERBS_CLIENT` (64 bytes) when the client sets the verbs bit; `HELLO_ACK`, then the
//! sidecar's `VERBS_ENDPOINT` (32 bytes) when the ack chooses verbs.
//!
//! Verbs is chosen when the client asks for it and this sidecar has a usable device;
//! otherwise tcp, if the client offers it. A client that offers nothing this sidecar
//! serves is closed at once, without waiting for an exchange it would not use.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{timeout_at, Instant};
use tracing::warn;

use super::limits::{protocol, End, Limits};
use super::transport::{Pusher, TcpPusher, VerbsBackend};
use super::HANDSHAKE_DEADLINE;
use crate::proto::{
    Hello, HelloAck, HELLO_LEN, MIN_VERSION, TRANSPORT_TCP, TRANSPORT_VERBS, VERSION,
};
use crate::verbs::exchange::CLIENT_EXCHANGE_LEN;
use crate::verbs::ClientExchange;

/// What a completed handshake agreed on.
pub(crate) struct Session {
    /// READs the client may have in flight.
    pub(crate) granted: usize,
    /// How OK answers reach the client.
    pub(crate) pusher: Arc<dyn Pusher>,
}

/// Reads exactly `buf.len()` bytes before `deadline`.
async fn read_by(
    rd: &mut OwnedReadHalf,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<(), End> {
    match timeout_at(deadline, rd.read_exact(buf)).await {
        Err(_) => Err(protocol(format!("no {what} within {HANDSHAKE_DEADLINE:?}"))),
        Ok(Err(e)) => Err(End::Io(e)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Runs the server side of the handshake.
///
/// # Errors
/// [`End`] when the connection must close: a malformed or unsupported `HELLO` or exchange,
/// no transport in common, or the socket failing.
pub(crate) async fn handshake(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    limits: &Limits,
) -> Result<Session, End> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut hello = [0u8; HELLO_LEN];
    read_by(rd, &mut hello, deadline, "HELLO").await?;
    let hello = Hello::decode(&hello).map_err(protocol)?;
    let granted = match hello.max_inflight {
        0 => limits.max_inflight,
        wanted => wanted.min(limits.max_inflight),
    };
    // A version-1 client ignores the echo DATA frames carry; the rest is the same.
    let mut ack = HelloAck {
        version: hello.version,
        transport: TRANSPORT_TCP,
        max_inflight: granted,
        max_frame: limits.max_frame,
        max_read: limits.max_read,
        server_id: limits.server_id,
    };
    if !(MIN_VERSION..=VERSION).contains(&hello.version) {
        ack.version = 0;
        let _ = wr.write_all(&ack.encode()).await;
        return Err(protocol(format!(
            "client speaks protocol version {}, this sidecar {MIN_VERSION} to {VERSION}",
            hello.version
        )));
    }
    let offered = TRANSPORT_TCP | if limits.verbs.is_some() { TRANSPORT_VERBS } else { 0 };
    if hello.transports & offered == 0 {
        return Err(protocol(format!(
            "client offers transports {:#x}, this sidecar serves {offered:#x}",
            hello.transports
        )));
    }
    let mut verbs = None;
    if hello.transports & TRANSPORT_VERBS != 0 {
        // Read whenever the bit is set, even if tcp is chosen: the stream must stay in step.
        let mut ex = [0u8; CLIENT_EXCHANGE_LEN];
        read_by(rd, &mut ex, deadline, "VERBS_CLIENT").await?;
        let ex = ClientExchange::decode(&ex).map_err(protocol)?;
        if let Some(backend) = &limits.verbs {
            match accept(backend, ex, granted).await {
                Ok(found) => verbs = Some(found),
                Err(reason) if hello.transports & TRANSPORT_TCP != 0 => {
                    warn!("verbs connection failed, serving this client over tcp: {reason}");
                }
                Err(reason) => {
                    return Err(End::Transport(format!("verbs connection failed: {reason}")))
                }
            }
        }
    }
    let pusher: Arc<dyn Pusher> = match verbs {
        Some((endpoint, pusher)) => {
            ack.transport = TRANSPORT_VERBS;
            let mut reply = ack.encode().to_vec();
            reply.extend_from_slice(&endpoint.encode());
            wr.write_all(&reply).await.map_err(End::Io)?;
            pusher
        }
        None => {
            wr.write_all(&ack.encode()).await.map_err(End::Io)?;
            Arc::new(TcpPusher)
        }
    };
    Ok(Session { granted: granted as usize, pusher })
}

/// Connects a queue pair for `ex` on a blocking thread (queue-pair transitions are
/// system calls, a millisecond or more on some hardware).
async fn accept(
    backend: &Arc<dyn VerbsBackend>,
    ex: ClientExchange,
    granted: u32,
) -> Result<(crate::verbs::Endpoint, Arc<dyn Pusher>), String> {
    let backend = Arc::clone(backend);
    match tokio::task::spawn_blocking(move || backend.accept(&ex, granted)).await {
        Ok(result) => result,
        Err(e) => Err(format!("the connecting task failed: {e}")),
    }
}
