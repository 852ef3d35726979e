use std::collections::BinaryHeap;

use super::ChunkSpec;

/// A file range `[start, stop)` whose bytes all come from one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisibleInterval {
    /// First file byte of the range.
    pub start: u64,
    /// One past the last file byte of the range.
    pub stop: u64,
    /// Index of the winning chunk in the list the plan was built from.
    pub chunk: usize,
    /// Where `start` falls inside that chunk's (decoded) data.
    pub offset_in_chunk: u64,
}

/// A chunk in the sweep: what the sweep needs from it, copied out of the chunk list so that
/// walking the chunks in offset order does not jump around that list. Field order is the
/// priority order: the derived `Ord` compares `modified_ts_ns` first and the list index
/// second, which is exactly the "newest wins, later in the list breaks ties" rule; the
/// other fields never decide since `(modified_ts_ns, index)` is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Live {
    modified_ts_ns: i64,
    index: usize,
    offset: u64,
    stop: u64,
}

/// Heap size below which ended chunks are only dropped as they surface. Tiny under test,
/// so that the small chunk lists of the property tests go through the purge too (the
/// threshold changes only the speed, never the result).
const PURGE_MIN: usize = if cfg!(test) { 2 } else { 64 };

/// Resolves overlaps into sorted, non-overlapping intervals, holes left out, with
/// neighbouring pieces of the same chunk joined.
///
/// Sweeps the chunks in offset order, keeping those that cover the sweep position in a
/// max-heap by priority. Chunks that ended are removed when they reach the top, and, so
/// that ended low-priority chunks cannot pile up underneath a long-lived winner, by a
/// sweep of the whole heap whenever it has doubled since the last one. Each chunk is
/// pushed and removed once and the sweeps cost O(1) per push amortised: O(n log n) for
/// any amount of overlap, with the heap kept within about twice the chunks actually live.
///
/// The caller must have checked that no `offset + size` overflows.
pub(super) fn visible_intervals(chunks: &[ChunkSpec]) -> Vec<VisibleInterval> {
    if in_order_and_disjoint(chunks) {
        let mut out = Vec::with_capacity(chunks.len());
        out.extend(chunks.iter().enumerate().filter(|(_, c)| c.size > 0).map(|(i, c)| {
            VisibleInterval {
                start: c.offset,
                stop: c.end().unwrap_or(u64::MAX),
                chunk: i,
                offset_in_chunk: 0,
            }
        }));
        return out;
    }
    // Zero-size chunks cover nothing, so they can never be visible.
    let mut order: Vec<Live> = Vec::with_capacity(chunks.len());
    order.extend(chunks.iter().enumerate().filter(|(_, c)| c.size > 0).map(|(i, c)| Live {
        modified_ts_ns: c.modified_ts_ns,
        index: i,
        offset: c.offset,
        stop: c.end().unwrap_or(u64::MAX),
    }));
    order.sort_unstable_by_key(|c| c.offset);

    let mut out: Vec<VisibleInterval> = Vec::with_capacity(order.len());
    let mut live: BinaryHeap<Live> = BinaryHeap::new();
    let mut purge_at = PURGE_MIN;
    let mut next = 0;
    let mut pos = 0;
    loop {
        while live.peek().is_some_and(|top| top.stop <= pos) {
            live.pop();
        }
        if live.is_empty() {
            // A hole (or the end): jump to the next chunk's start.
            match order.get(next) {
                Some(c) => pos = c.offset,
                None => break,
            }
        }
        while let Some(&c) = order.get(next) {
            if c.offset > pos {
                break;
            }
            live.push(c);
            next += 1;
        }
        if live.len() >= purge_at {
            live.retain(|c| c.stop > pos);
            purge_at = (live.len() * 2).max(PURGE_MIN);
        }
        let Some(top) = live.peek() else { continue };
        // The winner can only change where it ends or where another chunk starts.
        let stop = match order.get(next) {
            Some(c) => top.stop.min(c.offset),
            None => top.stop,
        };
        push_joined(&mut out, top, pos, stop);
        pos = stop;
    }
    out.shrink_to_fit();
    out
}

/// Whether the chunks (zero-size ones aside) are already sorted and do not overlap, so each
/// is visible in full. Files written sequentially, the common case, look like this, and a
/// linear check spares them the sort and the heap.
fn in_order_and_disjoint(chunks: &[ChunkSpec]) -> bool {
    let mut covered_to = 0;
    for c in chunks.iter().filter(|c| c.size > 0) {
        if c.offset < covered_to {
            return false;
        }
        covered_to = c.end().unwrap_or(u64::MAX);
    }
    true
}

/// Appends `[start, stop)` of `chunk`, extending the last interval instead when it is the
/// same chunk and ends at `start` (a lower-priority chunk starting underneath the winner
/// splits the sweep, not the visible data).
fn push_joined(out: &mut Vec<VisibleInterval>, chunk: &Live, start: u64, stop: u64) {
    if let Some(last) = out.last_mut() {
        if last.chunk == chunk.index && last.stop == start {
            last.stop = stop;
            return;
        }
    }
    out.push(VisibleInterval {
        start,
        stop,
        chunk: chunk.index,
        offset_in_chunk: start - chunk.offset,
    });
}
