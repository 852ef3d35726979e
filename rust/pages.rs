//! Fresh memory made ready before it is written: a large read into a new buffer spends a
//! good part of its time in page faults (the kernel maps and zeroes each page on first
//! touch: about 7 µs per 4 KiB page on the project's VM, 11-17 ms for 64 MiB in 2 MiB
//! huge pages). [`populate_from_end`] asks the kernel to do that work up front
//! (`MADV_POPULATE_WRITE`, Linux 5.14+), from the end of the range towards its start, so
//! a helper thread doing it meets the network's writes, which fill the buffer from the
//! front, in the middle: each page is faulted by whichever gets there first, and neither
//! waits for the other. It never changes the memory's contents, so it may run while
//! another thread writes the same range.

use std::ops::Range;

/// The step of [`populate_from_end`]: one transparent huge page.
pub const STEP: usize = 2 << 20;

/// The pieces `[start, end)` is populated in, last first: `STEP`-aligned boundaries, the
/// first and last pieces trimmed to the range.
pub fn pieces_from_end(start: usize, end: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut hi = end;
    while hi > start {
        let lo = hi.saturating_sub(1) / STEP * STEP;
        let lo = lo.max(start);
        out.push(lo..hi);
        hi = lo;
    }
    out
}

/// Faults in `[addr, addr + len)` writable, without writing to it, piece by piece from the
/// end. Returns the number of pieces the kernel populated; stops at the first it refuses
/// (a kernel without `MADV_POPULATE_WRITE`, memory unmapped meanwhile: the reads fault the
/// rest in as before).
pub fn populate_from_end(addr: usize, len: usize) -> usize {
    let mut done = 0;
    for piece in pieces_from_end(addr, addr.saturating_add(len)) {
        // madvise wants a page-aligned start; widen to the page holding `piece.start`
        // (still inside the caller's mapping: pages are never split between mappings).
        let page = page_size();
        let lo = piece.start / page * page;
        // SAFETY: MADV_POPULATE_WRITE only prefaults page tables for the range (as a write
        // would, but without writing), so it cannot change any byte another thread reads or
        // writes, and no Rust reference to the memory is formed. On a range that is not
        // (or no longer) mapped writable it fails with an error and changes nothing.
        let rc = unsafe {
            libc::madvise(lo as *mut libc::c_void, piece.end - lo, libc::MADV_POPULATE_WRITE)
        };
        if rc != 0 {
            break;
        }
        done += 1;
    }
    done
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let got = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(got).ok().filter(|&p| p > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_last_first_on_huge_page_boundaries() {
        let start = STEP + 100;
        let end = 4 * STEP + 7;
        let got = pieces_from_end(start, end);
        assert_eq!(
            got,
            vec![4 * STEP..end, 3 * STEP..4 * STEP, 2 * STEP..3 * STEP, start..2 * STEP]
        );
        assert_eq!(pieces_from_end(10, 20), vec![10..20]);
        assert!(pieces_from_end(5, 5).is_empty());
        assert_eq!(pieces_from_end(0, STEP), vec![0..STEP]);
    }

    #[test]
    fn populating_changes_no_byte_even_while_another_thread_writes() {
        let len = 8 * STEP + 12345;
        let mut buf = vec![0u8; len];
        let addr = buf.as_mut_ptr() as usize;
        // Written from the front on this thread while the range is populated from the end
        // on another: every byte must end as written.
        let helper = std::thread::spawn(move || populate_from_end(addr, len));
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let pieces = helper.join().expect("populating thread");
        assert!(pieces <= pieces_from_end(addr, addr + len).len());
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn an_unmapped_range_is_refused_and_left_alone() {
        // The page at address 0 is never mapped.
        assert_eq!(populate_from_end(0, 4096), 0);
    }
}
