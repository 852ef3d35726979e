//! What a client registered, and the checks the sidecar makes before writing into it.
//!
//! A client registers a receive pool of `slot_count` slots of `slot_size` bytes for each
//! connection and tells that connection's sidecar its address, length and rkey in the
//! handshake. Each READ names
//! `(dest_slot, dest_offset)`; the sidecar writes there only when the bytes it is about to
//! write lie entirely inside that slot. The rkey covers the whole pool, so this check is
//! what keeps one request's bytes out of another request's slot (and out of memory the
//! client never meant to expose, should a peer send hostile numbers).
//!
//! Everything here is pure and is tested without a device.

use serde::Serialize;

use super::error::{VerbsError, VerbsResult};

/// A client's registered receive pool, as announced in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemotePool {
    /// Address of slot 0 in the client's address space (what the rkey was registered at).
    pub addr: u64,
    /// Registered length in bytes (at least `slot_size * slot_count`).
    pub len: u64,
    /// Remote key of the registration.
    pub rkey: u32,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Number of slots.
    pub slot_count: u32,
}

/// Why a destination was refused (the sidecar answers `BAD_REQUEST`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// `dest_slot` is not one of the client's slots.
    #[error("destination slot {slot} does not exist (the client registered {count})")]
    NoSuchSlot {
        /// Slot named.
        slot: u32,
        /// Slots registered.
        count: u32,
    },
    /// `[dest_offset, dest_offset + len)` does not fit in one slot.
    #[error("{len} bytes at offset {offset} do not fit in a {slot_size}-byte slot")]
    PastSlotEnd {
        /// Offset in the slot.
        offset: u32,
        /// Bytes to write.
        len: u64,
        /// Slot size.
        slot_size: u32,
    },
}

impl RemotePool {
    /// Checks the announcement itself: non-empty slots that fit in the registered length,
    /// and an address range that does not wrap.
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] naming what is wrong.
    pub fn validate(&self) -> VerbsResult<()> {
        let bad = |what: String| Err(VerbsError::Invalid(what));
        if self.slot_size == 0 || self.slot_count == 0 {
            return bad(format!(
                "pool of {} slots of {} bytes is empty",
                self.slot_count, self.slot_size
            ));
        }
        let needed = u64::from(self.slot_size) * u64::from(self.slot_count);
        if needed > self.len {
            return bad(format!(
                "{} slots of {} bytes need {needed} bytes but only {} are registered",
                self.slot_count, self.slot_size, self.len
            ));
        }
        if self.addr.checked_add(self.len).is_none() {
            return bad(format!("pool at {:#x} + {} wraps the address space", self.addr, self.len));
        }
        Ok(())
    }

    /// The remote address to write `len` bytes at `(slot, offset)`, if that range lies
    /// entirely inside the slot.
    ///
    /// Call it with the number of bytes actually about to be written (for a `WHOLE` read,
    /// the needle's size, known only once it has been read). A zero-length range is
    /// accepted at any offset up to the slot size.
    ///
    /// # Errors
    /// [`SlotError`] when the slot does not exist or the range runs past its end.
    pub fn dest(&self, slot: u32, offset: u32, len: u64) -> Result<u64, SlotError> {
        if slot >= self.slot_count {
            return Err(SlotError::NoSuchSlot { slot, count: self.slot_count });
        }
        // In u64 and with checked adds, so no overflow can turn a huge length small.
        let fits =
            u64::from(offset).checked_add(len).is_some_and(|end| end <= u64::from(self.slot_size));
        if !fits {
            return Err(SlotError::PastSlotEnd { offset, len, slot_size: self.slot_size });
        }
        // Cannot overflow once validate() passed: slot * slot_size + offset + len <= len of
        // the pool, and addr + len does not wrap; checked anyway, since a pool that skipped
        // validation must not produce a wrapped address.
        u64::from(slot)
            .checked_mul(u64::from(self.slot_size))
            .and_then(|start| start.checked_add(u64::from(offset)))
            .and_then(|rel| self.addr.checked_add(rel))
            .ok_or(SlotError::PastSlotEnd { offset, len, slot_size: self.slot_size })
    }
}

/// The `RLIMIT_MEMLOCK` in force for this process (bytes; `None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemlockLimit {
    /// Soft limit, the one the kernel enforces.
    pub soft: Option<u64>,
    /// Hard limit, the most an unprivileged process may raise the soft one to.
    pub hard: Option<u64>,
}

impl MemlockLimit {
    /// Reads the limit with `getrlimit(RLIMIT_MEMLOCK)`.
    pub fn current() -> MemlockLimit {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        if rc != 0 {
            // Cannot happen for a valid resource; report "unknown" as unlimited so the
            // check does not block, and registration itself will say if pinning fails.
            return MemlockLimit { soft: None, hard: None };
        }
        let value = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        MemlockLimit { soft: value(lim.rlim_cur), hard: value(lim.rlim_max) }
    }
}

/// Checks that `needed` bytes can be pinned: the soft limit is unlimited or large enough,
/// or the process has `CAP_IPC_LOCK`, which the kernel lets ignore the limit when
/// registering memory (as root normally has).
///
/// `needed` is everything this process registers (client pools and sidecar staging
/// together, when one process runs both); other locked memory in the process counts too.
///
/// # Errors
/// [`VerbsError::Memlock`], whose message tells how to raise the limit (`ulimit -l`).
pub fn check_memlock(needed: u64, limit: MemlockLimit, cap_ipc_lock: bool) -> VerbsResult<()> {
    match limit.soft {
        Some(soft) if soft < needed && !cap_ipc_lock => {
            Err(VerbsError::Memlock { needed, limit: soft })
        }
        _ => Ok(()),
    }
}

/// Whether this process has `CAP_IPC_LOCK` in its effective set (from /proc/self/status).
pub fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pool(slot_size: u32, slot_count: u32) -> RemotePool {
        let len = u64::from(slot_size) * u64::from(slot_count);
        RemotePool { addr: 0x7f00_0000_0000, len, rkey: 7, slot_size, slot_count }
    }

    #[test]
    fn examples() {
        let p = pool(4096, 4);
        assert_eq!(p.dest(0, 0, 4096), Ok(0x7f00_0000_0000));
        assert_eq!(p.dest(3, 96, 4000), Ok(0x7f00_0000_0000 + 3 * 4096 + 96));
        assert_eq!(p.dest(1, 4096, 0), Ok(0x7f00_0000_0000 + 2 * 4096), "empty range at the end");
        assert_eq!(p.dest(4, 0, 1), Err(SlotError::NoSuchSlot { slot: 4, count: 4 }));
        assert!(matches!(p.dest(0, 1, 4096), Err(SlotError::PastSlotEnd { .. })));
        assert!(matches!(p.dest(0, u32::MAX, u64::MAX), Err(SlotError::PastSlotEnd { .. })));
        assert!(matches!(p.dest(0, 0, u64::MAX), Err(SlotError::PastSlotEnd { .. })));
    }

    #[test]
    fn announcements_are_validated() {
        assert!(pool(4096, 4).validate().is_ok());
        assert!(pool(0, 4).validate().is_err());
        assert!(pool(4096, 0).validate().is_err());
        let short = RemotePool { len: 4096 * 4 - 1, ..pool(4096, 4) };
        assert!(short.validate().is_err());
        let wraps = RemotePool { addr: u64::MAX - 10, ..pool(4096, 4) };
        assert!(wraps.validate().is_err());
    }

    #[test]
    fn memlock_message_names_ulimit() {
        let low = MemlockLimit { soft: Some(8 << 20), hard: Some(8 << 20) };
        let err = check_memlock(64 << 20, low, false).expect_err("too low").to_string();
        assert!(err.contains("ulimit -l"), "{err}");
        assert!(
            err.contains(&(64u64 << 20).to_string()) && err.contains(&(8u64 << 20).to_string())
        );
        assert!(check_memlock(64 << 20, low, true).is_ok(), "CAP_IPC_LOCK ignores the limit");
        assert!(check_memlock(8 << 20, low, false).is_ok());
        let unlimited = MemlockLimit { soft: None, hard: None };
        assert!(check_memlock(u64::MAX, unlimited, false).is_ok());
        // Reading the real limit works wherever the tests run.
        let _ = (MemlockLimit::current(), has_cap_ipc_lock());
    }

    proptest! {
        #[test]
        fn accepted_ranges_lie_inside_their_slot(
            slot_size in 1u32..=(1 << 24),
            slot_count in 1u32..=4096,
            addr in 0u64..=(u64::MAX >> 1),
            slot in any::<u32>(),
            offset in prop_oneof![any::<u32>(), 0u32..(1 << 24)],
            len in prop_oneof![any::<u64>(), 0u64..(1 << 25)],
        ) {
            let p = RemotePool { addr, ..pool(slot_size, slot_count) };
            prop_assume!(p.validate().is_ok());
            // The oracle, in u128 where nothing overflows.
            let inside = slot < slot_count
                && u128::from(offset) + u128::from(len) <= u128::from(slot_size);
            match p.dest(slot, offset, len) {
                Ok(at) => {
                    prop_assert!(inside);
                    let slot_start = addr + u64::from(slot) * u64::from(slot_size);
                    prop_assert!(at >= slot_start);
                    prop_assert_eq!(at - slot_start, u64::from(offset));
                    prop_assert!(at + len <= slot_start + u64::from(slot_size));
                    prop_assert!(at + len <= addr + p.len);
                }
                Err(_) => prop_assert!(!inside),
            }
        }
    }
}
