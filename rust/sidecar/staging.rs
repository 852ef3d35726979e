//! The staging pool: every byte the sidecar sends passes through one of its slabs.
//!
//! The pool is a fixed set of equal-sized slabs allocated once at start-up. With the verbs
//! transport they are the slots of one registered memory region ([`StagingPool::registered`]:
//! registration is expensive, so it happens once, not per read) and the NIC gathers RDMA
//! writes straight from them ([`Lease::sges`]); tcp-only, they are plain heap buffers that
//! the socket writes from. Either way a read of up to
//! one slab draws a single slab and allocates nothing; a larger read draws several and
//! fills them in order. A semaphore with one permit per slab makes callers wait for free
//! slabs, and bounds what the sidecar holds in memory however many reads are in flight.
//!
//! [`StagingPool::limited`] gives one holder (a protocol connection) a view of the pool that
//! can hold at most a set number of slabs at once. Answers wait in their slabs until the
//! socket takes them, so without it two clients that send reads and never read the answers
//! could hold every slab, and everyone else would be answered BUSY.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::verbs::{Sge, Slot, VerbsError, VerbsResult};

/// One slab: heap memory (tcp only) or a slot of the registered staging region (verbs).
enum Slab {
    Heap(Box<[u8]>),
    Registered(Slot),
}

impl std::ops::Deref for Slab {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Slab::Heap(bytes) => bytes,
            Slab::Registered(slot) => slot,
        }
    }
}

impl std::ops::DerefMut for Slab {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Slab::Heap(bytes) => bytes,
            Slab::Registered(slot) => slot,
        }
    }
}

/// A fixed pool of equal-sized buffers. Cheap to clone (all clones share the slabs).
#[derive(Clone)]
pub struct StagingPool {
    inner: Arc<Inner>,
    /// This view's own cap, in slabs, on top of the pool's ([`StagingPool::limited`]).
    quota: Option<Quota>,
}

#[derive(Clone)]
struct Quota {
    slabs: usize,
    permits: Arc<Semaphore>,
}

struct Inner {
    slab_size: usize,
    slab_count: usize,
    /// Free slabs. A holder of `k` permits may always pop `k` of them: a lease gives its
    /// slabs back before its permits are released.
    free: Mutex<Vec<Slab>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for StagingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingPool")
            .field("slab_size", &self.inner.slab_size)
            .field("slab_count", &self.inner.slab_count)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl StagingPool {
    /// A pool of `slab_count` slabs of `slab_size` bytes each (both at least 1).
    ///
    /// The memory is allocated zeroed, so the kernel commits pages only as slabs are first
    /// written; the free list is a stack, so a lightly loaded sidecar keeps reusing the
    /// same few slabs.
    pub fn new(slab_size: usize, slab_count: usize) -> StagingPool {
        let slab_size = slab_size.max(1);
        let free = (0..slab_count.max(1))
            .map(|_| Slab::Heap(vec![0u8; slab_size].into_boxed_slice()))
            .collect();
        StagingPool::from_slabs(slab_size, free)
    }

    /// A pool whose slabs are the slots of one registered memory region (the verbs
    /// transport), so every lease can be sent from by the NIC. `slots` are equal-sized, as
    /// [`RegisteredPool::into_slots`](crate::verbs::RegisteredPool::into_slots) gives them;
    /// an empty list gives an empty pool that answers every read BUSY.
    pub fn registered(slots: Vec<Slot>) -> StagingPool {
        let slab_size = slots.first().map_or(1, |s| s.len());
        StagingPool::from_slabs(slab_size, slots.into_iter().map(Slab::Registered).collect())
    }

    fn from_slabs(slab_size: usize, free: Vec<Slab>) -> StagingPool {
        let slab_count = free.len();
        StagingPool {
            inner: Arc::new(Inner {
                slab_size,
                slab_count,
                free: Mutex::new(free),
                permits: Arc::new(Semaphore::new(slab_count)),
            }),
            quota: None,
        }
    }

    /// A view of the same slabs through which at most `slabs` can be lent at once (and no
    /// more than this view's own cap, if it has one). Leases drawn through it count against
    /// both it and the pool; they return to both when dropped.
    pub fn limited(&self, slabs: usize) -> StagingPool {
        let slabs = self.quota.as_ref().map_or(slabs, |q| q.slabs.min(slabs));
        StagingPool {
            inner: Arc::clone(&self.inner),
            quota: Some(Quota { slabs, permits: Arc::new(Semaphore::new(slabs)) }),
        }
    }

    /// Slabs this view can hold at once: its cap, or the whole pool.
    pub fn limit(&self) -> usize {
        self.quota.as_ref().map_or(self.inner.slab_count, |q| q.slabs)
    }

    /// Bytes per slab.
    pub fn slab_size(&self) -> usize {
        self.inner.slab_size
    }

    /// Number of slabs.
    pub fn slab_count(&self) -> usize {
        self.inner.slab_count
    }

    /// Slabs currently lent out.
    pub fn in_use(&self) -> usize {
        self.inner.slab_count - self.inner.permits.available_permits()
    }

    /// Largest lease the pool can ever grant.
    pub fn capacity(&self) -> usize {
        self.inner.slab_size.saturating_mul(self.inner.slab_count)
    }

    /// Draws enough slabs for `len` bytes, waiting up to `wait` for them to be free (and,
    /// through a [`StagingPool::limited`] view, for its cap to allow them).
    ///
    /// `None` when they did not come free in time, or when `len` exceeds
    /// [`StagingPool::capacity`] or this view's cap; the caller answers BUSY then.
    pub async fn acquire(&self, len: usize, wait: Duration) -> Option<Lease> {
        let slabs = len.div_ceil(self.inner.slab_size);
        if slabs == 0 {
            return Some(Lease {
                slabs: Slabs::None,
                len: 0,
                pool: None,
                _permit: None,
                _quota: None,
            });
        }
        if slabs > self.limit() || self.inner.slab_count == 0 {
            return None;
        }
        let count = u32::try_from(slabs).ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        // The view's cap first: a holder at its cap waits on its own leases, not the pool's.
        let quota = match &self.quota {
            Some(q) => {
                let acquire = Arc::clone(&q.permits).acquire_many_owned(count);
                Some(tokio::time::timeout_at(deadline, acquire).await.ok()?.ok()?)
            }
            None => None,
        };
        let acquire = Arc::clone(&self.inner.permits).acquire_many_owned(count);
        let permit = tokio::time::timeout_at(deadline, acquire).await.ok()?.ok()?;
        let mut free = self.inner.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < slabs {
            // Cannot happen while leases return slabs before permits; refuse rather than panic.
            return None;
        }
        let taken = if slabs == 1 {
            free.pop().map(Slabs::One)?
        } else {
            let at = free.len() - slabs;
            Slabs::Many(free.split_off(at))
        };
        drop(free);
        Some(Lease {
            slabs: taken,
            len,
            pool: Some(Arc::clone(&self.inner)),
            _permit: Some(permit),
            _quota: quota,
        })
    }
}

enum Slabs {
    None,
    One(Slab),
    Many(Vec<Slab>),
}

impl Slabs {
    fn as_slice(&self) -> &[Slab] {
        match self {
            Slabs::None => &[],
            Slabs::One(slab) => std::slice::from_ref(slab),
            Slabs::Many(slabs) => slabs,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Slab] {
        match self {
            Slabs::None => &mut [],
            Slabs::One(slab) => std::slice::from_mut(slab),
            Slabs::Many(slabs) => slabs,
        }
    }
}

/// Slabs lent out of a [`StagingPool`] for `len` bytes; they go back when this drops.
pub struct Lease {
    slabs: Slabs,
    len: usize,
    pool: Option<Arc<Inner>>,
    // Released after `Drop::drop` has put the slabs back (fields drop after it runs).
    _permit: Option<OwnedSemaphorePermit>,
    /// The [`StagingPool::limited`] view's permits, released with the pool's.
    _quota: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("len", &self.len)
            .field("slabs", &self.slabs.as_slice().len())
            .finish()
    }
}

impl Lease {
    /// Bytes this lease holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the lease's slabs can hold (at least [`Lease::len`]).
    pub fn capacity(&self) -> usize {
        self.slabs.as_slice().iter().map(|s| s.len()).sum()
    }

    /// Makes the lease cover `len` bytes; `false` (and no change) when its slabs cannot
    /// hold that many.
    pub fn set_len(&mut self, len: usize) -> bool {
        let fits = len <= self.capacity();
        if fits {
            self.len = len;
        }
        fits
    }

    /// The leased bytes as consecutive pieces, one per slab.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let mut left = self.len;
        self.slabs.as_slice().iter().map_while(move |slab| {
            let n = left.min(slab.len());
            left -= n;
            (n > 0).then(|| &slab[..n])
        })
    }

    /// The leased bytes as consecutive writable pieces, one per slab.
    pub fn chunks_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let mut left = self.len;
        self.slabs.as_mut_slice().iter_mut().map_while(move |slab| {
            let n = left.min(slab.len());
            left -= n;
            if n > 0 {
                Some(&mut slab[..n])
            } else {
                None
            }
        })
    }

    /// The bytes in one slice when they fit one slab (every read up to the slab size).
    pub fn as_single(&self) -> Option<&[u8]> {
        match &self.slabs {
            Slabs::None => Some(&[]),
            Slabs::One(slab) => Some(&slab[..self.len]),
            Slabs::Many(_) => None,
        }
    }

    /// The leased bytes as send sources for the NIC, one per slab, in order.
    ///
    /// The NIC reads them after a send is posted: keep the lease until that send's
    /// completion has been polled.
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] when the pool is not registered (tcp only).
    pub fn sges(&self) -> VerbsResult<Vec<Sge>> {
        let mut left = self.len;
        let mut out = Vec::with_capacity(self.slabs.as_slice().len());
        for slab in self.slabs.as_slice() {
            let n = left.min(slab.len());
            if n == 0 {
                break;
            }
            left -= n;
            match slab {
                Slab::Registered(slot) => out.push(slot.sge(0, n)?),
                Slab::Heap(_) => {
                    return Err(VerbsError::Invalid("the staging pool is not registered".into()))
                }
            }
        }
        Ok(out)
    }

    /// Copies the bytes out (for callers that need one contiguous owned buffer).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        self.chunks().for_each(|c| out.extend_from_slice(c));
        out
    }
}

impl AsRef<[u8]> for Lease {
    /// The bytes of a single-slab lease; empty for a multi-slab one (use [`Lease::chunks`]).
    fn as_ref(&self) -> &[u8] {
        self.as_single().unwrap_or_default()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(pool) = &self.pool else { return };
        let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut self.slabs, Slabs::None) {
            Slabs::None => {}
            Slabs::One(slab) => free.push(slab),
            Slabs::Many(slabs) => free.extend(slabs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn leases_cover_exactly_len_and_come_back() {
        rt().block_on(async {
            let pool = StagingPool::new(4, 3);
            assert_eq!(pool.capacity(), 12);
            let mut lease = pool.acquire(10, Duration::from_millis(10)).await.expect("fits");
            assert_eq!(pool.in_use(), 3);
            let sizes: Vec<usize> = lease.chunks_mut().map(|c| c.len()).collect();
            assert_eq!(sizes, [4, 4, 2]);
            for (i, chunk) in lease.chunks_mut().enumerate() {
                chunk.fill(i as u8);
            }
            assert_eq!(lease.to_vec(), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
            assert!(lease.as_single().is_none());
            assert!(lease.set_len(5));
            assert_eq!(lease.to_vec(), [0, 0, 0, 0, 1]);
            assert!(!lease.set_len(13), "beyond its slabs");
            assert_eq!(lease.capacity(), 12);
            assert!(pool.acquire(1, Duration::from_millis(10)).await.is_none(), "pool is empty");
            drop(lease);
            assert_eq!(pool.in_use(), 0);
            let single = pool.acquire(3, Duration::from_millis(10)).await.expect("free again");
            assert_eq!(single.as_single().map(<[u8]>::len), Some(3));
            assert!(pool.acquire(13, Duration::from_millis(10)).await.is_none(), "over capacity");
            let empty = pool.acquire(0, Duration::from_millis(10)).await.expect("empty lease");
            assert!(empty.is_empty() && empty.chunks().next().is_none());
            assert!(empty.sges().expect("nothing to send").is_empty());
            assert!(single.sges().is_err(), "heap slabs cannot be sent from by the NIC");
            let none = StagingPool::registered(Vec::new());
            assert_eq!((none.slab_count(), none.capacity()), (0, 0));
            assert!(none.acquire(1, Duration::from_millis(10)).await.is_none());
        });
    }

    #[test]
    fn waiters_get_slabs_when_they_are_returned() {
        rt().block_on(async {
            let pool = StagingPool::new(8, 1);
            let first = pool.acquire(8, Duration::from_millis(10)).await.expect("one slab");
            let waiter = {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.acquire(8, Duration::from_secs(5)).await.map(|l| l.len())
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
            assert_eq!(waiter.await.expect("task"), Some(8));
        });
    }

    #[test]
    fn a_limited_view_holds_at_most_its_cap() {
        rt().block_on(async {
            let pool = StagingPool::new(4, 8);
            let view = pool.limited(3);
            assert_eq!((view.limit(), pool.limit()), (3, 8));
            assert_eq!(view.limited(5).limit(), 3, "a view of a view keeps the smaller cap");
            let wait = Duration::from_millis(20);
            let two = view.acquire(8, wait).await.expect("two slabs");
            let one = view.acquire(1, wait).await.expect("a third");
            assert!(view.acquire(1, wait).await.is_none(), "the view is at its cap");
            assert!(view.acquire(16, wait).await.is_none(), "more than the cap, ever");
            assert_eq!(pool.in_use(), 3);
            let others = pool.limited(3);
            let theirs = others.acquire(12, wait).await.expect("another view is not held up");
            assert_eq!(pool.in_use(), 6);
            drop(two);
            let again = view.acquire(8, wait).await.expect("returned slabs count again");
            assert_eq!(pool.in_use(), 6);
            drop((one, again, theirs));
            assert_eq!(pool.in_use(), 0);
            assert!(view.acquire(12, wait).await.is_some(), "the whole cap at once");
        });
    }
}
