use crate::error::{Error, Result};

/// One chunk of a file as the filer lists it, reduced to what placement needs.
///
/// The needle that holds the chunk is the caller's business: a [`super::Plan`] refers to
/// chunks by their index in the list it was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpec {
    /// Where the chunk's first byte lands in the file.
    pub offset: u64,
    /// How many bytes of the file the chunk covers (its decoded size).
    pub size: u64,
    /// When the chunk was written; among overlapping chunks the largest wins.
    pub modified_ts_ns: i64,
    /// The needle is compressed or encrypted: it has to be fetched whole, decoded and
    /// then sliced, rather than read with a byte range.
    pub whole: bool,
}

impl ChunkSpec {
    /// Builds a chunk from the filer's wire types, where `offset` is a signed 64-bit value.
    ///
    /// # Errors
    /// [`Error::BadPlan`] when `offset` is negative.
    pub fn from_filer(offset: i64, size: u64, modified_ts_ns: i64, whole: bool) -> Result<Self> {
        let offset = u64::try_from(offset)
            .map_err(|_| Error::BadPlan(format!("chunk offset {offset} is negative")))?;
        Ok(Self { offset, size, modified_ts_ns, whole })
    }

    /// One past the chunk's last byte in the file, or `None` when that is beyond `u64`.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.size)
    }
}
