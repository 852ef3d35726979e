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
//!
//! An offer may also carry the file's name in its directory and its attributes: then a
//! LOOKUP of that name is answered here too, so a file read whole through the mount costs
//! the Python side no request at all. The kernel counts a reference to the inode for each
//! LOOKUP answered; those are counted here until the Python side takes them
//! ([`Opens::take_lookups`]) before it acts on a FORGET, so its own counts, which decide
//! when an inode number is dropped, stay exact. A withdrawal removes the name with the
//! offer, so once the Python side has withdrawn an inode no LOOKUP here hands it out.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::abi::{entry_out, Attr, ENTRY_OUT};
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

/// A name under which an offered inode's LOOKUPs are answered here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The directory's inode.
    pub parent: u64,
    /// The name in it.
    pub name: Box<[u8]>,
    /// The attributes the kernel is given.
    pub attr: Attr,
    /// How long the kernel may keep the name.
    pub entry_valid: Duration,
    /// How long the kernel may keep the attributes.
    pub attr_valid: Duration,
}

#[derive(Debug)]
struct Offer {
    /// What each handle opened here starts from (a copy each: a handle's read-ahead is
    /// its own, and goes with it).
    file: NativeFile,
    keep_cache: bool,
    /// The name looked up here, and the reply body for it.
    named: Option<NameReply>,
}

/// A directory inode, a name in it, and the LOOKUP reply body for that name.
type NameReply = (u64, Box<[u8]>, Box<[u8; ENTRY_OUT]>);

#[derive(Debug, Default)]
struct State {
    offers: HashMap<u64, Offer>,
    /// Directory inode -> names in it answered here -> their inode.
    names: HashMap<u64, HashMap<Box<[u8]>, u64>>,
    /// LOOKUPs answered here per inode, not yet taken by the Python side.
    lookups: HashMap<u64, u64>,
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
    /// saw this version opened before), later ones always do (the same version). With
    /// `named`, LOOKUPs of that name are answered here too. Replaces what `inode` was
    /// offered with.
    pub fn offer(&self, inode: u64, file: NativeFile, keep_cache: bool, named: Option<Named>) {
        let mut guard = self.state();
        let s = &mut *guard;
        s.unname(inode);
        let named = named.map(|n| {
            let body = entry_out(inode, &n.attr, n.entry_valid, n.attr_valid);
            let dir = s.names.entry(n.parent).or_default();
            if let Some(other) = dir.insert(n.name.clone(), inode) {
                if other != inode {
                    // (The Python side withdraws a name's inode before the name moves;
                    // should it not have, the older offer must not answer for it.)
                    if let Some(o) = s.offers.get_mut(&other) {
                        o.named = None;
                    }
                }
            }
            (n.parent, n.name, Box::new(body))
        });
        s.offers.insert(inode, Offer { file, keep_cache, named });
    }

    /// Answers a LOOKUP of `name` in directory `parent` when an offer names it: `reply`
    /// gets the reply body and tells the kernel, under the lock, and a reference is counted
    /// when it succeeds (so a withdrawal and the count never miss each other). None when
    /// the Python side must answer.
    pub fn lookup<E>(
        &self,
        parent: u64,
        name: &[u8],
        reply: impl FnOnce(&[u8; ENTRY_OUT]) -> Result<(), E>,
    ) -> Option<Result<u64, E>> {
        let mut s = self.state();
        let inode = *s.names.get(&parent)?.get(name)?;
        let (_, _, body) = s.offers.get(&inode)?.named.as_ref()?;
        if let Err(e) = reply(body) {
            return Some(Err(e));
        }
        *s.lookups.entry(inode).or_default() += 1;
        Some(Ok(inode))
    }

    /// The kernel references to `inode` that LOOKUPs answered here gave it since the last
    /// call, handed to the Python side (which counts them from now on).
    pub fn take_lookups(&self, inode: u64) -> u64 {
        self.state().lookups.remove(&inode).unwrap_or(0)
    }

    /// How many names are answered here.
    pub fn named(&self) -> usize {
        self.state().names.values().map(HashMap::len).sum()
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
    /// READs, given to `reply` (which tells the kernel) before the lock is let go, so that
    /// no withdrawal can hand the Python side a handle the kernel never got. When `reply`
    /// fails the handle ends as if never opened. None when the Python side must open it.
    pub fn open<E>(
        &self,
        inode: u64,
        files: &Registry,
        reply: impl FnOnce(Opened) -> Result<(), E>,
    ) -> Option<Result<Opened, E>> {
        let mut s = self.state();
        let next = s.next;
        let offer = s.offers.get_mut(&inode)?;
        let opened = Opened { fh: NATIVE_FH | next, keep_cache: offer.keep_cache };
        offer.keep_cache = true;
        files.insert(opened.fh, offer.file.fresh());
        s.next = next.wrapping_add(1) & !NATIVE_FH;
        s.handles.insert(opened.fh, inode);
        if let Err(e) = reply(opened) {
            s.handles.remove(&opened.fh);
            files.remove(opened.fh);
            if let Some(offer) = s.offers.get_mut(&inode) {
                offer.keep_cache = opened.keep_cache; // no open reached the kernel
            }
            return Some(Err(e));
        }
        Some(Ok(opened))
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
        s.unname(inode);
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

impl State {
    /// Stops answering LOOKUPs of the name `inode` is offered under, if any.
    fn unname(&mut self, inode: u64) {
        let Some((parent, name, _)) = self.offers.get_mut(&inode).and_then(|o| o.named.take())
        else {
            return;
        };
        if let Some(dir) = self.names.get_mut(&parent) {
            if dir.get(&name) == Some(&inode) {
                dir.remove(&name);
            }
            if dir.is_empty() {
                self.names.remove(&parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ChunkSpec;

    /// An OPEN whose reply reaches the kernel.
    fn open(opens: &Opens, inode: u64, files: &Registry) -> Option<Opened> {
        opens.open(inode, files, |_| Ok::<(), ()>(())).map(|r| r.expect("replied"))
    }

    fn file() -> NativeFile {
        let spec = ChunkSpec { offset: 0, size: 10, modified_ts_ns: 1, whole: false };
        NativeFile::new(vec![(spec, None)], 10).expect("plans")
    }

    #[test]
    fn an_offered_inode_opens_here_until_withdrawn_and_its_handles_go_to_python() {
        let (opens, files) = (Opens::default(), Registry::default());
        assert_eq!(open(&opens, 5, &files), None, "not offered");
        opens.offer(5, file(), false, None);
        let a = open(&opens, 5, &files).expect("opens");
        let b = open(&opens, 5, &files).expect("opens");
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
        assert_eq!(open(&opens, 5, &files), None);
        assert!(!opens.release(b.fh, &files), "Python releases an adopted handle");
        assert!(files.get(b.fh).is_some());
        assert_eq!(opens.open_handles(), 0);
    }

    #[test]
    fn an_open_whose_reply_fails_never_was() {
        let (opens, files) = (Opens::default(), Registry::default());
        opens.offer(5, file(), false, None);
        let failed = opens.open(5, &files, |o| Err(o.fh)).expect("offered");
        let fh = failed.expect_err("the reply failed");
        assert!(files.get(fh).is_none() && opens.open_handles() == 0);
        assert_eq!(opens.withdraw(5), Vec::<u64>::new(), "nothing to hand over");
        opens.offer(5, file(), false, None);
        let _ = opens.open(5, &files, |_| Err(()));
        let next = open(&opens, 5, &files).expect("opens");
        assert!(!next.keep_cache, "the kernel still has not seen this version opened");
    }

    #[test]
    fn adoption_takes_one_handle_once_and_withdrawal_only_its_inode() {
        let (opens, files) = (Opens::default(), Registry::default());
        opens.offer(5, file(), true, None);
        opens.offer(6, file(), true, None);
        let a = open(&opens, 5, &files).expect("opens");
        let c = open(&opens, 6, &files).expect("opens");
        assert_eq!(opens.adopt(a.fh), Some(5));
        assert_eq!(opens.adopt(a.fh), None);
        assert!(!opens.release(a.fh, &files));
        assert_eq!(opens.withdraw(5), Vec::<u64>::new(), "adopted already");
        assert!(opens.is_offered(6) && opens.offered() == 1);
        assert!(opens.release(c.fh, &files));
        assert_eq!(opens.adopt(12345), None);
    }

    fn named(parent: u64, name: &str, size: u64) -> Option<Named> {
        let attr = Attr { size, mode: 0o100644, nlink: 1, ..Attr::default() };
        let valid = Duration::from_secs(60);
        Some(Named {
            parent,
            name: name.as_bytes().into(),
            attr,
            entry_valid: valid,
            attr_valid: valid,
        })
    }

    fn size_in(body: &[u8; ENTRY_OUT]) -> u64 {
        u64::from_ne_bytes(body[48..56].try_into().expect("8 bytes"))
    }

    /// The reply body of a LOOKUP that reaches the kernel.
    fn look(opens: &Opens, parent: u64, name: &[u8]) -> Option<[u8; ENTRY_OUT]> {
        let mut got = None;
        let r = opens.lookup(parent, name, |b| {
            got = Some(*b);
            Ok::<(), ()>(())
        });
        r.map(|r| r.expect("replied")).and(got)
    }

    #[test]
    fn a_named_offer_answers_its_lookups_and_counts_them_until_taken() {
        let opens = Opens::default();
        assert_eq!(look(&opens, 1, b"a"), None);
        opens.offer(5, file(), true, named(1, "a", 10));
        opens.offer(6, file(), true, None);
        let body = look(&opens, 1, b"a").expect("named");
        assert_eq!(u64::from_ne_bytes(body[..8].try_into().expect("8")), 5);
        assert_eq!(size_in(&body), 10);
        assert_eq!(look(&opens, 1, b"b"), None);
        assert_eq!(look(&opens, 2, b"a"), None, "another directory");
        assert_eq!(opens.lookup(1, b"a", |_| Err(())), Some(Err(())));
        assert_eq!(opens.named(), 1);
        assert_eq!(opens.take_lookups(5), 1, "two answered, one never reached the kernel");
        assert_eq!(opens.take_lookups(5), 0);
        // A new version under the same name: its attributes from now on.
        opens.offer(5, file(), true, named(1, "a", 20));
        assert_eq!(look(&opens, 1, b"a").map(|b| size_in(&b)), Some(20));
        // Withdrawn: the name is the Python side's again; the count waits for a FORGET.
        opens.withdraw(5);
        assert_eq!(look(&opens, 1, b"a"), None);
        assert_eq!(opens.named(), 0);
        assert_eq!(opens.take_lookups(5), 1);
    }

    #[test]
    fn a_name_moves_with_its_offers() {
        let opens = Opens::default();
        opens.offer(5, file(), true, named(1, "a", 10));
        // Offered again under another name (renamed): the old name is no longer answered.
        opens.offer(5, file(), true, named(1, "b", 10));
        assert_eq!(look(&opens, 1, b"a"), None);
        assert!(look(&opens, 1, b"b").is_some());
        // Another inode offered under a name still held by one: the newer wins, and the
        // older's withdrawal does not take the name from it.
        opens.offer(7, file(), true, named(1, "b", 30));
        assert_eq!(look(&opens, 1, b"b").map(|b| size_in(&b)), Some(30));
        opens.withdraw(5);
        assert_eq!(look(&opens, 1, b"b").map(|b| size_in(&b)), Some(30));
        // Offered again without a name: no longer looked up here, still opened here.
        opens.offer(7, file(), true, None);
        assert_eq!(look(&opens, 1, b"b"), None);
        assert!(opens.is_offered(7) && opens.named() == 0);
    }
}
