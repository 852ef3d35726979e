//! The crate's one error type. It becomes a Python exception only in [`crate::py`].

use std::io;
use std::path::PathBuf;

/// Everything the format core can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file id string that does not follow `<vid>,<key hex><cookie hex8>[_delta]`.
    #[error("malformed file id {fid:?}: {reason}")]
    BadFid {
        /// The text that was given.
        fid: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// Bytes that do not form a valid needle record.
    #[error("corrupt needle: {0}")]
    CorruptNeedle(String),
    /// The stored CRC32-C does not match the data.
    #[error("CRC mismatch for needle {key:#x}: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// Needle key.
        key: u64,
        /// CRC found in the needle's tail.
        stored: u32,
        /// CRC computed over the data.
        computed: u32,
    },
    /// The needle is not in the volume's index, or its cookie differs (the two are
    /// deliberately indistinguishable to a caller, as on the volume server).
    #[error("needle {key:#x} not found in volume {volume}")]
    NotFound {
        /// Volume id.
        volume: u32,
        /// Needle key.
        key: u64,
    },
    /// The needle was deleted (a tombstone in the index).
    #[error("needle {key:#x} in volume {volume} is deleted")]
    Deleted {
        /// Volume id.
        volume: u32,
        /// Needle key.
        key: u64,
    },
    /// A volume file this crate does not understand (and so must not guess at).
    #[error("unsupported volume {path}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Why it is not supported.
        reason: String,
    },
    /// A [`crate::volume::Location`] from before the volume was re-opened (after a vacuum
    /// its offsets point at other bytes), or from another volume: locate the needle again.
    #[error("stale location for volume {volume}: the volume was re-opened since it was located")]
    StaleLocation {
        /// Volume id.
        volume: u32,
    },
    /// A byte range outside what the needle holds.
    #[error("range out of bounds: offset {offset} + size {size} exceeds {limit}")]
    OutOfBounds {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        size: u64,
        /// What the object holds.
        limit: u64,
    },
    /// A chunk list or read request that makes no sense.
    #[error("invalid plan input: {0}")]
    BadPlan(String),
    /// A protobuf blob that does not decode.
    #[error("bad chunk manifest: {0}")]
    BadManifest(#[from] prost::DecodeError),
    /// A peer that broke the wire protocol (bad magic, unknown kind, oversized frame...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A setting that cannot work (a bad flag value, a missing directory, a transport
    /// this build lacks).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket operation that failed (binding a listener, connecting to a peer).
    #[error("{addr}: {source}")]
    Network {
        /// The address involved.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The engine's runtime threads could not be started.
    #[error("cannot start the engine runtime: {0}")]
    Runtime(#[source] io::Error),
    /// A sidecar that could not be reached or did not answer.
    #[error("sidecar {addr}: {reason}")]
    Sidecar {
        /// The sidecar's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The verbs transport failed (library missing, no device, a verb returned an error).
    #[error(transparent)]
    Verbs(#[from] crate::verbs::VerbsError),
    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A stable, short name of the variant, for counters and for code that must tell
    /// errors apart without parsing messages.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadFid { .. } => "bad_fid",
            Error::CorruptNeedle(_) => "corrupt_needle",
            Error::CrcMismatch { .. } => "crc_mismatch",
            Error::NotFound { .. } => "not_found",
            Error::Deleted { .. } => "deleted",
            Error::Unsupported { .. } => "unsupported",
            Error::StaleLocation { .. } => "stale_location",
            Error::OutOfBounds { .. } => "out_of_bounds",
            Error::BadPlan(_) => "bad_plan",
            Error::BadManifest(_) => "bad_manifest",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            Error::Network { .. } => "network",
            Error::Runtime(_) => "runtime",
            Error::Sidecar { .. } => "sidecar",
            Error::Verbs(_) => "verbs",
            Error::Io { .. } => "io",
        }
    }

    /// One error of every variant (and of each I/O kind the Python side tells apart), for
    /// tests of the mapping into Python exceptions.
    #[doc(hidden)]
    #[allow(deprecated)] // prost's DecodeError::new: the only way to make one without a blob
    pub fn samples() -> Vec<Error> {
        let os = |code: i32| io::Error::from_raw_os_error(code);
        vec![
            Error::BadFid { fid: "x".into(), reason: "sample".into() },
            Error::CorruptNeedle("sample".into()),
            Error::CrcMismatch { key: 1, stored: 2, computed: 3 },
            Error::NotFound { volume: 1, key: 2 },
            Error::Deleted { volume: 1, key: 2 },
            Error::Unsupported { path: "/v/1.dat".into(), reason: "sample".into() },
            Error::StaleLocation { volume: 1 },
            Error::OutOfBounds { offset: 1, size: 2, limit: 0 },
            Error::BadPlan("sample".into()),
            Error::BadManifest(prost::DecodeError::new("sample")),
            Error::Protocol("sample".into()),
            Error::Config("sample".into()),
            Error::Network { addr: "127.0.0.1:1".into(), source: os(111) },
            Error::Runtime(os(11)),
            Error::Sidecar { addr: "127.0.0.1:1".into(), reason: "sample".into() },
            Error::Verbs(crate::verbs::VerbsError::NoDevices),
            Error::io("/v/1.dat", os(2)),
            Error::io("/v/1.dat", os(13)),
            Error::io("/v/1.dat", os(5)),
        ]
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
