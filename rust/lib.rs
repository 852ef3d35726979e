//! seaweed-rdma's engine crate.
//!
//! Plain Rust modules hold the logic and are tested with `cargo test`:
//! - [`fid`]: SeaweedFS file ids (`"3,01637037d6"`).
//! - [`needle`]: the on-disk needle record (versions 2 and 3) and its CRC32-C.
//! - [`pages`]: fresh destination memory faulted in ahead of the writes that fill it.
//! - [`spin`]: whether busy-poll waits are paying, learnt per connection.
//! - [`volume`]: a read-only view of a volume's `.idx`/`.dat` pair.
//! - [`plan`]: chunk list -> visible intervals -> needle extents for a byte range.
//! - [`proto`]: the sidecar wire protocol (`docs/protocol.md`).
//! - [`manifest`]: the `FileChunkManifest` protobuf that chunk-manifest needles hold.
//! - [`fuse`]: the native FUSE read loop spliced into a libfuse session.
//! - [`verbs`]: RDMA through libibverbs, loaded at run time (no link-time dependency).
//!
//! The PyO3 bindings live in [`py`] and only convert arguments and errors.
#![deny(missing_docs)]

pub mod engine;
pub mod error;
pub mod fid;
pub mod fuse;
pub mod manifest;
pub mod needle;
pub mod pages;
pub mod plan;
pub mod proto;
pub mod sidecar;
pub mod spin;
pub mod verbs;
pub mod volume;

mod py;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
