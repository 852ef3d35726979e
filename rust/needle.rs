//! The on-disk needle record of a SeaweedFS `.dat` file, versions 1 to 3 (big-endian).
//!
//! A record is a 16-byte [`Header`], `size` bytes of body, a tail (CRC32-C of the data, plus
//! the append time in version 3) and 1 to 8 bytes of padding up to a multiple of 8.
//! Since version 2 the body starts with the data length and the data, then a flags byte
//! and the optional fields the flags announce.
//!
//! Facts checked against files that `weed` 4.48 wrote (see the cluster tests in
//! [`crate::volume`]): a record whose unpadded length is already a multiple of 8 gets 8
//! padding bytes, never 0; padding bytes are not always zero (they can hold leftovers of
//! earlier bytes), so nothing may depend on their value; a tombstone record has size 0 but keeps the CRC of
//! the data it deleted, so its checksum does not verify; and an empty upload is also a
//! size-0 record (with CRC 0), which is a live needle with no data, not a deletion.

use crate::error::{Error, Result};

/// Bytes in a needle header: cookie (u32), key (u64), body size (u32).
pub const HEADER_SIZE: usize = 16;

/// Where a needle's data starts, counted from the start of its record, for versions 2 and 3
/// with a non-empty body: the header, then the u32 data length.
pub const DATA_OFFSET: u64 = HEADER_SIZE as u64 + 4;

/// Bytes of the CRC32-C in the tail.
pub const CHECKSUM_SIZE: usize = 4;

/// Bytes of the append timestamp that version 3 adds to the tail.
pub const TIMESTAMP_SIZE: usize = 8;

/// Records start at multiples of this many bytes (the `.idx` counts offsets in these units).
pub const ALIGNMENT: u64 = 8;

/// Flag: the data is compressed (gzip or zstd; tell them apart by their magic bytes).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag: a name (u8 length + bytes) follows the flags.
pub const FLAG_HAS_NAME: u8 = 0x02;
/// Flag: a MIME type (u8 length + bytes) follows.
pub const FLAG_HAS_MIME: u8 = 0x04;
/// Flag: a 5-byte last-modified time in seconds follows.
pub const FLAG_HAS_LAST_MODIFIED: u8 = 0x08;
/// Flag: a 2-byte TTL follows.
pub const FLAG_HAS_TTL: u8 = 0x10;
/// Flag: pairs (u16 length + JSON bytes) follow.
pub const FLAG_HAS_PAIRS: u8 = 0x20;
/// Flag: the data is a chunk manifest, not file content.
pub const FLAG_CHUNK_MANIFEST: u8 = 0x80;

const LEGACY_CRC_OFFSET: u32 = 0xa282_ead8;

/// The fixed part at the start of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Random cookie that a reader's file id must repeat.
    pub cookie: u32,
    /// Needle key (the `id` of the record).
    pub key: u64,
    /// Bytes of body between the header and the tail.
    pub size: u32,
}

impl Header {
    /// Reads a header from the first [`HEADER_SIZE`] bytes of `bytes`.
    ///
    /// # Errors
    /// [`Error::CorruptNeedle`] when fewer than [`HEADER_SIZE`] bytes are given.
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let mut r = Reader::new(bytes);
        let header = Header { cookie: r.u32("cookie")?, key: r.u64("key")?, size: r.u32("size")? };
        Ok(header)
    }
}

/// Bytes of tail (CRC, then the append time for version 3) after a body.
///
/// # Errors
/// [`Error::CorruptNeedle`] for a version other than 1, 2 or 3.
pub fn tail_len(version: u8) -> Result<usize> {
    match version {
        1 | 2 => Ok(CHECKSUM_SIZE),
        3 => Ok(CHECKSUM_SIZE + TIMESTAMP_SIZE),
        v => Err(Error::CorruptNeedle(format!("unknown needle version {v}"))),
    }
}

/// Total bytes a record with a body of `size` bytes takes in `.dat`, padding included.
///
/// Versions other than 1 to 3 are counted as version 3 (the longest tail); callers check the
/// version when they open a volume.
pub fn record_len(size: u32, version: u8) -> u64 {
    let tail = tail_len(version).unwrap_or(CHECKSUM_SIZE + TIMESTAMP_SIZE) as u64;
    let unpadded = HEADER_SIZE as u64 + u64::from(size) + tail;
    // Padding is 1..=8 bytes, never 0: an aligned record still gets a full 8.
    unpadded + (ALIGNMENT - unpadded % ALIGNMENT)
}

/// The legacy stored form of a CRC that older SeaweedFS versions wrote.
pub fn legacy_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(LEGACY_CRC_OFFSET)
}

/// Whether `stored` is the CRC32-C of `data`, in the plain or the legacy stored form.
pub fn crc_matches(data: &[u8], stored: u32) -> bool {
    let crc = crc32c::crc32c(data);
    stored == crc || stored == legacy_crc(crc)
}

/// A borrowed view of one parsed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needle<'a> {
    /// The record's header.
    pub header: Header,
    /// The data (possibly compressed, see [`Needle::is_compressed`]).
    pub data: &'a [u8],
    /// The flags byte (0 for version 1 and for empty bodies).
    pub flags: u8,
    /// The stored name, when [`FLAG_HAS_NAME`] is set.
    pub name: Option<&'a [u8]>,
    /// The stored MIME type, when [`FLAG_HAS_MIME`] is set.
    pub mime: Option<&'a [u8]>,
    /// Last-modified time in seconds since the epoch, when [`FLAG_HAS_LAST_MODIFIED`] is set.
    pub last_modified: Option<u64>,
    /// The TTL as stored (count, unit), when [`FLAG_HAS_TTL`] is set.
    pub ttl: Option<[u8; 2]>,
    /// The pairs JSON, when [`FLAG_HAS_PAIRS`] is set.
    pub pairs: Option<&'a [u8]>,
    /// The CRC from the tail, as stored.
    pub checksum: u32,
    /// Append time in nanoseconds (version 3 only).
    pub append_at_ns: Option<u64>,
}

impl<'a> Needle<'a> {
    /// Parses a record that starts at `record[0]`. Padding after the tail may be present
    /// or not; nothing after the tail is looked at.
    ///
    /// # Errors
    /// [`Error::CorruptNeedle`] when a length runs past the buffer or past the body, the
    /// body has bytes that no field accounts for, or `version` is not 1, 2 or 3.
    pub fn parse(record: &'a [u8], version: u8) -> Result<Needle<'a>> {
        let tail_len = tail_len(version)?;
        let header = Header::parse(record)?;
        let body_len = usize::try_from(header.size).map_err(|_| {
            Error::CorruptNeedle(format!("body size {} does not fit in memory", header.size))
        })?;
        let rest = record.get(HEADER_SIZE..).unwrap_or_default();
        let (body, rest) = split(rest, body_len, "body")?;
        let (tail, _padding) = split(rest, tail_len, "tail")?;

        let mut needle = Needle {
            header,
            data: &[],
            flags: 0,
            name: None,
            mime: None,
            last_modified: None,
            ttl: None,
            pairs: None,
            checksum: 0,
            append_at_ns: None,
        };
        if version == 1 {
            needle.data = body;
        } else if !body.is_empty() {
            needle.parse_body(body)?;
        }
        let mut t = Reader::new(tail);
        needle.checksum = t.u32("checksum")?;
        if version == 3 {
            needle.append_at_ns = Some(t.u64("append time")?);
        }
        Ok(needle)
    }

    fn parse_body(&mut self, body: &'a [u8]) -> Result<()> {
        let mut r = Reader::new(body);
        let data_size = r.u32("data size")?;
        self.data = r.bytes(u64::from(data_size), "data")?;
        self.flags = r.u8("flags")?;
        if self.flags & FLAG_HAS_NAME != 0 {
            let len = r.u8("name length")?;
            self.name = Some(r.bytes(u64::from(len), "name")?);
        }
        if self.flags & FLAG_HAS_MIME != 0 {
            let len = r.u8("mime length")?;
            self.mime = Some(r.bytes(u64::from(len), "mime")?);
        }
        if self.flags & FLAG_HAS_LAST_MODIFIED != 0 {
            let raw = r.array::<5>("last modified")?;
            self.last_modified = Some(raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
        }
        if self.flags & FLAG_HAS_TTL != 0 {
            self.ttl = Some(r.array("ttl")?);
        }
        if self.flags & FLAG_HAS_PAIRS != 0 {
            let len = r.u16("pairs length")?;
            self.pairs = Some(r.bytes(u64::from(len), "pairs")?);
        }
        // Bytes no flag accounts for mean this reader does not understand the record; guessing
        // which bytes are data would be worse than falling back to the volume server.
        if r.remaining() != 0 {
            return Err(Error::CorruptNeedle(format!(
                "needle {:#x}: {} body bytes after the last field",
                self.header.key,
                r.remaining()
            )));
        }
        Ok(())
    }

    /// Checks the stored CRC against the data, accepting the legacy stored form too.
    ///
    /// # Errors
    /// [`Error::CrcMismatch`] when neither form matches.
    pub fn verify_crc(&self) -> Result<()> {
        if crc_matches(self.data, self.checksum) {
            Ok(())
        } else {
            Err(Error::CrcMismatch {
                key: self.header.key,
                stored: self.checksum,
                computed: crc32c::crc32c(self.data),
            })
        }
    }

    /// Whether the data is stored compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Whether the data is a chunk manifest rather than file content.
    pub fn is_chunk_manifest(&self) -> bool {
        self.flags & FLAG_CHUNK_MANIFEST != 0
    }
}

fn split<'b>(bytes: &'b [u8], len: usize, what: &str) -> Result<(&'b [u8], &'b [u8])> {
    if len > bytes.len() {
        return Err(Error::CorruptNeedle(format!(
            "{what} needs {len} bytes, only {} left",
            bytes.len()
        )));
    }
    Ok(bytes.split_at(len))
}

/// A bounds-checked big-endian cursor: every read says what it was for when it runs short.
struct Reader<'b> {
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn bytes(&mut self, len: u64, what: &str) -> Result<&'b [u8]> {
        let short = || {
            Error::CorruptNeedle(format!("{what} needs {len} bytes, only {} left", self.rest.len()))
        };
        let len = usize::try_from(len).map_err(|_| short())?;
        let (taken, rest) = split(self.rest, len, what)?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a record the way the format describes it, for versions 2 and 3. Only for
    /// shapes a real cluster cannot be made to write (version 2, TTL, pairs, corruption);
    /// the cluster tests in `volume` parse what `weed` itself wrote.
    fn record(version: u8, key: u64, data: &[u8], flags: u8, extra: &[u8], crc: u32) -> Vec<u8> {
        let mut body = Vec::new();
        if !data.is_empty() || flags != 0 {
            body.extend_from_slice(&(data.len() as u32).to_be_bytes());
            body.extend_from_slice(data);
            body.push(flags);
            body.extend_from_slice(extra);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.to_be_bytes());
        if version == 3 {
            out.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        }
        let total = record_len(body.len() as u32, version) as usize;
        out.resize(total, 0xee);
        out
    }

    #[test]
    fn record_len_pads_one_to_eight_bytes() {
        // v3: 16 + size + 12; size 4 makes 32, already aligned, so 8 bytes of padding follow.
        assert_eq!(record_len(4, 3), 40);
        assert_eq!(record_len(0, 3), 32);
        assert_eq!(record_len(18, 3), 48);
        assert_eq!(record_len(0, 2), 24);
        assert_eq!(record_len(4, 2), 32);
        for size in 0..64u32 {
            for v in 1..=3u8 {
                let len = record_len(size, v);
                let unpadded = 16 + u64::from(size) + tail_len(v).expect("valid version") as u64;
                assert_eq!(len % 8, 0);
                assert!((1..=8).contains(&(len - unpadded)), "size {size} v{v}");
            }
        }
    }

    #[test]
    fn parses_every_optional_field() {
        let data = b"hello world";
        let flags =
            FLAG_HAS_NAME | FLAG_HAS_MIME | FLAG_HAS_LAST_MODIFIED | FLAG_HAS_TTL | FLAG_HAS_PAIRS;
        let mut extra = vec![5];
        extra.extend_from_slice(b"a.txt");
        extra.push(10);
        extra.extend_from_slice(b"text/plain");
        extra.extend_from_slice(&[0x00, 0x6b, 0x08, 0x0a, 0x28]);
        extra.extend_from_slice(&[3, 4]);
        extra.extend_from_slice(&7u16.to_be_bytes());
        extra.extend_from_slice(b"{\"a\":1}");
        for version in [2, 3] {
            let rec = record(version, 9, data, flags, &extra, crc32c::crc32c(data));
            let n = Needle::parse(&rec, version).expect("well-formed record");
            assert_eq!(n.header.key, 9);
            assert_eq!(n.header.cookie, 0x1234_5678);
            assert_eq!(n.data, data);
            assert_eq!(n.name, Some(&b"a.txt"[..]));
            assert_eq!(n.mime, Some(&b"text/plain"[..]));
            assert_eq!(n.last_modified, Some(0x0000_6b08_0a28));
            assert_eq!(n.ttl, Some([3, 4]));
            assert_eq!(n.pairs, Some(&b"{\"a\":1}"[..]));
            assert_eq!(n.append_at_ns, (version == 3).then_some(0x0102_0304_0506_0708));
            assert!(!n.is_compressed() && !n.is_chunk_manifest());
            n.verify_crc().expect("crc of the data");
        }
    }

    #[test]
    fn flags_helpers() {
        let rec =
            record(3, 1, b"x", FLAG_COMPRESSED | FLAG_CHUNK_MANIFEST, &[], crc32c::crc32c(b"x"));
        let n = Needle::parse(&rec, 3).expect("well-formed record");
        assert!(n.is_compressed() && n.is_chunk_manifest());
    }

    #[test]
    fn version_1_body_is_all_data() {
        let mut rec = record(2, 1, b"", 0, &[], 0);
        rec.truncate(16);
        rec[12..16].copy_from_slice(&3u32.to_be_bytes());
        rec.extend_from_slice(b"abc");
        rec.extend_from_slice(&crc32c::crc32c(b"abc").to_be_bytes());
        let n = Needle::parse(&rec, 1).expect("version 1 record");
        assert_eq!(n.data, b"abc");
        n.verify_crc().expect("crc");
    }

    #[test]
    fn legacy_crc_is_accepted_and_wrong_crc_is_not() {
        let data = b"legacy needle";
        let crc = crc32c::crc32c(data);
        // Spelled as the format notes state it, to check the rotation against that text.
        #[allow(clippy::manual_rotate)]
        let legacy = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(legacy_crc(crc), legacy);
        assert!(crc_matches(data, crc));
        assert!(crc_matches(data, legacy));
        assert!(!crc_matches(data, crc ^ 1));
        let rec = record(3, 1, data, 0, &[], legacy);
        Needle::parse(&rec, 3).expect("record").verify_crc().expect("legacy form accepted");
        let rec = record(3, 1, data, 0, &[], crc.wrapping_add(1));
        let err = Needle::parse(&rec, 3).expect("record").verify_crc().expect_err("wrong crc");
        assert!(
            matches!(err, Error::CrcMismatch { stored, computed, .. } if stored == crc.wrapping_add(1) && computed == crc)
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = b"truncate me";
        let rec = record(3, 1, data, FLAG_HAS_NAME, &[3, b'a', b'b', b'c'], crc32c::crc32c(data));
        let tail_end = HEADER_SIZE + Header::parse(&rec).expect("header").size as usize + 12;
        for cut in 0..tail_end {
            let err = Needle::parse(&rec[..cut], 3).expect_err("truncated record");
            assert!(matches!(err, Error::CorruptNeedle(_)), "cut at {cut}: {err}");
        }
        Needle::parse(&rec[..tail_end], 3).expect("padding is optional");
    }

    #[test]
    fn lengths_past_the_body_are_errors() {
        let data = b"0123456789";
        let good = record(2, 1, data, FLAG_HAS_NAME, &[2, b'n', b'm'], crc32c::crc32c(data));
        let corrupt = |at: usize, bytes: &[u8]| {
            let mut rec = good.clone();
            rec[at..at + bytes.len()].copy_from_slice(bytes);
            Needle::parse(&rec, 2).expect_err("corrupt length")
        };
        // A huge body size, a huge data size, and a data size just one past the body.
        assert!(matches!(corrupt(12, &u32::MAX.to_be_bytes()), Error::CorruptNeedle(_)));
        assert!(matches!(corrupt(16, &u32::MAX.to_be_bytes()), Error::CorruptNeedle(_)));
        assert!(matches!(corrupt(16, &14u32.to_be_bytes()), Error::CorruptNeedle(_)));
        // A name longer than what is left of the body (it would reach into the tail).
        assert!(matches!(corrupt(16 + 4 + 10 + 1, &[9]), Error::CorruptNeedle(_)));
        // A flag announcing a field that is not there.
        assert!(matches!(
            corrupt(16 + 4 + 10, &[FLAG_HAS_NAME | FLAG_HAS_PAIRS]),
            Error::CorruptNeedle(_)
        ));
        // Body bytes that no flag accounts for.
        assert!(matches!(corrupt(16 + 4 + 10, &[0]), Error::CorruptNeedle(_)));
        assert!(matches!(Needle::parse(&good, 4), Err(Error::CorruptNeedle(_))));
    }

    #[test]
    fn empty_body_has_no_data() {
        let rec = record(3, 7, b"", 0, &[], 0);
        let n = Needle::parse(&rec, 3).expect("empty needle");
        assert_eq!(n.header.size, 0);
        assert!(n.data.is_empty());
        n.verify_crc().expect("crc32c of nothing is 0");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), version in 0u8..5) {
            if let Ok(n) = Needle::parse(&bytes, version) {
                prop_assert!(n.data.len() <= bytes.len());
            }
        }

        #[test]
        fn small_sizes_in_valid_headers_never_panic(
            size in 0u32..100,
            data_size in any::<u32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..150),
        ) {
            let mut rec = vec![0u8; 12];
            rec.extend_from_slice(&size.to_be_bytes());
            rec.extend_from_slice(&data_size.to_be_bytes());
            rec.extend_from_slice(&tail);
            let _ = Needle::parse(&rec, 3);
        }
    }
}
