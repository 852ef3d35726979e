//! Inodes the native loop may open itself, and the handles it opened.
//!
//! The Python side offers an inode once it holds the file's entry and plan and knows where
//! its volumes are (a lookup of a held file); from then on a read-only OPEN of that inode
//! is answered here with a handle number from a range the Python side never uses
//! ([`NATIVE_FH`] set), and so is that handle's RELEASE. The Python side withdraws the
//! offer before it acts on any change to the file (a writer here, an unlink or rename, an
//! event from another writer); the withdrawal hands it every handle opened here that is
//! still open ("adopted"): from then on those are its handles like any other, and their
//! RELEASEs go to it. One lock covers offers, handles and the handles' read registrations,
//! so an OPEN or RELEASE answered here and a withdrawal never interleave.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::files::{NativeFile, Registry};

/// Set in every handle number the loop hands out; the Python side counts up from 1.
pub const NATIVE_FH: u64 = 1 << 63;

/// What an OPEN answered here gives the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The new handle.
    pub fh: u64,
    /// Whether the kernel may keep the file's pages it has (`FOPEN_KEEP_CACHE`).
    pub keep_cache: bool,
}

#[derive(Debug)]
struct Offer {
    /// What each handle opened here starts from (a copy each: a handle's read-ahead is
    /// its own, and goes with it).
    file: NativeFile,
    keep_cache: bool,
}

#[derive(Debug, Default)]
struct State {
    offers: HashMap<u64, Offer>,
    /// Handles opened here and still the loop's -> their inode.
    handles: HashMap<u64, u64>,
    next: u64,
}

/// Offered inodes and the loop's own handles (see the module docs).
#[derive(Debug, Default)]
pub struct Opens {
    state: Mutex<State>,
}

impl Opens {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets read-only OPENs of `inode` be answered here, reading `file`; the first such
    /// OPEN keeps the kernel's pages when `keep_cache` (the Python side knows whether it
    /// saw this version opened before), later ones always do (the same version).
    pub fn offer(&self, inode: u64, file: NativeFile, keep_cache: bool) {
        self.state().offers.insert(inode, Offer { file, keep_cache });
    }

    /// Whether `inode` is offered.
    pub fn is_offered(&self, inode: u64) -> bool {
        self.state().offers.contains_key(&inode)
    }

    /// How many inodes are offered.
    pub fn offered(&self) -> usize {
        self.state().offers.len()
    }

    /// Opens `inode` here when it is offered: a new handle, registered in `files` for
    /// READs before the lock is let go. None when the Python side must open it.
    pub fn open(&self, inode: u64, files: &Registry) -> Option<Opened> {
        let mut s = self.state();
        let next = s.next;
        let offer = s.offers.get_mut(&inode)?;
        let opened = Opened { fh: NATIVE_FH | next, keep_cache: offer.keep_cache };
        offer.keep_cache = true;
        files.insert(opened.fh, offer.file.fresh());
        s.next = next.wrapping_add(1) & !NATIVE_FH;
        s.handles.insert(opened.fh, inode);
        Some(opened)
    }

    /// Ends handle `fh` when it is the loop's (opened here and not adopted), with its read
    /// registration; false when the Python side owns it (or it is unknown).
    pub fn release(&self, fh: u64, files: &Registry) -> bool {
        let mut s = self.state();
        if s.handles.remove(&fh).is_none() {
            return false;
        }
        files.remove(fh);
        true
    }

    /// Hands handle `fh` (opened here) to the Python side: its inode, or None when it is
    /// not the loop's (released, adopted already, or never opened here). Its READs are
    /// still answered here while it stays registered; its RELEASE goes to Python.
    pub fn adopt(&self, fh: u64) -> Option<u64> {
        self.state().handles.remove(&fh)
    }

    /// Withdraws the offer of `inode` (no more OPENs of it here) and adopts every handle
    /// of it the loop still has, which it returns.
    pub fn withdraw(&self, inode: u64) -> Vec<u64> {
        let mut s = self.state();
        s.offers.remove(&inode);
        let mine: Vec<u64> =
            s.handles.iter().filter(|(_, &i)| i == inode).map(|(&fh, _)| fh).collect();
        for fh in &mine {
            s.handles.remove(fh);
        }
        mine
    }

    /// How many handles opened here are still the loop's.
    pub fn open_handles(&self) -> usize {
        self.state().handles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ChunkSpec;

    fn file() -> NativeFile {
        let spec = ChunkSpec { offset: 0, size: 10, modified_ts_ns: 1, whole: false };
        NativeFile::new(vec![(spec, None)], 10).expect("plans")
    }

    #[test]
    fn an_offered_inode_opens_here_until_withdrawn_and_its_handles_go_to_python() {
        let (opens, files) = (Opens::default(), Registry::default());
        assert_eq!(opens.open(5, &files), None, "not offered");
        opens.offer(5, file(), false);
        let a = opens.open(5, &files).expect("opens");
        let b = opens.open(5, &files).expect("opens");
        assert_ne!(a.fh, b.fh);
        assert!(a.fh & NATIVE_FH != 0 && b.fh & NATIVE_FH != 0);
        assert_eq!((a.keep_cache, b.keep_cache), (false, true), "the first open decides");
        let (fa, fb) = (files.get(a.fh).expect("registered"), files.get(b.fh).expect("registered"));
        assert!(!std::sync::Arc::ptr_eq(&fa, &fb), "each handle has its own read-ahead");
        assert!(opens.release(a.fh, &files));
        assert!(files.get(a.fh).is_none(), "a released handle reads nothing");
        assert!(!opens.release(a.fh, &files), "released once");
        // Withdrawn: the open handle is Python's now, and its registration stays for it.
        assert_eq!(opens.withdraw(5), vec![b.fh]);
        assert!(!opens.is_offered(5));
        assert_eq!(opens.open(5, &files), None);
        assert!(!opens.release(b.fh, &files), "Python releases an adopted handle");
        assert!(files.get(b.fh).is_some());
        assert_eq!(opens.open_handles(), 0);
    }

    #[test]
    fn adoption_takes_one_handle_once_and_withdrawal_only_its_inode() {
        let (opens, files) = (Opens::default(), Registry::default());
        opens.offer(5, file(), true);
        opens.offer(6, file(), true);
        let a = opens.open(5, &files).expect("opens");
        let c = opens.open(6, &files).expect("opens");
        assert_eq!(opens.adopt(a.fh), Some(5));
        assert_eq!(opens.adopt(a.fh), None);
        assert!(!opens.release(a.fh, &files));
        assert_eq!(opens.withdraw(5), Vec::<u64>::new(), "adopted already");
        assert!(opens.is_offered(6) && opens.offered() == 1);
        assert!(opens.release(c.fh, &files));
        assert_eq!(opens.adopt(12345), None);
    }
}
