//! What a protocol connection is held to ([`Limits`], announced in the handshake and
//! enforced by the reader) and how one ends early ([`End`]): shared by the handshake
//! (`handshake.rs`) and the connection loop (`tcp.rs`), owned by neither.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::transport::VerbsBackend;

/// What the handshake announces and the reader enforces.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_frame: u32,
    pub(crate) max_read: u32,
    pub(crate) max_inflight: u32,
    pub(crate) max_connections: usize,
    pub(crate) idle: Option<Duration>,
    /// Close a connection whose client has taken no bytes for this long while answers wait.
    pub(crate) write_timeout: Option<Duration>,
    /// Staging slabs one connection may hold at once.
    pub(crate) conn_staging_slabs: usize,
    /// How long the reader keeps trying a connection for its next request before it
    /// sleeps (`--busy-poll-us`).
    pub(crate) busy_poll: Duration,
    pub(crate) server_id: u64,
    /// The RDMA device's side of verbs connections; `None` serves tcp only.
    pub(crate) verbs: Option<Arc<dyn VerbsBackend>>,
}

/// Why a connection ended early.
pub(crate) enum End {
    /// The peer broke the protocol: logged as a warning.
    Protocol(String),
    /// The socket failed, or the peer went quiet or away mid-handshake.
    Io(io::Error),
    /// The verbs transport failed (a write, its completion, or connecting the queue pair):
    /// logged as a warning; the client falls back.
    Transport(String),
    /// The client stopped taking its answers for `--write-timeout-secs`: logged as a
    /// warning, counted, and the staging its answers held is released.
    Stalled(String),
}

pub(crate) fn protocol(reason: impl std::fmt::Display) -> End {
    End::Protocol(reason.to_string())
}
