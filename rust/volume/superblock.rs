//! The 8-byte superblock at the start of every `.dat`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Bytes of the fixed superblock; `extra_size` bytes of protobuf follow it.
pub const SUPER_BLOCK_SIZE: usize = 8;

/// What a volume's `.dat` says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperBlock {
    /// Needle format version (1 to 3).
    pub version: u8,
    /// Replica placement, packed as SeaweedFS packs it (one decimal digit per level).
    pub replica_placement: u8,
    /// Volume TTL as stored (count, unit).
    pub ttl: [u8; 2],
    /// Bumped by every vacuum; needle offsets from another revision are meaningless here.
    pub compaction_revision: u16,
    /// Bytes of protobuf after the fixed part.
    pub extra_size: u16,
}

impl SuperBlock {
    /// Parses the first [`SUPER_BLOCK_SIZE`] bytes of a `.dat` (`path` only names it in errors).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when fewer bytes are given or the version is not 1, 2 or 3.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<SuperBlock> {
        let unsupported = |reason: String| Error::Unsupported { path: path.to_owned(), reason };
        let b: &[u8; SUPER_BLOCK_SIZE] =
            bytes.get(..SUPER_BLOCK_SIZE).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                unsupported(format!("{} bytes is too short for a superblock", bytes.len()))
            })?;
        let version = b[0];
        if !(1..=3).contains(&version) {
            return Err(unsupported(format!("needle version {version} (only 1 to 3 are known)")));
        }
        Ok(SuperBlock {
            version,
            replica_placement: b[1],
            ttl: [b[2], b[3]],
            compaction_revision: u16::from_be_bytes([b[4], b[5]]),
            extra_size: u16::from_be_bytes([b[6], b[7]]),
        })
    }

    /// Reads and parses the superblock of an open `.dat`.
    ///
    /// # Errors
    /// [`Error::Io`] when the read fails, [`Error::Unsupported`] as for [`SuperBlock::parse`].
    pub fn read(dat: &File, path: &Path) -> Result<SuperBlock> {
        let mut bytes = [0u8; SUPER_BLOCK_SIZE];
        match dat.read_exact_at(&mut bytes, 0) {
            Ok(()) => SuperBlock::parse(&bytes, path),
            // A `.dat` shorter than its superblock is not a volume this crate can read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => SuperBlock::parse(&[], path),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Byte offset of the first needle record.
    pub fn first_needle_offset(&self) -> u64 {
        SUPER_BLOCK_SIZE as u64 + u64::from(self.extra_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_refuses_unknown_versions() {
        let path = Path::new("1.dat");
        let sb = SuperBlock::parse(&[3, 1, 2, 3, 0, 7, 0, 16], path).expect("valid superblock");
        assert_eq!(sb.version, 3);
        assert_eq!(sb.replica_placement, 1);
        assert_eq!(sb.ttl, [2, 3]);
        assert_eq!(sb.compaction_revision, 7);
        assert_eq!(sb.first_needle_offset(), 24);
        for bad in [&[0u8, 0, 0, 0, 0, 0, 0, 0][..], &[4, 0, 0, 0, 0, 0, 0, 0], &[3, 0, 0]] {
            assert!(matches!(SuperBlock::parse(bad, path), Err(Error::Unsupported { .. })));
        }
    }
}
