//! The `.idx` log and the needle map built from it.

use std::collections::HashMap;
use std::fmt;

use crate::needle::ALIGNMENT;

/// The `size` an `.idx` entry carries for a deletion (-1 as an i32).
pub const TOMBSTONE_SIZE: u32 = u32::MAX;

/// How wide the offsets in `.idx` entries are; SeaweedFS is built with one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLayout {
    /// 4-byte offsets, 16-byte entries (the default build; volumes up to 32 GiB).
    Offset4,
    /// 5-byte offsets, 17-byte entries (the large-disk "8000GB" build). The first four
    /// offset bytes hold its low 32 bits big-endian and the fifth byte bits 32 to 39; the
    /// volumes tests make never reach 32 GiB, so that fifth byte is only seen as 0.
    Offset5,
}

impl IndexLayout {
    /// Bytes per `.idx` entry.
    pub fn entry_size(self) -> usize {
        match self {
            IndexLayout::Offset4 => 16,
            IndexLayout::Offset5 => 17,
        }
    }
}

/// One `.idx` entry, with the offset already in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Needle key.
    pub key: u64,
    /// Byte offset of the needle's record in `.dat`.
    pub offset: u64,
    /// The record's body size, or [`TOMBSTONE_SIZE`].
    pub size: u32,
}

impl IndexEntry {
    /// Whether the entry records a deletion. A deletion's entry may still point at the
    /// tombstone record it appended to `.dat`, so the size is what marks it.
    pub fn is_tombstone(&self) -> bool {
        self.offset == 0 || self.size == TOMBSTONE_SIZE
    }

    /// Decodes one entry of `layout.entry_size()` bytes; `None` when `bytes` is shorter.
    pub fn decode(bytes: &[u8], layout: IndexLayout) -> Option<IndexEntry> {
        let key = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let low = u64::from(u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?));
        let (units, size_at) = match layout {
            IndexLayout::Offset4 => (low, 12),
            IndexLayout::Offset5 => (low | (u64::from(*bytes.get(12)?) << 32), 13),
        };
        let size = u32::from_be_bytes(bytes.get(size_at..size_at + 4)?.try_into().ok()?);
        Some(IndexEntry { key, offset: units * ALIGNMENT, size })
    }
}

/// Key -> latest entry, tombstones kept so a lookup can tell "deleted" from "never there".
#[derive(Default)]
pub(crate) struct NeedleMap {
    entries: HashMap<u64, IndexEntry>,
    live: usize,
}

impl NeedleMap {
    /// Applies every whole entry in `bytes`, in order (a later entry for a key wins).
    /// Returns how many were applied; a partial trailing entry is left for the caller.
    pub(crate) fn apply(&mut self, bytes: &[u8], layout: IndexLayout) -> usize {
        let mut applied = 0;
        for chunk in bytes.chunks_exact(layout.entry_size()) {
            if let Some(entry) = IndexEntry::decode(chunk, layout) {
                self.insert(entry);
                applied += 1;
            }
        }
        applied
    }

    fn insert(&mut self, entry: IndexEntry) {
        let was_live = self.entries.insert(entry.key, entry).is_some_and(|old| !old.is_tombstone());
        match (was_live, entry.is_tombstone()) {
            (false, false) => self.live += 1,
            (true, true) => self.live -= 1,
            _ => {}
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<&IndexEntry> {
        self.entries.get(&key)
    }

    /// Keys whose latest entry is not a deletion.
    pub(crate) fn live(&self) -> usize {
        self.live
    }
}

impl fmt::Debug for NeedleMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeedleMap")
            .field("keys", &self.entries.len())
            .field("live", &self.live)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry16(key: u64, units: u32, size: u32) -> Vec<u8> {
        [&key.to_be_bytes()[..], &units.to_be_bytes(), &size.to_be_bytes()].concat()
    }

    #[test]
    fn decodes_both_widths() {
        let e = IndexEntry::decode(&entry16(5, 7, 42), IndexLayout::Offset4).expect("16 bytes");
        assert_eq!(e, IndexEntry { key: 5, offset: 56, size: 42 });
        let wide =
            [&5u64.to_be_bytes()[..], &7u32.to_be_bytes(), &[1], &42u32.to_be_bytes()].concat();
        let e = IndexEntry::decode(&wide, IndexLayout::Offset5).expect("17 bytes");
        assert_eq!(e, IndexEntry { key: 5, offset: ((1u64 << 32) + 7) * 8, size: 42 });
        assert_eq!(IndexEntry::decode(&wide[..16], IndexLayout::Offset5), None);
    }

    #[test]
    fn later_entries_win_and_tombstones_stay() {
        let mut map = NeedleMap::default();
        let log = [
            entry16(1, 1, 10),
            entry16(2, 3, 20),
            entry16(1, 5, 11),
            entry16(2, 9, TOMBSTONE_SIZE),
            entry16(3, 0, 0),
        ]
        .concat();
        // The last entry is cut short, as when the volume server is mid-write.
        assert_eq!(map.apply(&log[..log.len() - 3], IndexLayout::Offset4), 4);
        assert_eq!(map.get(1).map(|e| (e.offset, e.size)), Some((40, 11)));
        assert!(map.get(2).is_some_and(IndexEntry::is_tombstone));
        assert!(map.get(3).is_none());
        assert_eq!(map.live(), 1);
        map.apply(&log[log.len() - 16..], IndexLayout::Offset4);
        assert!(map.get(3).is_some_and(IndexEntry::is_tombstone), "offset 0 is a deletion");
        map.apply(&entry16(2, 12, 5), IndexLayout::Offset4);
        assert_eq!(map.live(), 2, "a key written again after its deletion is live again");
    }
}
