//! One pinned budget per process: a single page-aligned allocation that receive pools are
//! carved from ([`Arena`]), instead of one allocation (and one pinning) per connection.
//!
//! Each connection still registers its own memory region, over its own slice of the arena
//! ([`ProtectionDomain::register_lease`](super::ProtectionDomain::register_lease)), so each
//! connection keeps its own rkey and a sidecar can write only into that connection's slots
//! (`docs/protocol.md`). Slices never overlap, so the pages pinned by every registration
//! together are at most the arena's size: the process pins at most its budget however
//! many sidecars it talks to. A slice goes back to the arena when its registration is gone.
//!
//! Which slice a connection gets is decided by [`Carve`], plain logic tested without a
//! device: a connection gets at most an eighth of what is free (so one greedy or stuck
//! connection never takes the rest), and nothing it holds can be taken by another.

use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::error::{VerbsError, VerbsResult};

/// A connection takes at most `1 / SHARE` of the free units: with a 64 MiB budget of 1 MiB
/// slots, the first connections get 7, 7, 6, 5, 4 ... and about 27 connections get at least
/// one slot before the arena is full (with one half, only 8 did: a few threads reading
/// from two sidecars over verbs alone would have run out).
pub const SHARE: u32 = 8;

/// Alignment of slices: a page, so one registration never pins a page of another's slice.
pub const PAGE: u64 = 4096;

/// The bookkeeping of an arena: which slot-sized units are free, in ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carve {
    /// Units in the arena.
    units: u32,
    /// Free ranges `(start, len)`, sorted by start, never adjacent (merged on return).
    free: Vec<(u32, u32)>,
}

impl Carve {
    /// An arena of `units` free units.
    pub fn new(units: u32) -> Carve {
        let free = if units == 0 { Vec::new() } else { vec![(0, units)] };
        Carve { units, free }
    }

    /// Units in the arena.
    pub fn units(&self) -> u32 {
        self.units
    }

    /// Units free now.
    pub fn free_units(&self) -> u32 {
        self.free.iter().map(|&(_, len)| len).sum()
    }

    /// A contiguous range for a connection that wants `want` units: `want`, or fewer when
    /// the arena is short, but never more than an eighth of what is free (at least one
    /// unit: [`SHARE`]), so
    /// the next connection still finds room. `None` when nothing is free.
    pub fn take(&mut self, want: u32) -> Option<(u32, u32)> {
        let free = self.free_units();
        if free == 0 || want == 0 {
            return None;
        }
        let cap = want.min((free / SHARE).max(1));
        // The smallest free range that holds `cap`, else the largest one (and less).
        let fits =
            self.free.iter().enumerate().filter(|(_, r)| r.1 >= cap).min_by_key(|(_, r)| r.1);
        let (i, &(start, len)) = match fits {
            Some(found) => found,
            None => self.free.iter().enumerate().max_by_key(|(_, r)| r.1)?,
        };
        let got = cap.min(len);
        if got == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + got, len - got);
        }
        Some((start, got))
    }

    /// Returns a range taken before; merges it with its free neighbours.
    pub fn give_back(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let at = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(at, (start, len));
        // Merge with the next, then with the previous.
        if at + 1 < self.free.len() && self.free[at].0 + self.free[at].1 == self.free[at + 1].0 {
            self.free[at].1 += self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].0 + self.free[at - 1].1 == self.free[at].0 {
            self.free[at - 1].1 += self.free[at].1;
            self.free.remove(at);
        }
    }
}

/// The arena's memory: one anonymous private mapping, made once. Its pages are zero and
/// take no memory until first touched; a registration touches (and pins) only the pages of
/// its own slice. (A page-aligned heap allocation would be zeroed with a memset, making
/// the whole budget resident at once.)
struct Memory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the allocation is reached only through leases, each of which covers a range no
// other lease covers (Carve hands each unit to one holder at a time).
unsafe impl Send for Memory {}
// SAFETY: as above; Memory itself only exposes its base address.
unsafe impl Sync for Memory {}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: mapped in `Arena::new` with this length, unmapped once, after every lease
        // (each holds the arena, and so this memory) and so every registration is gone.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

struct ArenaInner {
    memory: Memory,
    unit: u32,
    carve: Mutex<Carve>,
    /// Signalled whenever a slice comes back, for [`Arena::wait_for_room`].
    returned: Condvar,
}

/// The process's pinned budget: `units` slots of `unit` bytes in one allocation.
#[derive(Clone)]
pub struct Arena {
    inner: Arc<ArenaInner>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("unit", &self.inner.unit)
            .field("carve", &*self.carve())
            .finish()
    }
}

impl Arena {
    /// An arena of as many `unit`-byte slots as fit in `budget` bytes, each slot rounded up
    /// to whole pages (so slices never share a page).
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] when not even one slot fits; [`VerbsError::Alloc`].
    pub fn new(unit: u32, budget: u64) -> VerbsResult<Arena> {
        let unit = u64::from(unit).max(1).div_ceil(PAGE) * PAGE;
        let units = u32::try_from(budget / unit).unwrap_or(u32::MAX);
        if units == 0 {
            return Err(VerbsError::Invalid(format!(
                "a pinned budget of {budget} bytes holds no receive slot of {unit} bytes"
            )));
        }
        let unit = u32::try_from(unit).map_err(|_| VerbsError::Alloc(usize::MAX))?;
        let len = usize::try_from(u64::from(unit) * u64::from(units))
            .map_err(|_| VerbsError::Alloc(usize::MAX))?;
        // SAFETY: a fresh anonymous private mapping of `len` (> 0) bytes at an address the
        // kernel picks; nothing else refers to it. MAP_FAILED is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VerbsError::Alloc(len));
        }
        // A forked child builds its own engine state and never touches this memory; without
        // this the kernel would copy every pinned page of it into the child at fork.
        // Advisory: on failure the child just gets a copy.
        // SAFETY: the mapping made just above, `len` bytes; changes only fork's treatment.
        unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(VerbsError::Alloc(len))?;
        let memory = Memory { ptr, len };
        Ok(Arena {
            inner: Arc::new(ArenaInner {
                memory,
                unit,
                carve: Mutex::new(Carve::new(units)),
                returned: Condvar::new(),
            }),
        })
    }

    fn carve(&self) -> MutexGuard<'_, Carve> {
        // Each change is one vector edit; a panic cannot leave it half-done.
        self.inner.carve.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes per slot (whole pages).
    pub fn unit(&self) -> u32 {
        self.inner.unit
    }

    /// Bytes the arena spans: the most the process pins for receive pools.
    pub fn bytes(&self) -> u64 {
        u64::from(self.inner.unit) * u64::from(self.carve().units())
    }

    /// Bytes leased now.
    pub fn leased_bytes(&self) -> u64 {
        let carve = self.carve();
        u64::from(self.inner.unit) * u64::from(carve.units() - carve.free_units())
    }

    /// A slice of up to `want` slots (see [`Carve::take`]); `None` when the arena is full.
    pub fn lease(&self, want: u32) -> Option<ArenaLease> {
        let (start, slots) = self.carve().take(want)?;
        Some(ArenaLease { arena: self.clone(), start, slots })
    }

    /// Blocks until at least one slot is free, or `until` passes; whether one is. A slice
    /// comes back when its holder's registration is gone, which for a connection closed on
    /// another thread happens a little after the close: a caller that closed one to make
    /// room waits here for its slice rather than finding the arena still full.
    pub fn wait_for_room(&self, until: Instant) -> bool {
        let mut carve = self.carve();
        loop {
            if carve.free_units() > 0 {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            carve = self
                .inner
                .returned
                .wait_timeout(carve, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// One connection's slice of the arena; back to the arena when dropped.
pub struct ArenaLease {
    arena: Arena,
    start: u32,
    slots: u32,
}

impl std::fmt::Debug for ArenaLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaLease")
            .field("start", &self.start)
            .field("slots", &self.slots)
            .finish()
    }
}

impl ArenaLease {
    /// Slots in the slice.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.arena.unit()
    }

    /// Bytes in the slice.
    pub fn len(&self) -> usize {
        self.slots as usize * self.arena.unit() as usize
    }

    /// Whether the slice is empty (never, for a lease the arena gave).
    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// The slice's first byte.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        let offset = self.start as usize * self.arena.unit() as usize;
        // SAFETY: start + slots <= units, so the offset lies inside the allocation.
        unsafe { self.arena.inner.memory.ptr.add(offset) }
    }
}

impl Drop for ArenaLease {
    fn drop(&mut self) {
        self.arena.carve().give_back(self.start, self.slots);
        self.arena.inner.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_at_most_an_eighth_of_what_is_free() {
        let mut c = Carve::new(64);
        assert_eq!(c.take(16), Some((0, 8)));
        assert_eq!(c.take(64), Some((8, 7)));
        assert_eq!(c.free_units(), 49);
        assert_eq!(c.take(1), Some((15, 1)));
        assert_eq!(c.take(0), None);
    }

    #[test]
    fn a_full_arena_refuses_and_a_return_makes_room() {
        let mut c = Carve::new(2);
        assert_eq!(c.take(8), Some((0, 1)));
        assert_eq!(c.take(8), Some((1, 1)));
        assert_eq!(c.take(1), None);
        c.give_back(0, 1);
        assert_eq!(c.take(4), Some((0, 1)));
    }

    #[test]
    fn returns_merge_with_their_neighbours() {
        let mut c = Carve::new(96);
        let a = c.take(12).unwrap_or_default();
        let b = c.take(12).unwrap_or_default();
        let d = c.take(2).unwrap_or_default();
        assert_eq!((a, b, d), ((0, 12), (12, 10), (22, 2)));
        c.give_back(b.0, b.1);
        c.give_back(a.0, a.1);
        assert_eq!(c.free, vec![(0, 22), (24, 72)]);
        c.give_back(d.0, d.1);
        assert_eq!(c, Carve::new(96));
    }

    #[test]
    fn many_connections_never_exceed_the_arena_and_each_gets_a_slot() {
        // 63 units (a 64 MiB budget of 1 MiB + 4 KiB slots), 16 sidecars x 3 connections.
        let mut c = Carve::new(63);
        let mut held = Vec::new();
        while let Some(r) = c.take(16) {
            held.push(r);
        }
        let total: u32 = held.iter().map(|r| r.1).sum();
        assert_eq!(total, 63);
        assert!(held.len() >= 24, "{held:?}");
        assert_eq!(held[..4].iter().map(|r| r.1).collect::<Vec<_>>(), [7, 7, 6, 5]);
        // No two ranges overlap.
        let mut sorted = held.clone();
        sorted.sort();
        assert!(sorted.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    }

    #[test]
    fn a_slow_holder_keeps_only_its_own_range() {
        let arena = Arena::new(4096, 16 * 4096).unwrap_or_else(|e| panic!("{e}"));
        let slow = arena.lease(16).unwrap_or_else(|| panic!("empty"));
        assert_eq!(slow.slots(), 2);
        let other = arena.lease(16).unwrap_or_else(|| panic!("empty"));
        assert_eq!(other.slots(), 1);
        let (a, b) = (slow.ptr().as_ptr() as usize, other.ptr().as_ptr() as usize);
        assert!(b >= a + slow.len() || a >= b + other.len());
        assert_eq!(arena.leased_bytes(), 3 * 4096);
        drop(other);
        assert_eq!(arena.leased_bytes(), 2 * 4096);
        assert_eq!(arena.bytes(), 16 * 4096);
    }

    #[test]
    fn the_budget_takes_no_memory_until_a_slice_is_used() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap_or("0");
            line.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)
        }
        let before = rss_kib();
        let arena = Arena::new(1 << 20, 256 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(arena.bytes(), 256 << 20);
        // Other tests run in this process at the same time: allow for them, not for 256 MiB.
        assert!(rss_kib() < before + (64 << 10), "{before} KiB -> {} KiB", rss_kib());
        let lease = arena.lease(1).unwrap_or_else(|| panic!("empty"));
        // SAFETY: the lease's slice is `len` bytes of the arena's mapping, held by it alone.
        let slice = unsafe { std::slice::from_raw_parts(lease.ptr().as_ptr(), lease.len()) };
        assert!(slice.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_waiter_for_room_wakes_when_a_slice_comes_back_and_gives_up_at_its_deadline() {
        use std::time::Duration;
        let arena = Arena::new(4096, 2 * 4096).unwrap_or_else(|e| panic!("{e}"));
        let a = arena.lease(8).unwrap_or_else(|| panic!("empty"));
        let b = arena.lease(8).unwrap_or_else(|| panic!("empty"));
        assert!(arena.lease(1).is_none(), "full");
        assert!(!arena.wait_for_room(Instant::now() + Duration::from_millis(20)), "none back");
        let waiter = std::thread::spawn({
            let arena = arena.clone();
            move || arena.wait_for_room(Instant::now() + Duration::from_secs(60))
        });
        // Given back on another thread, as a connection closed off-thread gives its slice.
        std::thread::spawn(move || drop(a)).join().unwrap_or_else(|_| panic!("dropper"));
        assert!(waiter.join().unwrap_or_else(|_| panic!("waiter")), "woken by the return");
        assert!(arena.wait_for_room(Instant::now()), "room now, no wait");
        drop(b);
    }

    #[test]
    fn slots_are_rounded_to_pages_and_a_tiny_budget_is_refused() {
        let arena = Arena::new(4097, 64 * 1024).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(arena.unit(), 8192);
        assert_eq!(arena.bytes(), 64 * 1024);
        assert!(Arena::new(1 << 20, 4096).is_err());
    }
}
