//! The few parts of the FUSE kernel protocol (`linux/fuse.h`) the native read loop looks
//! into: the request and reply headers, READ's argument, INTERRUPT's target. Everything
//! else passes through unparsed. All fields are in the host's byte order.

/// `struct fuse_in_header`: len, opcode, unique, nodeid, uid, gid, pid, padding.
pub const IN_HEADER: usize = 40;
/// `struct fuse_out_header`: len, error, unique.
pub const OUT_HEADER: usize = 16;

/// Opcodes the loop treats apart from the rest.
pub mod opcode {
    /// Answered here for a name the Python side offered (`opens.rs`).
    pub const LOOKUP: u32 = 1;
    /// No reply.
    pub const FORGET: u32 = 2;
    /// Answered here for an inode the Python side offered (`opens.rs`).
    pub const OPEN: u32 = 14;
    /// Answered from the engine when the handle is registered.
    pub const READ: u32 = 15;
    /// Answered here for a handle the loop opened.
    pub const RELEASE: u32 = 18;
    /// Answered at once when the handle is registered (a registered handle writes nothing).
    pub const FLUSH: u32 = 25;
    /// Its reply sets `max_write`, which bounds every later request.
    pub const INIT: u32 = 26;
    /// Answered here: pyfuse3 has none, libfuse refuses it.
    pub const IOCTL: u32 = 39;
    /// No reply; names the request it interrupts.
    pub const INTERRUPT: u32 = 36;
    /// No reply (answers a retrieve notification).
    pub const NOTIFY_REPLY: u32 = 41;
    /// No reply.
    pub const BATCH_FORGET: u32 = 42;
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A request's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Opcode.
    pub opcode: u32,
    /// The id its reply must carry.
    pub unique: u64,
    /// The inode it is about.
    pub nodeid: u64,
}

impl InHeader {
    /// The header of `msg`, one whole request as read from the device; `None` when it is
    /// shorter than a header or its length field disagrees with what was read.
    pub fn parse(msg: &[u8]) -> Option<InHeader> {
        let len = u32_at(msg, 0)? as usize;
        if msg.len() < IN_HEADER || len != msg.len() {
            return None;
        }
        Some(InHeader {
            opcode: u32_at(msg, 4)?,
            unique: u64_at(msg, 8)?,
            nodeid: u64_at(msg, 16)?,
        })
    }

    /// Whether the kernel expects a reply to this request.
    pub fn wants_reply(&self) -> bool {
        !matches!(
            self.opcode,
            opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT | opcode::NOTIFY_REPLY
        )
    }
}

/// `struct fuse_read_in`'s first fields (the rest do not change what is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIn {
    /// The handle `open` returned.
    pub fh: u64,
    /// File offset.
    pub offset: u64,
    /// Bytes asked for.
    pub size: u32,
}

impl ReadIn {
    /// READ's argument from a whole READ request.
    pub fn parse(msg: &[u8]) -> Option<ReadIn> {
        let body = msg.get(IN_HEADER..)?;
        Some(ReadIn { fh: u64_at(body, 0)?, offset: u64_at(body, 8)?, size: u32_at(body, 16)? })
    }
}

/// The handle a FLUSH request names (`struct fuse_flush_in`'s first field).
pub fn flush_fh(msg: &[u8]) -> Option<u64> {
    u64_at(msg, IN_HEADER)
}

/// The handle a RELEASE request names (`struct fuse_release_in`'s first field).
pub fn release_fh(msg: &[u8]) -> Option<u64> {
    u64_at(msg, IN_HEADER)
}

/// The open flags of an OPEN request (`struct fuse_open_in`'s first field).
pub fn open_flags(msg: &[u8]) -> Option<u32> {
    u32_at(msg, IN_HEADER)
}

/// The name a LOOKUP request asks for (NUL-terminated after the header), without its NUL.
pub fn lookup_name(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(IN_HEADER..)?;
    let end = body.iter().position(|&b| b == 0)?;
    Some(&body[..end])
}

/// An inode's attributes as `struct fuse_attr` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Access, modification and change times, in nanoseconds since the epoch.
    pub atime_ns: u64,
    /// (See `atime_ns`.)
    pub mtime_ns: u64,
    /// (See `atime_ns`.)
    pub ctime_ns: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (devices only).
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// `struct fuse_entry_out` (since protocol 7.9): nodeid, generation, entry_valid,
/// attr_valid (u64 each), their nanoseconds (u32 each), then `struct fuse_attr`.
pub const ENTRY_OUT: usize = 40 + 88;

/// The body of a LOOKUP reply naming `inode` with `attr`, which the kernel may keep for
/// `entry_valid` (the name) and `attr_valid` (the attributes).
pub fn entry_out(
    inode: u64,
    attr: &Attr,
    entry_valid: std::time::Duration,
    attr_valid: std::time::Duration,
) -> [u8; ENTRY_OUT] {
    fn put(b: &mut [u8], at: &mut usize, v: &[u8]) {
        b[*at..*at + v.len()].copy_from_slice(v);
        *at += v.len();
    }
    const NS: u64 = 1_000_000_000;
    let mut b = [0u8; ENTRY_OUT];
    let at = &mut 0;
    put(&mut b, at, &inode.to_ne_bytes());
    put(&mut b, at, &0u64.to_ne_bytes()); // generation: numbers are never reused live
    put(&mut b, at, &entry_valid.as_secs().to_ne_bytes());
    put(&mut b, at, &attr_valid.as_secs().to_ne_bytes());
    put(&mut b, at, &entry_valid.subsec_nanos().to_ne_bytes());
    put(&mut b, at, &attr_valid.subsec_nanos().to_ne_bytes());
    put(&mut b, at, &inode.to_ne_bytes());
    put(&mut b, at, &attr.size.to_ne_bytes());
    put(&mut b, at, &attr.blocks.to_ne_bytes());
    for t in [attr.atime_ns, attr.mtime_ns, attr.ctime_ns] {
        put(&mut b, at, &(t / NS).to_ne_bytes());
    }
    for t in [attr.atime_ns, attr.mtime_ns, attr.ctime_ns] {
        put(&mut b, at, &((t % NS) as u32).to_ne_bytes());
    }
    for v in [attr.mode, attr.nlink, attr.uid, attr.gid, attr.rdev, attr.blksize, 0] {
        put(&mut b, at, &v.to_ne_bytes());
    }
    b
}

/// The protocol minor of a successful INIT reply (`fuse_init_out`'s second field).
pub fn init_minor(reply: &[u8]) -> Option<u32> {
    if u32_at(reply, 4)? != 0 {
        return None;
    }
    u32_at(reply, OUT_HEADER + 4)
}

/// `FOPEN_KEEP_CACHE` in `fuse_open_out.open_flags`: the kernel keeps the file's pages.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;

/// A successful OPEN reply: the header and `struct fuse_open_out` (fh, open_flags,
/// padding).
pub fn open_reply(unique: u64, fh: u64, open_flags: u32) -> [u8; OUT_HEADER + 16] {
    let mut r = [0u8; OUT_HEADER + 16];
    r[..OUT_HEADER].copy_from_slice(&out_header(OUT_HEADER + 16, 0, unique));
    r[OUT_HEADER..OUT_HEADER + 8].copy_from_slice(&fh.to_ne_bytes());
    r[OUT_HEADER + 8..OUT_HEADER + 12].copy_from_slice(&open_flags.to_ne_bytes());
    r
}

/// The `unique` of the request an INTERRUPT request names.
pub fn interrupt_target(msg: &[u8]) -> Option<u64> {
    u64_at(msg, IN_HEADER)
}

/// Where `max_write` sits in an INIT reply: after the reply header, `fuse_init_out`'s
/// major, minor, max_readahead, flags (u32 each), max_background, congestion_threshold
/// (u16 each).
const INIT_MAX_WRITE: usize = OUT_HEADER + 20;

/// The `max_write` of a successful INIT reply.
pub fn init_max_write(reply: &[u8]) -> Option<u32> {
    if u32_at(reply, 4)? != 0 {
        return None; // an error reply carries no arguments
    }
    u32_at(reply, INIT_MAX_WRITE)
}

/// `FUSE_MAX_PAGES` in `fuse_init_out.flags`: `max_pages` is set.
const FUSE_MAX_PAGES: u32 = 1 << 22;
const INIT_FLAGS: usize = OUT_HEADER + 12;
const INIT_MAX_PAGES: usize = OUT_HEADER + 28;

/// The `max_pages` of a successful INIT reply that sets it.
pub fn init_max_pages(reply: &[u8]) -> Option<u16> {
    if u32_at(reply, 4)? != 0 || u32_at(reply, INIT_FLAGS)? & FUSE_MAX_PAGES == 0 {
        return None;
    }
    Some(u16::from_ne_bytes(reply.get(INIT_MAX_PAGES..INIT_MAX_PAGES + 2)?.try_into().ok()?))
}

/// Rewrites the `max_pages` of an INIT reply (one `init_max_pages` could read).
pub fn set_init_max_pages(reply: &mut [u8], value: u16) {
    if let Some(field) = reply.get_mut(INIT_MAX_PAGES..INIT_MAX_PAGES + 2) {
        field.copy_from_slice(&value.to_ne_bytes());
    }
}

/// Rewrites the `max_write` of an INIT reply (one `init_max_write` could read).
pub fn set_init_max_write(reply: &mut [u8], value: u32) {
    if let Some(field) = reply.get_mut(INIT_MAX_WRITE..INIT_MAX_WRITE + 4) {
        field.copy_from_slice(&value.to_ne_bytes());
    }
}

/// A reply header for a reply of `len` bytes in all.
pub fn out_header(len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    // A reply is at most a READ's size plus this header, far below 4 GiB.
    h[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// The `unique` of a whole reply (0 for a notification); `None` when `msg` is not one
/// reply (too short, or its length field disagrees).
pub fn reply_unique(msg: &[u8]) -> Option<u64> {
    let len = u32_at(msg, 0)? as usize;
    if msg.len() < OUT_HEADER || len != msg.len() {
        return None;
    }
    u64_at(msg, 8)
}

/// A request as the kernel sends it (its ids are even; odd ones are interrupts').
#[cfg(test)]
pub(super) fn request(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; IN_HEADER];
    m[0..4].copy_from_slice(&((IN_HEADER + body.len()) as u32).to_ne_bytes());
    m[4..8].copy_from_slice(&opcode.to_ne_bytes());
    m[8..16].copy_from_slice(&unique.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// A request about inode `nodeid`.
#[cfg(test)]
pub(super) fn request_on(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut m = request(opcode, unique, body);
    m[16..24].copy_from_slice(&nodeid.to_ne_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_read_arguments_parse() {
        let mut body = Vec::new();
        body.extend_from_slice(&7u64.to_ne_bytes());
        body.extend_from_slice(&(5u64 << 30).to_ne_bytes());
        body.extend_from_slice(&131072u32.to_ne_bytes());
        body.extend_from_slice(&[0u8; 20]);
        let msg = request(opcode::READ, 99, &body);
        let h = InHeader::parse(&msg).expect("parses");
        assert_eq!(h, InHeader { opcode: opcode::READ, unique: 99, nodeid: 0 });
        assert!(h.wants_reply());
        let r = ReadIn::parse(&msg).expect("read_in");
        assert_eq!(r, ReadIn { fh: 7, offset: 5 << 30, size: 131072 });
    }

    #[test]
    fn truncated_or_inconsistent_messages_are_refused() {
        let msg = request(opcode::READ, 1, &[0u8; 8]);
        assert!(InHeader::parse(&msg[..30]).is_none());
        assert!(InHeader::parse(&msg[..msg.len() - 1]).is_none(), "length field disagrees");
        assert!(ReadIn::parse(&msg).is_none(), "READ without its argument");
        assert!(reply_unique(&[0u8; 8]).is_none());
        let mut reply = out_header(20, 0, 5).to_vec();
        assert!(reply_unique(&reply).is_none(), "says 20 bytes, has 16");
        reply.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(reply_unique(&reply), Some(5));
    }

    #[test]
    fn init_max_write_is_read_and_rewritten() {
        let mut reply = out_header(OUT_HEADER + 64, 0, 1).to_vec();
        reply.resize(OUT_HEADER + 64, 0);
        reply[INIT_MAX_WRITE..INIT_MAX_WRITE + 4].copy_from_slice(&(4u32 << 20).to_ne_bytes());
        assert_eq!(init_max_write(&reply), Some(4 << 20));
        set_init_max_write(&mut reply, 1 << 20);
        assert_eq!(init_max_write(&reply), Some(1 << 20));
        assert_eq!(init_max_pages(&reply), None, "FUSE_MAX_PAGES not set");
        reply[INIT_FLAGS..INIT_FLAGS + 4].copy_from_slice(&FUSE_MAX_PAGES.to_ne_bytes());
        reply[INIT_MAX_PAGES..INIT_MAX_PAGES + 2].copy_from_slice(&256u16.to_ne_bytes());
        assert_eq!(init_max_pages(&reply), Some(256));
        set_init_max_pages(&mut reply, 32);
        assert_eq!(init_max_pages(&reply), Some(32));
        let failed = out_header(OUT_HEADER, -libc::EPROTO, 1);
        assert_eq!(init_max_write(&failed), None);
        assert_eq!(init_max_pages(&failed), None);
        assert_eq!(init_max_write(&reply[..30]), None, "too short");
    }

    #[test]
    fn lookup_names_and_entry_replies_are_laid_out_as_the_kernel_reads_them() {
        let msg = request(opcode::LOOKUP, 2, b"f00001.bin\0");
        assert_eq!(lookup_name(&msg), Some(&b"f00001.bin"[..]));
        assert_eq!(lookup_name(&request(opcode::LOOKUP, 2, b"no-nul")), None);
        let attr = Attr {
            size: 65536,
            blocks: 128,
            atime_ns: 5_000_000_001,
            mtime_ns: 7_000_000_002,
            ctime_ns: 9_000_000_003,
            mode: 0o100644,
            nlink: 1,
            uid: 1000,
            gid: 100,
            rdev: 0,
            blksize: 1 << 20,
        };
        let valid = std::time::Duration::from_millis(60_500);
        let b = entry_out(42, &attr, valid, valid);
        let u64s = |at: usize| u64_at(&b, at).expect("in range");
        let u32s = |at: usize| u32_at(&b, at).expect("in range");
        assert_eq!((u64s(0), u64s(8), u64s(16), u64s(24)), (42, 0, 60, 60));
        assert_eq!((u32s(32), u32s(36)), (500_000_000, 500_000_000));
        assert_eq!((u64s(40), u64s(48), u64s(56)), (42, 65536, 128), "ino, size, blocks");
        assert_eq!((u64s(64), u64s(72), u64s(80)), (5, 7, 9), "seconds");
        assert_eq!((u32s(88), u32s(92), u32s(96)), (1, 2, 3), "nanoseconds");
        assert_eq!((u32s(100), u32s(104), u32s(108), u32s(112)), (0o100644, 1, 1000, 100));
        assert_eq!((u32s(116), u32s(120), u32s(124)), (0, 1 << 20, 0), "rdev, blksize, flags");
        let mut init = out_header(OUT_HEADER + 64, 0, 1).to_vec();
        init.resize(OUT_HEADER + 64, 0);
        init[OUT_HEADER + 4..OUT_HEADER + 8].copy_from_slice(&31u32.to_ne_bytes());
        assert_eq!(init_minor(&init), Some(31));
        assert_eq!(init_minor(&out_header(OUT_HEADER, -libc::EPROTO, 1)), None);
    }

    #[test]
    fn requests_without_replies_are_known() {
        for op in [opcode::FORGET, opcode::BATCH_FORGET, opcode::INTERRUPT, opcode::NOTIFY_REPLY] {
            let h = InHeader::parse(&request(op, 3, &[0u8; 16])).expect("parses");
            assert!(!h.wants_reply(), "opcode {op}");
        }
        let msg = request(opcode::INTERRUPT, 4, &77u64.to_ne_bytes());
        assert_eq!(interrupt_target(&msg), Some(77));
    }
}
