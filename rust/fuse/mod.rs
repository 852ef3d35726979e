//! The native FUSE read loop: READs of open files answered from the engine on Rust
//! threads, every other request passed to the Python operations (pyfuse3) unchanged.
//!
//! # Why
//! pyfuse3 runs every request through one trio thread. Measured on a 2-core VM, a handler
//! that does nothing but return bytes already held in memory reaches 2.3-3x `weed mount`
//! on sequential reads, so no Python read handler can go further. Reads are the one
//! request that is both frequent and needs nothing but the file's chunk list.
//!
//! # Shape
//! [`attach`] takes the descriptor libfuse reads the kernel's requests from, clones it once
//! per reader thread (`FUSE_DEV_IOC_CLONE`: the kernel then gives each request to one of
//! the clones), and puts one end of a `SOCK_SEQPACKET` pair in its place, so libfuse (and
//! pyfuse3 above it) reads from us without knowing. `session.rs` has the threads:
//! - a READ of a handle registered at `open` (`files.rs`) is answered from the engine on
//!   the reader's thread; holes are zeros;
//! - anything else, and any READ the engine did not fully deliver, is sent as-is to
//!   libfuse; its reply comes back on the socket and is written to the device the request
//!   came from (the kernel matches a reply to its request per device); a READ larger than
//!   64 KiB goes in pieces whose replies are joined (`pieces.rs`);
//! - a handle read in order has its next chunks read ahead, within a memory budget, and
//!   its READs answered from them (`readahead.rs`);
//! - a read-only OPEN of an inode the Python side offered, and the RELEASE of a handle
//!   opened so, are answered on the reader's thread too (`opens.rs`): a small file read
//!   through the mount then costs the Python side no request but its LOOKUP; an offer
//!   that carries the file's name and attributes has its LOOKUPs answered there too;
//! - IOCTLs are refused with ENOSYS, as libfuse refuses them for pyfuse3 (which has no
//!   such operation): Python's `open()` asks `isatty()` of every file;
//! - INTERRUPTs for native READs are dropped (those finish anyway); FORGETs pass through.
//!
//! When the kernel ends the session (unmount), the readers see `ENODEV` and the loop's
//! "ended" eventfd turns readable, for the Python side to stop pyfuse3's loop.
//! [`Attached::detach`] puts the real descriptor back before libfuse unmounts.

mod abi;
mod fd;
mod files;
mod opens;
mod pieces;
mod readahead;
mod session;
mod tokens;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

pub use abi::Attr;
pub use files::{NativeFile, Planned, Registry, Route};
pub use opens::{Named, Opened, Opens, NATIVE_FH};
pub use readahead::{AheadConfig, AheadStats};
pub use session::{LoopConfig, LoopStats, NativeLoop, FORWARD_PIECE, MAX_MESSAGE};
pub use tokens::Tokens;

use crate::engine::Engine;

/// The loop spliced into a libfuse session's descriptor.
#[derive(Debug)]
pub struct Attached {
    native: NativeLoop,
    session_fd: RawFd,
    real: Option<OwnedFd>,
}

/// Splices a loop of `threads` readers into the libfuse session reading `session_fd` (a
/// mounted `/dev/fuse` descriptor whose requests nobody has read yet). With `jwt_key`,
/// the loop signs each read with a token minted from it (see `tokens.rs`).
///
/// # Errors
/// The descriptor cannot be cloned (not a FUSE device), the message socket cannot be made
/// large enough (see [`MAX_MESSAGE`]; needs CAP_NET_ADMIN or a large `net.core.wmem_max`),
/// or a thread cannot be started. Nothing has changed then.
pub fn attach(
    engine: Arc<Engine>,
    session_fd: RawFd,
    threads: usize,
    cfg: LoopConfig,
    jwt_key: Option<String>,
) -> io::Result<Attached> {
    let real = fd::dup(session_fd)?;
    let devices = (0..threads.max(1))
        .map(|_| fd::clone_device(real.as_raw_fd()))
        .collect::<io::Result<Vec<_>>>()?;
    let notify = fd::clone_device(real.as_raw_fd())?;
    let (python_end, ours) = fd::message_pair(cfg.max_message)?;
    let native = NativeLoop::start(engine, devices, notify, ours, cfg, jwt_key.map(Tokens::new))?;
    fd::replace(&python_end, session_fd)?;
    Ok(Attached { native, session_fd, real: Some(real) })
}

impl Attached {
    /// The running loop (registry, stats, ended eventfd).
    pub fn native(&self) -> &NativeLoop {
        &self.native
    }

    /// Puts the real device back under `session_fd` and stops the loop. Idempotent.
    pub fn detach(&mut self) {
        if let Some(real) = self.real.take() {
            if let Err(e) = fd::replace(&real, self.session_fd) {
                tracing::error!("putting the FUSE device back: {e}");
            }
        }
        self.native.stop();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.detach();
    }
}
