//! The values a read is made of, shared by every layer of the sidecar: what is asked
//! (`ReadAsk`, `Span`), what the needle says besides its bytes (`DataMeta`), and the answer.
//! A leaf module: it imports nothing from the service or the front ends above it.

use super::staging::Lease;
use super::stats::Source;
use crate::fid::FileId;
use crate::proto::{DataHeader, Status};

/// A byte range of a needle's data; `len` may run past the end (it is clamped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl Span {
    /// All of the data.
    pub(crate) const WHOLE: Span = Span { offset: 0, len: u64::MAX };

    /// `(start, len)` of this span inside data of `size` bytes.
    pub(crate) fn clamp(self, size: u32) -> (u64, u64) {
        let size = u64::from(size);
        let start = self.offset.min(size);
        (start, self.len.min(size - start))
    }
}

/// What a DATA answer says about the needle besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DataMeta {
    /// The flags byte (0 where the record has none).
    pub(crate) flags: u8,
    /// The CRC as stored in the tail.
    pub(crate) crc: u32,
    /// Bytes of data in the whole needle.
    pub(crate) data_size: u32,
}

/// A read as either front end asks for it.
#[derive(Debug, Clone)]
pub(crate) struct ReadAsk {
    pub(crate) fid: FileId,
    pub(crate) span: Span,
    pub(crate) jwt: String,
}

/// The answer: the DATA header, and for OK the bytes and where they came from.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) header: DataHeader,
    pub(crate) payload: Option<Lease>,
    pub(crate) source: Option<Source>,
}

impl Answer {
    pub(crate) fn refuse(status: Status) -> Answer {
        Answer { header: DataHeader::error(status), payload: None, source: None }
    }

    pub(crate) fn data(meta: DataMeta, lease: Lease, source: Source) -> Answer {
        let header = DataHeader {
            status: Status::Ok,
            needle_flags: meta.flags,
            // A lease never exceeds max_read, which is a u32.
            data_len: u32::try_from(lease.len()).unwrap_or(u32::MAX),
            needle_size: meta.data_size,
            crc: meta.crc,
        };
        Answer { header, payload: Some(lease), source: Some(source) }
    }
}
