//! Destinations in the caller's buffer, handed to connection reader tasks as raw pointers.
//!
//! The soundness argument (also in the module docs of [`super`]):
//! 1. [`validate`] checks that every destination lies inside the caller's `&mut [u8]` and
//!    that no two overlap, so each [`Dest`] names memory no other `Dest` names.
//! 2. A `Dest` lives only in a connection's pending map (behind its mutex) and, while the
//!    reader writes into it, in that reader task's stack. The reader takes it out only
//!    under the lock, after marking the entry "writing".
//! 3. Before `read_into` returns (normally or by unwinding), the batch's registry removes
//!    every entry it created or replaces its `Dest` with "discard" under the same lock; an
//!    entry found "writing" is never touched: instead that connection's reader task is
//!    aborted and the registry blocks until the task is gone ([`super::conn::Conn`]).
//!
//! So after `read_into` returns no task can reach the caller's buffer.

use std::ptr::NonNull;

use super::types::{Failure, RangeOp};

/// A slice of the caller's buffer, as a raw pointer so it can cross into tokio tasks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dest {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Dest` is only a pointer and a length; the memory it names is written by at most
// one thread at a time (the reader task that marked its entry "writing"), and `read_into`
// keeps the buffer borrowed until no task can reach it (see the module docs).
unsafe impl Send for Dest {}

impl Dest {
    /// Bytes the destination holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The destination as a mutable slice.
    ///
    /// # Safety
    /// The caller must be the only code accessing this memory while the slice lives, and
    /// the buffer it came from must still be borrowed by `read_into` (that is, the entry
    /// holding this `Dest` is marked "writing" by the calling reader task).
    pub(super) unsafe fn slice<'a>(self) -> &'a mut [u8] {
        // SAFETY: `ptr..ptr+len` lies inside one live `&mut [u8]` (checked by `validate`), is
        // disjoint from every other `Dest` of the batch, and the caller guarantees exclusive
        // access for the slice's life.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Checks each op's destination against `buf_len` and against the other ops.
///
/// Returns one entry per op: `Ok(())` when its destination is usable, else the reason.
/// Every op whose range overlaps another's is refused, both of them.
pub(super) fn validate(buf_len: usize, ops: &[RangeOp]) -> Vec<Result<(), Failure>> {
    let mut out: Vec<Result<(), Failure>> = ops
        .iter()
        .map(|op| match op.buf_offset.checked_add(op.len as usize) {
            Some(end) if end <= buf_len => Ok(()),
            _ => Err(Failure::BadOp(format!(
                "destination {}+{} outside the {buf_len}-byte buffer",
                op.buf_offset, op.len
            ))),
        })
        .collect();
    // Sort the in-bounds, non-empty ranges by start; a range overlaps an earlier one exactly
    // when it starts before the furthest end seen so far.
    let mut order: Vec<usize> =
        (0..ops.len()).filter(|&i| out[i].is_ok() && ops[i].len > 0).collect();
    order.sort_by_key(|&i| ops[i].buf_offset);
    let mut furthest: Option<(usize, usize)> = None; // (end, op index)
    for &i in &order {
        let (start, end) = (ops[i].buf_offset, ops[i].buf_offset + ops[i].len as usize);
        if let Some((far_end, far_i)) = furthest {
            if start < far_end {
                let why = |j: usize| Failure::BadOp(format!("destination overlaps op {j}"));
                out[i] = Err(why(far_i));
                out[far_i] = Err(why(i));
            }
        }
        match furthest {
            Some((far_end, _)) if far_end >= end => {}
            _ => furthest = Some((end, i)),
        }
    }
    out
}

/// Splits `buf` into one [`Dest`] per op (`None` for refused ops).
///
/// `checked` is [`validate`]'s answer for the same `buf` and `ops`.
pub(super) fn carve(
    buf: &mut [u8],
    ops: &[RangeOp],
    checked: &[Result<(), Failure>],
) -> Vec<Option<Dest>> {
    let base = buf.as_mut_ptr();
    ops.iter()
        .zip(checked)
        .map(|(op, ok)| {
            ok.as_ref().ok()?;
            // SAFETY: `validate` proved `buf_offset + len <= buf.len()`, so the offset stays
            // inside (or one past the end of) the same allocation.
            let start = unsafe { base.add(op.buf_offset) };
            Some(Dest { ptr: NonNull::new(start)?, len: op.len as usize })
        })
        .collect()
}

/// Splits `buf` into one slice per op (`None` for refused ops), for the lane
/// ([`super::lane`]), which fills them on the calling thread while `read_into` holds `buf`:
/// plain borrows, no raw pointers.
///
/// `checked` is [`validate`]'s answer for the same `buf` and `ops`.
pub(super) fn split<'b>(
    buf: &'b mut [u8],
    ops: &[RangeOp],
    checked: &[Result<(), Failure>],
) -> Vec<Option<&'b mut [u8]>> {
    let mut out: Vec<Option<&'b mut [u8]>> = ops.iter().map(|_| None).collect();
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| checked[i].is_ok()).collect();
    order.sort_by_key(|&i| ops[i].buf_offset);
    // Validated non-empty ranges are in bounds and disjoint, so in order of start each one
    // begins at or after the end of the one before: cut them off the front of the rest.
    let mut rest = buf;
    let mut at = 0usize;
    for i in order {
        let (start, len) = (ops[i].buf_offset, ops[i].len as usize);
        if len == 0 {
            out[i] = Some(Default::default()); // may lie inside another range; owns nothing
            continue;
        }
        let fits = |gap: &usize| gap.checked_add(len).is_some_and(|end| end <= rest.len());
        let Some(gap) = start.checked_sub(at).filter(fits) else {
            continue; // unreachable after `validate`; the op then fails as a bad op
        };
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(gap);
        let (dst, tail) = tail.split_at_mut(len);
        out[i] = Some(dst);
        rest = tail;
        at = start + len;
    }
    out
}
