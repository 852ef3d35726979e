use super::extent::extents_in;
use super::visible::visible_intervals;
use super::{ChunkSpec, Extent, VisibleInterval};
use crate::error::{Error, Result};

/// A file's chunk list with its overlaps resolved, ready to answer reads.
///
/// Immutable once built, so it can be shared between threads and reused for every read
/// of the same file version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    chunks: Vec<ChunkSpec>,
    intervals: Vec<VisibleInterval>,
    file_size: u64,
}

impl Plan {
    /// Resolves which chunk is visible where.
    ///
    /// The file size is the larger of `attr_size` (the entry's recorded size, which may
    /// extend past the chunks: a hole at the end) and the end of the furthest chunk.
    ///
    /// # Errors
    /// [`Error::BadPlan`] when a chunk's `offset + size` does not fit in a `u64`.
    pub fn new(chunks: Vec<ChunkSpec>, attr_size: u64) -> Result<Plan> {
        let mut file_size = attr_size;
        for (i, c) in chunks.iter().enumerate() {
            let end = c.end().ok_or_else(|| {
                Error::BadPlan(format!(
                    "chunk {i}: offset {} + size {} overflows 64 bits",
                    c.offset, c.size
                ))
            })?;
            file_size = file_size.max(end);
        }
        let intervals = visible_intervals(&chunks);
        Ok(Plan { chunks, intervals, file_size })
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Which chunk is visible where: sorted by `start`, non-overlapping, holes omitted,
    /// and no two neighbours from the same chunk that could be joined.
    pub fn intervals(&self) -> &[VisibleInterval] {
        &self.intervals
    }

    /// The chunk list the plan was built from, in its original order.
    pub fn chunks(&self) -> &[ChunkSpec] {
        &self.chunks
    }

    /// Extents for the file range `[offset, offset + len)` clipped to the file size, in
    /// buffer order; `buf_offset` is relative to `offset`.
    ///
    /// Holes are omitted: the caller zero-fills the rest of a buffer of
    /// [`Plan::read_len`] bytes. Adjacent pieces of the same chunk that are contiguous
    /// both in the chunk and in the buffer come back as one extent.
    ///
    /// O(log n + k) for k extents.
    pub fn extents(&self, offset: u64, len: u64) -> Vec<Extent> {
        extents_in(&self.chunks, &self.intervals, offset, self.clip_end(offset, len))
    }

    /// How many bytes a read of `[offset, offset + len)` returns: `len`, shorter at the end
    /// of the file, 0 past it.
    pub fn read_len(&self, offset: u64, len: u64) -> u64 {
        self.clip_end(offset, len).saturating_sub(offset)
    }

    fn clip_end(&self, offset: u64, len: u64) -> u64 {
        offset.saturating_add(len).min(self.file_size)
    }
}
