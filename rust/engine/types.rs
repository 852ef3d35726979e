//! The engine's public value types: configuration, operations, outcomes and reports.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::proto::{ReadRequest, Status, READ_WHOLE};

/// Which transport the engine's connections use (`docs/protocol.md`, "verbs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Verbs where this host has a usable RDMA device and the sidecar chooses it, else
    /// tcp. Without a device it behaves exactly as [`Transport::Tcp`] (after one failed
    /// attempt to open the device, logged once).
    #[default]
    Auto,
    /// Always tcp.
    Tcp,
    /// Verbs or nothing: when this host cannot do verbs, every op fails with
    /// [`Failure::Verbs`] (the caller falls back to HTTP). A sidecar that answers tcp is
    /// still used over tcp: it is the sidecar's choice, and the bytes are the same.
    Verbs,
}

impl Transport {
    /// Parses `"auto"`, `"tcp"` or `"verbs"`.
    pub fn parse(name: &str) -> Option<Transport> {
        match name {
            "auto" => Some(Transport::Auto),
            "tcp" => Some(Transport::Tcp),
            "verbs" => Some(Transport::Verbs),
            _ => None,
        }
    }
}

/// How an [`Engine`](super::Engine) behaves. Every wait it does is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Deadline for one whole batch (`read_into`, `read_whole`, `ping`), counted from the call.
    pub timeout: Duration,
    /// Deadline for TCP connect plus the HELLO/HELLO_ACK handshake of one connection.
    pub connect_timeout: Duration,
    /// In-flight READs asked for per connection (the sidecar may grant fewer).
    pub max_inflight: u32,
    /// TCP connections kept per sidecar; a batch spreads its ops over them. Small batches
    /// run on the calling thread over connections of their own instead (a few per sidecar,
    /// as many as threads use at once; see the engine's module docs).
    pub conns_per_sidecar: usize,
    /// First back-off after a sidecar fails; doubles on each further failure.
    pub backoff_min: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Transport of every connection, async and lane.
    pub transport: Transport,
    /// Bytes per slot of a verbs connection's receive pool: the largest range, or whole
    /// needle, one verbs READ can carry (larger ones fail with a reason to fall back).
    pub verbs_slot_size: u32,
    /// Most slots one verbs connection registers: its verbs READs in flight at once. Each
    /// connection registers `min(in-flight asked, verbs_slots)` slots of its own (a lane
    /// connection at most 8), carved from the process's pinned budget.
    pub verbs_slots: u32,
    /// Bytes the process pins for verbs receive pools, all connections together: one
    /// allocation, carved into each connection's pool (its own registration and rkey). A
    /// connection that finds it full is made over tcp under [`Transport::Auto`].
    pub pinned_budget: u64,
    /// A connection (async or lane) unused for this long is closed by the reaper (and its
    /// slice of the pinned budget given back). Zero keeps connections until the engine closes.
    pub idle_timeout: Duration,
    /// Most connections open at once, all sidecars together. A new connection past it first
    /// closes the least recently used idle one; where none is idle it is made anyway and
    /// counted (`over_cap`).
    pub max_conns: usize,
    /// How long a small batch on the calling thread (the lane) retries its socket before
    /// it sleeps until the answer: an answer due in microseconds then costs no wake-up,
    /// which on an idle (virtual) CPU can cost more than the read. Zero never spins.
    pub busy_poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_inflight: 128,
            conns_per_sidecar: 2,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            transport: Transport::Auto,
            verbs_slot_size: 1 << 20,
            verbs_slots: 64,
            pinned_budget: 64 << 20,
            idle_timeout: Duration::from_secs(60),
            max_conns: 128,
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// One ranged read: `len` bytes of a needle's data from `offset`, into the caller's buffer
/// at `buf_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOp {
    /// Sidecar address, `"host:port"`.
    pub sidecar: String,
    /// Volume id.
    pub volume: u32,
    /// Needle key.
    pub key: u64,
    /// Needle cookie.
    pub cookie: u32,
    /// Offset in the needle's data.
    pub offset: u64,
    /// Bytes wanted; at most the sidecar's granted `max_read`.
    pub len: u32,
    /// Where the bytes go in the caller's buffer.
    pub buf_offset: usize,
    /// Read JWT, empty when the sidecar needs none.
    pub jwt: String,
}

impl RangeOp {
    /// The READ asking for this range.
    pub(super) fn request(&self) -> ReadRequest {
        ReadRequest {
            volume: self.volume,
            cookie: self.cookie,
            key: self.key,
            offset: self.offset,
            length: self.len,
            jwt: self.jwt.clone(),
            ..ReadRequest::default()
        }
    }
}

/// One whole-needle read (compressed, encrypted and manifest chunks, end-to-end CRC checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeOp {
    /// Sidecar address, `"host:port"`.
    pub sidecar: String,
    /// Volume id.
    pub volume: u32,
    /// Needle key.
    pub key: u64,
    /// Needle cookie.
    pub cookie: u32,
    /// Read JWT, empty when the sidecar needs none.
    pub jwt: String,
}

impl WholeOp {
    /// The READ asking for the whole needle.
    pub(super) fn request(&self) -> ReadRequest {
        ReadRequest {
            volume: self.volume,
            cookie: self.cookie,
            key: self.key,
            flags: READ_WHOLE,
            jwt: self.jwt.clone(),
            ..ReadRequest::default()
        }
    }
}

/// A needle's whole data as the sidecar sent it, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeNeedle {
    /// The needle's data (compressed form if `needle_flags` says so).
    pub data: Vec<u8>,
    /// The CRC32-C stored in the needle, in either of its stored forms.
    pub crc: u32,
    /// The needle's flags byte (0x01 compressed, 0x80 chunk manifest, ...).
    pub needle_flags: u8,
}

impl WholeNeedle {
    /// Whether `data` matches the stored CRC (plain CRC32-C or SeaweedFS's legacy form).
    pub fn verify(&self) -> bool {
        crate::needle::crc_matches(&self.data, self.crc)
    }
}

/// Why one op was not delivered. The caller reads that extent another way (HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The sidecar is in its back-off period; it was not tried.
    Down,
    /// Connect or handshake failed (refused, unreachable, timed out, closed).
    Connect(String),
    /// The connection broke after the handshake (reset, or closed mid-frame).
    Lost(String),
    /// The batch deadline passed before the answer came.
    Timeout,
    /// The sidecar answered with a status other than OK.
    Status(Status),
    /// Fewer bytes than asked (the range ends past the needle's data).
    Short {
        /// Bytes delivered (written at the start of the destination).
        got: u32,
        /// Bytes asked for.
        want: u32,
    },
    /// A ranged read hit a compressed needle; those bytes are the compressed form.
    Compressed,
    /// The sidecar broke the wire protocol; its connection was closed.
    Protocol(String),
    /// An answer carried this request's id but echoed another READ: someone else wrote on
    /// the same connection (a forked process). Its bytes were not used; the connection
    /// was closed.
    Crossed(String),
    /// The op itself is invalid (destination outside the buffer or overlapping another,
    /// longer than the sidecar's `max_read`, ...).
    BadOp(String),
    /// The verbs transport cannot carry this op (no usable device with
    /// [`Transport::Verbs`], a read larger than a slot, a failed RDMA write...).
    Verbs(String),
}

impl Failure {
    /// A protocol violation by the sidecar (its connection is closed).
    pub(crate) fn protocol(what: impl Into<String>) -> Failure {
        Failure::Protocol(what.into())
    }

    /// A stable, short name for counters (`"timeout"`, `"not_found"`, `"down"`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Down => "down",
            Failure::Connect(_) => "connect",
            Failure::Lost(_) => "lost",
            Failure::Timeout => "timeout",
            Failure::Status(s) => s.name(),
            Failure::Short { .. } => "short",
            Failure::Compressed => "compressed",
            Failure::Protocol(_) => "protocol",
            Failure::Crossed(_) => "crossed",
            Failure::BadOp(_) => "bad_op",
            Failure::Verbs(_) => "verbs",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Down => f.write_str("sidecar down"),
            Failure::Connect(why) => write!(f, "connect: {why}"),
            Failure::Lost(why) => write!(f, "connection lost: {why}"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Status(s) => f.write_str(s.name()),
            Failure::Short { got, want } => write!(f, "short: {got} of {want} bytes"),
            Failure::Compressed => f.write_str("compressed"),
            Failure::Protocol(why) => write!(f, "protocol: {why}"),
            Failure::Crossed(why) => write!(f, "crossed answer: {why}"),
            Failure::BadOp(why) => write!(f, "bad op: {why}"),
            Failure::Verbs(why) => write!(f, "verbs: {why}"),
        }
    }
}

/// One sidecar's state as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarHealth {
    /// Sidecar address.
    pub addr: String,
    /// False from a failure until the next successful connect or answer.
    pub up: bool,
    /// Consecutive failures that marked it down (0 when up).
    pub failures: u32,
    /// Time left in the back-off; `Some(ZERO)` when the next batch will probe it.
    pub retry_in: Option<Duration>,
    /// Transport of its last new connection, async or lane (`"tcp"` or `"verbs"`).
    pub transport: &'static str,
    /// The sidecar's process id from its last handshake (changes on restart).
    pub server_id: Option<u64>,
}

/// Counters since the engine was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls to `read_into`/`read_whole`.
    pub batches: u64,
    /// Of those, the ones run on the caller's thread over a blocking connection (small
    /// batches for one sidecar; see the engine's module docs).
    pub lane_batches: u64,
    /// Of those, the ones an event loop drove on its own thread (`Engine::start_polled`).
    pub polled_batches: u64,
    /// Ops delivered (ranged and whole).
    pub reads: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Of those, by transport: `"tcp"` and `"verbs"` (copied out of the receive slots).
    pub bytes_by_transport: BTreeMap<String, u64>,
    /// Whole-needle ops delivered.
    pub whole_reads: u64,
    /// Failed ops by [`Failure::reason`].
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Connections established (handshake done).
    pub connects: u64,
    /// Of those, ones that replaced a broken connection.
    pub reconnects: u64,
    /// Times a sidecar was marked down.
    pub marked_down: u64,
    /// Connections killed because a deadline passed while a payload was being written
    /// into the caller's buffer.
    pub aborted: u64,
    /// Sidecars known to the engine.
    pub sidecars: usize,
    /// Connections open now (async and lane, all sidecars).
    pub open_conns: usize,
    /// Connections closed after `idle_timeout` unused.
    pub reaped: u64,
    /// Idle connections closed to stay within `max_conns`.
    pub evicted: u64,
    /// Idle verbs connections closed to give their slice of a full pinned budget to a new
    /// verbs connection (which would otherwise have been tcp, or failed under `verbs`).
    pub pinned_evicted: u64,
    /// Connections made past `max_conns` because none was idle to close.
    pub over_cap: u64,
    /// Verbs READs that found every receive slot of their connection held and waited for
    /// one to be freed (on the lane, once per try: a READ sent after one answer is one).
    pub slot_waits: u64,
    /// Verbs receive pools: bytes registered (pinned) now, the budget they are carved
    /// from (0 before verbs is first used), and pools registered so far.
    pub pinned_bytes: u64,
    /// See `pinned_bytes`.
    pub pinned_budget: u64,
    /// See `pinned_bytes`.
    pub pinned_leases: u64,
}
