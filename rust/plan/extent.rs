use super::{ChunkSpec, VisibleInterval};

/// One piece of a read: bytes to take from one chunk and where they go in the caller's
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Index of the chunk in the list the plan was built from.
    pub chunk: usize,
    /// First byte to take from the chunk's (decoded) data.
    pub offset_in_chunk: u64,
    /// How many bytes to take.
    pub len: u64,
    /// Where they go, relative to the start of the read.
    pub buf_offset: u64,
    /// Copied from [`ChunkSpec::whole`]: fetch the needle whole, decode, then slice.
    pub whole: bool,
}

/// Extents for the file range `[offset, end)`, which the caller has already clipped to
/// the file size. `intervals` must be sorted and non-overlapping.
pub(super) fn extents_in(
    chunks: &[ChunkSpec],
    intervals: &[VisibleInterval],
    offset: u64,
    end: u64,
) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    if offset >= end {
        return out;
    }
    let first = intervals.partition_point(|iv| iv.stop <= offset);
    for iv in intervals[first..].iter().take_while(|iv| iv.start < end) {
        let lo = iv.start.max(offset);
        let hi = iv.stop.min(end);
        // Both differences are bounded by the interval, which lies inside its chunk, so
        // none of this arithmetic can overflow.
        let ext = Extent {
            chunk: iv.chunk,
            offset_in_chunk: iv.offset_in_chunk + (lo - iv.start),
            len: hi - lo,
            buf_offset: lo - offset,
            whole: chunks[iv.chunk].whole,
        };
        // Intervals from `Plan::new` are already joined, but the join is part of this
        // function's contract, so it does not lean on how the intervals were made.
        match out.last_mut() {
            Some(last)
                if last.chunk == ext.chunk
                    && last.offset_in_chunk + last.len == ext.offset_in_chunk
                    && last.buf_offset + last.len == ext.buf_offset =>
            {
                last.len += ext.len;
            }
            _ => out.push(ext),
        }
    }
    out
}
