//! The verbs layer's error type: one variant per verb that can fail, each keeping the
//! `io::Error` (errno) the library reported as its source.

use std::io;
use std::time::Duration;

/// Everything the verbs transport can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerbsError {
    /// `dlopen` of libibverbs failed: the library (rdma-core's userspace) is not installed.
    #[error(
        "{name} not found: install rdma-core / libibverbs1 to use the verbs transport; \
         tcp works without it ({detail})"
    )]
    LibraryMissing {
        /// The library name that was tried.
        name: String,
        /// What the dynamic loader said.
        detail: String,
    },
    /// The library is there but lacks a function (an rdma-core older than 1.1's ABI).
    #[error("{library} has no symbol {symbol}: it is too old for the verbs transport ({detail})")]
    MissingSymbol {
        /// The library.
        library: String,
        /// The function looked for.
        symbol: &'static str,
        /// What the dynamic loader said.
        detail: String,
    },
    /// `ibv_get_device_list` failed (often ENOSYS: the kernel has no RDMA support).
    #[error("ibv_get_device_list: {0}")]
    GetDeviceList(#[source] io::Error),
    /// No RDMA device at all.
    #[error("no RDMA devices found (load soft-RoCE with ci/rxe-setup.sh or install an RDMA NIC)")]
    NoDevices,
    /// No device with the requested name.
    #[error("no RDMA device named {wanted:?} (found: {found})")]
    NoSuchDevice {
        /// The name asked for.
        wanted: String,
        /// The devices that exist, comma-separated.
        found: String,
    },
    /// `ibv_open_device` failed.
    #[error("ibv_open_device({device}): {source}")]
    OpenDevice {
        /// Device name.
        device: String,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// `ibv_query_device` failed.
    #[error("ibv_query_device: {0}")]
    QueryDevice(#[source] io::Error),
    /// `ibv_query_port` failed.
    #[error("ibv_query_port(port {port}): {source}")]
    QueryPort {
        /// Port number.
        port: u8,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// `ibv_query_gid` failed.
    #[error("ibv_query_gid(port {port}, index {index}): {source}")]
    QueryGid {
        /// Port number.
        port: u8,
        /// GID table index.
        index: u32,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// No port that can carry a connection (none ACTIVE, or RoCE without a GID).
    #[error("no usable port on {device}: {reason}")]
    NoUsablePort {
        /// Device name.
        device: String,
        /// Why each port was passed over.
        reason: String,
    },
    /// `ibv_alloc_pd` failed.
    #[error("ibv_alloc_pd: {0}")]
    AllocPd(#[source] io::Error),
    /// The pool's memory could not be allocated.
    #[error("cannot allocate a {0}-byte buffer pool")]
    Alloc(usize),
    /// `ibv_reg_mr` failed (ENOMEM usually means RLIMIT_MEMLOCK: see [`VerbsError::Memlock`]).
    #[error("ibv_reg_mr({len} bytes): {source}")]
    RegMr {
        /// Bytes being registered.
        len: usize,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// The locked-memory limit is below what the pools need.
    #[error(
        "registering {needed} bytes of RDMA buffers needs RLIMIT_MEMLOCK of at least that, but \
         it is {limit} bytes: raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in a \
         systemd unit, `memlock` in /etc/security/limits.conf, --ulimit memlock=-1 in docker)"
    )]
    Memlock {
        /// Bytes the pools need pinned.
        needed: u64,
        /// The soft limit in force.
        limit: u64,
    },
    /// `ibv_create_cq` failed.
    #[error("ibv_create_cq({entries} entries): {source}")]
    CreateCq {
        /// Requested entries.
        entries: u32,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// `ibv_create_qp` failed.
    #[error("ibv_create_qp: {0}")]
    CreateQp(#[source] io::Error),
    /// `ibv_modify_qp` to `state` failed.
    #[error("ibv_modify_qp to {state}: {source}")]
    ModifyQp {
        /// The state moved to (INIT, RTR, RTS).
        state: &'static str,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// `ibv_post_send` failed.
    #[error("ibv_post_send: {0}")]
    PostSend(#[source] io::Error),
    /// `ibv_post_recv` failed.
    #[error("ibv_post_recv: {0}")]
    PostRecv(#[source] io::Error),
    /// `ibv_poll_cq` failed.
    #[error("ibv_poll_cq: {0}")]
    PollCq(#[source] io::Error),
    /// A work request completed with an error status.
    #[error("work request {wr_id} failed: {status} (status {code}, vendor error {vendor_err:#x})")]
    Completion {
        /// The request's id.
        wr_id: u64,
        /// `ibv_wc_status_str` of the status.
        status: String,
        /// The raw status.
        code: u32,
        /// Provider-specific detail.
        vendor_err: u32,
    },
    /// Completions did not arrive in time.
    #[error("no completion within {0:?}")]
    Timeout(Duration),
    /// A local buffer range outside the registered pool.
    #[error("range [{offset}, {offset} + {len}) is outside the {pool}-byte registered pool")]
    OutsidePool {
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
        /// Pool size.
        pool: u64,
    },
    /// An argument the verbs layer cannot work with.
    #[error("invalid verbs argument: {0}")]
    Invalid(String),
}

/// Result alias for the verbs layer.
pub type VerbsResult<T> = std::result::Result<T, VerbsError>;

/// The calling thread's errno as an `io::Error` (verbs that return a pointer set errno).
pub(crate) fn last_os_error() -> io::Error {
    io::Error::last_os_error()
}

/// Verbs that return an int give the errno itself (positive), or a negated errno, or -1
/// with errno set, depending on the verb and the provider.
pub(crate) fn from_ret(ret: std::os::raw::c_int) -> io::Error {
    match ret {
        -1 => io::Error::last_os_error(),
        r if r < 0 => io::Error::from_raw_os_error(r.saturating_neg()),
        r => io::Error::from_raw_os_error(r),
    }
}
