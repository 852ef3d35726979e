//! The `verbs` transport's foundation: RDMA through libibverbs, loaded at run time.
//!
//! The extension has no link-time dependency on libibverbs (`readelf -d` shows no
//! `NEEDED` entry for it): `import seaweed_rdma` and the tcp transport work on hosts
//! without rdma-core, and the library is opened on first use of anything here
//! ([`Loader::global`]). The struct layouts are our own `#[repr(C)]` mirrors of
//! `<infiniband/verbs.h>`, checked against the `rdma-sys` crate's bindgen output in tests
//! (see "Verbs" in `docs/decisions.md`).
//!
//! # Quick start
//! ```no_run
//! use seaweed_rdma::verbs::{Access, Context, Loader, QpCaps, Role};
//! # fn main() -> Result<(), seaweed_rdma::verbs::VerbsError> {
//! let ctx = Context::open(Loader::global()?, None)?;          // first device
//! let port = ctx.local_port(None, None)?;                       // first ACTIVE port + GID
//! let pd = ctx.alloc_pd()?;
//! let pool = pd.register_pool(1 << 20, 16, Access::RemoteWrite)?; // once, at start-up
//! let cq = ctx.create_cq(512)?;
//! let qp = pd.create_qp(&cq, &cq, QpCaps::default(), port, Role::Client)?;
//! let mine = qp.endpoint();      // send with HELLO (with pool.remote()), get the peer's
//! # let theirs = mine;
//! let qp = qp.connect(&theirs)?; // INIT -> RTR -> RTS
//! qp.post_recv(0)?;              // one per write the peer may send
//! # Ok(()) }
//! ```
//!
//! Without a device, [`probe`] says what this host lacks, and the pure parts (the
//! handshake codec in [`exchange`], QP attributes, slot bounds, memlock) are tested
//! everywhere.
//!
//! # Thread safety
//! Every handle is `Send + Sync`: libibverbs and its providers lock what they share, and
//! posting to one queue pair or polling one completion queue from several threads is
//! allowed by verbs. A [`Slot`] is owned by one holder at a time, like a `Box<[u8]>`.
//!
//! # Resource cleanup
//! Handles are cheap clones of an `Arc`ed inner, and each inner holds an `Arc` of its
//! parents' inners: a queue pair keeps its CQs and PD alive, a memory region its PD, and
//! all of them the device context and the loaded library. Teardown therefore happens in
//! dependency order (QP, then CQs and MRs, then PD, then the context) whatever order the
//! handles are dropped in, and no destroy fails with EBUSY. A memory region is
//! deregistered before its memory is freed.
//!
//! # Fork
//! Registered memory is pinned; a child of `fork()` must not touch it and must not use
//! handles inherited from the parent (libibverbs objects do not survive fork). The engine
//! already rebuilds its state in a child; it should build verbs state there afresh too.

pub mod arena;
mod attrs;
mod cq;
mod device;
mod error;
pub mod exchange;
mod ffi;
mod gid;
mod loader;
mod mr;
mod probe;
mod qp;
mod slots;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod ffi_layout_tests;
#[cfg(test)]
mod tests;

pub use arena::{Arena, ArenaLease};
pub use attrs::{
    choose_gid, format_gid, mtu_bytes, path_mtu, random_psn, GidEntry, LocalPort, Role,
};
pub use cq::{Backoff, Completion, CompletionQueue, Pause};
pub use device::{device_names, Context, DeviceAttr, PortAttr, ProtectionDomain};
pub use error::{VerbsError, VerbsResult};
pub use exchange::{ClientExchange, Endpoint};
pub use gid::{GidKind, LinkLayer};
pub use loader::{Loader, LIBIBVERBS};
pub use mr::{Access, RegisteredPool, Sge, Slot};
pub use probe::{
    probe, probe_with, DeviceReport, FuseReport, HostReport, KernelReport, LibraryReport,
    MemlockReport, PortReport, PROBE_PINNED_BYTES,
};
pub use qp::{ConnectedQp, PreparedQp, QpCaps};
pub use slots::{check_memlock, has_cap_ipc_lock, MemlockLimit, RemotePool, SlotError};
