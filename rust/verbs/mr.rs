//! Registered memory: one page-aligned allocation per pool, registered once, carved into
//! equal slots. Nothing is registered per read.
//!
//! The client registers its receive pool with [`Access::RemoteWrite`] and announces it in
//! the handshake ([`RegisteredPool::remote`]); the sidecar registers its staging pool with
//! [`Access::LocalOnly`], so no peer can touch the sidecar's memory.
//!
//! Each [`Slot`] is an owned, exclusive handle to its bytes (like a `Box<[u8]>` whose memory
//! the NIC can reach). Two things happen behind Rust's back, by design of RDMA: the NIC
//! reads a slot after a send is posted from it (do not change it until that send's
//! completion), and a peer may RDMA-write into a `RemoteWrite` pool at any time (read a
//! slot only after the completion that announces its bytes, and copy them out promptly).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use super::arena::ArenaLease;
use super::device::{PdInner, ProtectionDomain};
use super::error::{last_os_error, VerbsError, VerbsResult};
use super::ffi::{self, IbvMr, IbvSge};
use super::slots::RemotePool;

/// Alignment of pool memory: a page, so registration pins whole pages of ours only.
const ALIGN: usize = 4096;

/// Who may access a registered pool besides the local CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Local reads and writes only (the NIC reads it as a send source): the sidecar.
    LocalOnly,
    /// The connected peer may RDMA-write into it: the client's receive pool.
    RemoteWrite,
}

/// A zeroed, page-aligned heap allocation.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> VerbsResult<AlignedBuf> {
        let layout =
            Layout::from_size_align(len.max(1), ALIGN).map_err(|_| VerbsError::Alloc(len))?;
        // SAFETY: the layout has a non-zero size. Zeroed memory comes from calloc/mmap, so
        // pages are committed when registration pins them, not before.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(VerbsError::Alloc(len))?;
        Ok(AlignedBuf { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The memory a registration covers: an allocation of its own, or a slice of the
/// process's pinned arena (given back when the registration is gone).
enum Backing {
    Own(AlignedBuf),
    Leased(ArenaLease),
}

impl Backing {
    fn ptr(&self) -> NonNull<u8> {
        match self {
            Backing::Own(buf) => buf.ptr,
            Backing::Leased(lease) => lease.ptr(),
        }
    }
}

pub(crate) struct MrInner {
    pd: Arc<PdInner>,
    mr: NonNull<IbvMr>,
    lkey: u32,
    rkey: u32,
    // Dropped after `Drop::drop` has deregistered the MR, so the NIC loses access to the
    // memory before it is freed (or given back to the arena for another registration).
    buf: Backing,
}

// SAFETY: the MR is only read by the library; the buffer's bytes are reached through Slots,
// each of which is handed out once and owned by one holder at a time.
unsafe impl Send for MrInner {}
// SAFETY: as above; MrInner itself only exposes keys and addresses.
unsafe impl Sync for MrInner {}

impl Drop for MrInner {
    fn drop(&mut self) {
        // SAFETY: registered by ibv_reg_mr, deregistered once; QPs do not hold MRs, so a
        // send still in flight from this memory fails with a protection error instead of
        // reading freed memory.
        unsafe { (self.pd.ctx.lib.fns().dereg_mr)(self.mr.as_ptr()) };
    }
}

/// A local range of registered memory to send from (an `ibv_sge`), made by [`Slot::sge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge(pub(crate) IbvSge);

impl Sge {
    /// Bytes it covers.
    pub fn len(&self) -> u32 {
        self.0.length
    }

    /// Whether it covers nothing.
    pub fn is_empty(&self) -> bool {
        self.0.length == 0
    }
}

/// A registered pool of `slot_count` slots of `slot_size` bytes.
pub struct RegisteredPool {
    inner: Arc<MrInner>,
    slot_size: u32,
    slot_count: u32,
}

impl std::fmt::Debug for RegisteredPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredPool")
            .field("slot_size", &self.slot_size)
            .field("slot_count", &self.slot_count)
            .field("lkey", &self.inner.lkey)
            .finish()
    }
}

impl ProtectionDomain {
    /// Allocates `slot_size * slot_count` bytes and registers them once (`ibv_reg_mr`).
    ///
    /// Check [`check_memlock`](super::check_memlock) first for a message that says how to
    /// raise the limit; registration fails with ENOMEM when pinning exceeds it.
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] for an empty pool, [`VerbsError::Alloc`],
    /// [`VerbsError::RegMr`].
    pub fn register_pool(
        &self,
        slot_size: u32,
        slot_count: u32,
        access: Access,
    ) -> VerbsResult<RegisteredPool> {
        let len = u64::from(slot_size) * u64::from(slot_count);
        let len = usize::try_from(len).map_err(|_| VerbsError::Alloc(usize::MAX))?;
        if len == 0 {
            return Err(VerbsError::Invalid("a registered pool needs at least one byte".into()));
        }
        let buf = Backing::Own(AlignedBuf::new(len)?);
        self.register(buf, len, slot_size, slot_count, access)
    }

    /// Registers a slice of the process's pinned arena as a pool of its own (its own MR and
    /// rkey, covering that slice only), one slot per arena unit. Slices never overlap, so
    /// registering them pins no page twice.
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] for an empty slice, [`VerbsError::RegMr`].
    pub fn register_lease(&self, lease: ArenaLease, access: Access) -> VerbsResult<RegisteredPool> {
        let (len, slot_size, slot_count) = (lease.len(), lease.slot_size(), lease.slots());
        if len == 0 {
            return Err(VerbsError::Invalid("a registered pool needs at least one byte".into()));
        }
        self.register(Backing::Leased(lease), len, slot_size, slot_count, access)
    }

    fn register(
        &self,
        buf: Backing,
        len: usize,
        slot_size: u32,
        slot_count: u32,
        access: Access,
    ) -> VerbsResult<RegisteredPool> {
        let flags = match access {
            Access::LocalOnly => ffi::IBV_ACCESS_LOCAL_WRITE,
            // Remote write requires local write (verbs rejects it otherwise).
            Access::RemoteWrite => ffi::IBV_ACCESS_LOCAL_WRITE | ffi::IBV_ACCESS_REMOTE_WRITE,
        };
        let flags = i32::try_from(flags).unwrap_or(0);
        let fns = self.inner.ctx.lib.fns();
        // SAFETY: a live PD and `len` bytes of memory we own (an allocation, or an arena
        // slice no other lease covers), which outlives the MR (see MrInner's field order).
        let mr =
            unsafe { (fns.reg_mr)(self.inner.ptr.as_ptr(), buf.ptr().as_ptr().cast(), len, flags) };
        let mr =
            NonNull::new(mr).ok_or_else(|| VerbsError::RegMr { len, source: last_os_error() })?;
        // SAFETY: ibv_reg_mr returned a valid ibv_mr, which stays allocated until dereg.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        let inner = Arc::new(MrInner { pd: Arc::clone(&self.inner), mr, lkey, rkey, buf });
        Ok(RegisteredPool { inner, slot_size, slot_count })
    }
}

impl RegisteredPool {
    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Number of slots.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Local key (for sends from this pool).
    pub fn lkey(&self) -> u32 {
        self.inner.lkey
    }

    /// Remote key (what a peer writes with; only honoured for [`Access::RemoteWrite`]).
    pub fn rkey(&self) -> u32 {
        self.inner.rkey
    }

    /// Address of slot 0.
    pub fn addr(&self) -> u64 {
        self.inner.buf.ptr().as_ptr() as u64
    }

    /// The pool as announced to the peer in the verbs exchange.
    pub fn remote(&self) -> RemotePool {
        RemotePool {
            addr: self.addr(),
            len: u64::from(self.slot_size) * u64::from(self.slot_count),
            rkey: self.rkey(),
            slot_size: self.slot_size,
            slot_count: self.slot_count,
        }
    }

    /// Hands out every slot, each once: the pool's owner decides who holds which (the
    /// sidecar's staging pool, the engine's free list). The registration lives until the
    /// pool and every slot are dropped.
    pub fn into_slots(self) -> Vec<Slot> {
        let size = self.slot_size as usize;
        (0..self.slot_count)
            .map(|index| {
                let offset = index as usize * size;
                // SAFETY: offset < slot_size * slot_count = the allocation's length.
                let ptr = unsafe { self.inner.buf.ptr().add(offset) };
                Slot { mr: Arc::clone(&self.inner), index, ptr, len: size }
            })
            .collect()
    }
}

/// One slot of a [`RegisteredPool`]: owned, exclusive, `Deref<Target = [u8]>`.
pub struct Slot {
    mr: Arc<MrInner>,
    index: u32,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Slot is the only handle to its bytes (into_slots hands each out once), like a
// Box<[u8]>; the MR it keeps alive is Send + Sync.
unsafe impl Send for Slot {}
// SAFETY: shared access only gives `&[u8]`.
unsafe impl Sync for Slot {}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("index", &self.index).field("len", &self.len).finish()
    }
}

impl Slot {
    /// Its index in the pool (`dest_slot` in a READ).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Its address (what a peer writes to, at `pool addr + index * slot_size`).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The send source for `len` bytes at `offset` in this slot.
    ///
    /// # Errors
    /// [`VerbsError::OutsidePool`] when the range does not lie inside the slot.
    pub fn sge(&self, offset: usize, len: usize) -> VerbsResult<Sge> {
        let outside = || VerbsError::OutsidePool {
            offset: offset as u64,
            len: len as u64,
            pool: self.len as u64,
        };
        let end = offset.checked_add(len).ok_or_else(outside)?;
        let length = u32::try_from(len).map_err(|_| outside())?;
        if end > self.len {
            return Err(outside());
        }
        Ok(Sge(IbvSge { addr: self.addr() + offset as u64, length, lkey: self.mr.lkey }))
    }
}

impl std::ops::Deref for Slot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes inside the live allocation (kept by `mr`), owned by this slot.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Slot {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}
