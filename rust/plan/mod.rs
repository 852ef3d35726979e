//! Chunk-to-needle planner: turns a filer entry's chunk list into the byte ranges of
//! which needles a read of a file range needs.
//!
//! A SeaweedFS file is a list of chunks that may overlap (random writes through a mount
//! leave them so). Where chunks overlap, the one with the larger `modified_ts_ns` is the
//! one a reader sees; on a tie the chunk later in the list wins. Ranges no chunk covers
//! are holes and read as zeros.
//!
//! [`Plan::new`] resolves the overlaps once, in O(n log n), into sorted
//! [`VisibleInterval`]s; [`Plan::extents`] then answers each read with a binary search
//! plus a walk over the intervals it touches.
//!
//! ```
//! use seaweed_rdma::plan::{ChunkSpec, Plan};
//!
//! let old = ChunkSpec { offset: 0, size: 100, modified_ts_ns: 1, whole: false };
//! let new = ChunkSpec { offset: 40, size: 20, modified_ts_ns: 2, whole: false };
//! let plan = Plan::new(vec![old, new], 0)?;
//! let extents = plan.extents(30, 20);
//! assert_eq!(extents.len(), 2);
//! assert_eq!((extents[0].chunk, extents[0].offset_in_chunk, extents[0].len), (0, 30, 10));
//! assert_eq!((extents[1].chunk, extents[1].offset_in_chunk, extents[1].len), (1, 0, 10));
//! # Ok::<(), seaweed_rdma::Error>(())
//! ```

mod chunk;
mod extent;
mod file_plan;
mod visible;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use chunk::ChunkSpec;
pub use extent::Extent;
pub use file_plan::Plan;
pub use visible::VisibleInterval;
