//! The wire protocol (`docs/protocol.md`): handshake messages, frame headers and bodies,
//! encoded and decoded from byte slices so both the sidecar and the engine (and their
//! tests) share one definition. Little-endian throughout.

use crate::error::{Error, Result};

/// Protocol version this crate speaks: 2 added the READ echo in DATA frames
/// ([`FrameHeader::echo`]).
pub const VERSION: u16 = 2;
/// The oldest client version a sidecar still serves (it ignores the echo).
pub const MIN_VERSION: u16 = 1;
/// Handshake magic.
pub const MAGIC: [u8; 4] = *b"SWRD";
/// Size of `HELLO` and `HELLO_ACK` on the wire.
pub const HELLO_LEN: usize = 16;
/// Size of `HELLO_ACK` on the wire.
pub const HELLO_ACK_LEN: usize = 32;
/// Frame header size.
pub const FRAME_HEADER_LEN: usize = 16;
/// Fixed part of a READ body (before the JWT).
pub const READ_FIXED_LEN: usize = 42;
/// DATA body size before the payload.
pub const DATA_HEADER_LEN: usize = 16;
/// Transport bit: tcp.
pub const TRANSPORT_TCP: u16 = 1;
/// Transport bit: verbs.
pub const TRANSPORT_VERBS: u16 = 2;
/// READ flag: return the whole needle data.
pub const READ_WHOLE: u32 = 1;

fn bad(what: &str) -> Error {
    Error::Protocol(what.to_owned())
}

/// Reads little-endian integers off the front of a slice, failing on short input with
/// "`what` truncated". Shared by every fixed-layout message of the wire protocol.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf`; `what` names the message in errors.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Protocol(format!("{} truncated", self.what)));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Client's opening message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// Transport bits the client can use.
    pub transports: u16,
    /// In-flight requests the client would like per connection.
    pub max_inflight: u32,
}

impl Hello {
    /// Wire form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.transports.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_inflight.to_le_bytes());
        b
    }
    /// Parses the wire form.
    ///
    /// # Errors
    /// [`Error::Protocol`] on a wrong magic or short input.
    pub fn decode(b: &[u8]) -> Result<Hello> {
        let mut c = Cursor::new(b, "message");
        if c.array::<4>()? != MAGIC {
            return Err(bad("not a seaweed-rdma client (bad magic)"));
        }
        Ok(Hello { version: c.u16()?, transports: c.u16()?, max_inflight: c.u32()? })
    }
}

/// Server's answer to [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    /// Version spoken; 0 means "unsupported version, closing".
    pub version: u16,
    /// The transport chosen (one bit).
    pub transport: u16,
    /// In-flight requests granted per connection.
    pub max_inflight: u32,
    /// Largest request frame body accepted.
    pub max_frame: u32,
    /// Largest read served.
    pub max_read: u32,
    /// Random id of this sidecar process (changes on restart).
    pub server_id: u64,
}

impl HelloAck {
    /// Wire form.
    pub fn encode(&self) -> [u8; HELLO_ACK_LEN] {
        let mut b = [0u8; HELLO_ACK_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.transport.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_inflight.to_le_bytes());
        b[12..16].copy_from_slice(&self.max_frame.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_read.to_le_bytes());
        b[20..28].copy_from_slice(&self.server_id.to_le_bytes());
        b
    }
    /// Parses the wire form.
    ///
    /// # Errors
    /// [`Error::Protocol`] on a wrong magic or short input.
    pub fn decode(b: &[u8]) -> Result<HelloAck> {
        let mut c = Cursor::new(b, "message");
        if c.array::<4>()? != MAGIC {
            return Err(bad("not a seaweed-rdma sidecar (bad magic)"));
        }
        Ok(HelloAck {
            version: c.u16()?,
            transport: c.u16()?,
            max_inflight: c.u32()?,
            max_frame: c.u32()?,
            max_read: c.u32()?,
            server_id: c.u64()?,
        })
    }
}

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client asks for needle bytes.
    Read = 1,
    /// Server answers a READ.
    Data = 2,
    /// Liveness probe.
    Ping = 3,
    /// Answer to PING.
    Pong = 4,
}

impl TryFrom<u8> for Kind {
    type Error = Error;
    fn try_from(v: u8) -> Result<Kind> {
        Ok(match v {
            1 => Kind::Read,
            2 => Kind::Data,
            3 => Kind::Ping,
            4 => Kind::Pong,
            _ => return Err(Error::Protocol(format!("unknown frame kind {v}"))),
        })
    }
}

/// The 16-byte header in front of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the body is.
    pub kind: Kind,
    /// Kind-specific flags (none defined yet).
    pub flags: u8,
    /// Matches an answer to its request.
    pub request_id: u32,
    /// Length of the body that follows.
    pub body_len: u32,
    /// DATA frames: [`read_echo`] of the READ they answer, so a client can tell an answer
    /// meant for another request that carried the same id (two processes or threads
    /// writing on one connection) from its own. Zero on other frames.
    pub echo: u32,
}

impl FrameHeader {
    /// Wire form.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0] = self.kind as u8;
        b[1] = self.flags;
        b[4..8].copy_from_slice(&self.request_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.echo.to_le_bytes());
        b
    }
    /// Parses a header and checks `body_len` against `max_body`.
    ///
    /// # Errors
    /// [`Error::Protocol`] on an unknown kind or an oversized body.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN], max_body: u32) -> Result<FrameHeader> {
        let mut c = Cursor::new(b, "message");
        let kind = Kind::try_from(c.u8()?)?;
        let flags = c.u8()?;
        let _reserved = c.u16()?;
        let request_id = c.u32()?;
        let body_len = c.u32()?;
        let echo = c.u32()?;
        if body_len > max_body {
            return Err(Error::Protocol(format!(
                "frame body of {body_len} bytes exceeds the limit of {max_body}"
            )));
        }
        Ok(FrameHeader { kind, flags, request_id, body_len, echo })
    }
}

/// Bytes of a READ body that say what is asked (volume, cookie, key, offset, length,
/// flags): what [`read_echo`] covers. The destination and the JWT follow them.
pub const READ_ASK_LEN: usize = 32;

/// The echo a DATA frame carries for the READ whose body is `body`: the CRC32-C of its
/// first [`READ_ASK_LEN`] bytes (of all of it, if shorter). Both ends compute it from the
/// same bytes, so it needs no decoding and covers a malformed READ as well.
pub fn read_echo(body: &[u8]) -> u32 {
    crc32c::crc32c(&body[..body.len().min(READ_ASK_LEN)])
}

/// A READ request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadRequest {
    /// Volume id.
    pub volume: u32,
    /// Needle cookie.
    pub cookie: u32,
    /// Needle key.
    pub key: u64,
    /// Offset in the needle's data.
    pub offset: u64,
    /// Bytes wanted (ignored with [`READ_WHOLE`]).
    pub length: u32,
    /// [`READ_WHOLE`] and future flags.
    pub flags: u32,
    /// Destination slot in the client's registered pool (verbs).
    pub dest_slot: u32,
    /// Offset inside that slot.
    pub dest_offset: u32,
    /// Read JWT, empty when none.
    pub jwt: String,
}

impl ReadRequest {
    /// Whether the whole needle data is wanted.
    pub fn whole(&self) -> bool {
        self.flags & READ_WHOLE != 0
    }

    /// Appends the body to `out`.
    ///
    /// # Errors
    /// [`Error::Protocol`] when the JWT is longer than 65535 bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let jwt_len = u16::try_from(self.jwt.len()).map_err(|_| bad("JWT too long"))?;
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.extend_from_slice(&self.cookie.to_le_bytes());
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.dest_slot.to_le_bytes());
        out.extend_from_slice(&self.dest_offset.to_le_bytes());
        out.extend_from_slice(&jwt_len.to_le_bytes());
        out.extend_from_slice(self.jwt.as_bytes());
        Ok(())
    }

    /// Parses a body.
    ///
    /// # Errors
    /// [`Error::Protocol`] on short input, trailing bytes or a JWT that is not UTF-8.
    pub fn decode(b: &[u8]) -> Result<ReadRequest> {
        let mut c = Cursor::new(b, "message");
        let mut r = ReadRequest {
            volume: c.u32()?,
            cookie: c.u32()?,
            key: c.u64()?,
            offset: c.u64()?,
            length: c.u32()?,
            flags: c.u32()?,
            dest_slot: c.u32()?,
            dest_offset: c.u32()?,
            jwt: String::new(),
        };
        let jwt_len = usize::from(c.u16()?);
        let jwt = c.take(jwt_len)?;
        if !c.buf.is_empty() {
            return Err(bad("trailing bytes after READ body"));
        }
        r.jwt = String::from_utf8(jwt.to_vec()).map_err(|_| bad("JWT is not UTF-8"))?;
        Ok(r)
    }
}

/// Status of a DATA answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Bytes follow.
    Ok = 0,
    /// No such needle, or another cookie.
    NotFound = 1,
    /// The needle is deleted.
    Deleted = 2,
    /// Malformed or out-of-limit request.
    BadRequest = 3,
    /// JWT missing or invalid.
    Unauthorized = 4,
    /// Server at a limit.
    Busy = 5,
    /// Anything else.
    Internal = 6,
}

impl TryFrom<u8> for Status {
    type Error = Error;
    fn try_from(v: u8) -> Result<Status> {
        Ok(match v {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Deleted,
            3 => Status::BadRequest,
            4 => Status::Unauthorized,
            5 => Status::Busy,
            6 => Status::Internal,
            _ => return Err(Error::Protocol(format!("unknown status {v}"))),
        })
    }
}

impl Status {
    /// Lower-case name for logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not_found",
            Status::Deleted => "deleted",
            Status::BadRequest => "bad_request",
            Status::Unauthorized => "unauthorized",
            Status::Busy => "busy",
            Status::Internal => "internal",
        }
    }
}

/// The fixed part of a DATA body; over tcp `data_len` payload bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Outcome.
    pub status: Status,
    /// The needle's flags byte.
    pub needle_flags: u8,
    /// Payload length.
    pub data_len: u32,
    /// The needle's full data size.
    pub needle_size: u32,
    /// The needle's stored CRC32-C.
    pub crc: u32,
}

impl DataHeader {
    /// An answer without data.
    pub fn error(status: Status) -> DataHeader {
        DataHeader { status, needle_flags: 0, data_len: 0, needle_size: 0, crc: 0 }
    }
    /// Wire form.
    pub fn encode(&self) -> [u8; DATA_HEADER_LEN] {
        let mut b = [0u8; DATA_HEADER_LEN];
        b[0] = self.status as u8;
        b[1] = self.needle_flags;
        b[4..8].copy_from_slice(&self.data_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.needle_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b
    }
    /// Parses the wire form.
    ///
    /// # Errors
    /// [`Error::Protocol`] on short input or an unknown status.
    pub fn decode(b: &[u8]) -> Result<DataHeader> {
        let mut c = Cursor::new(b, "message");
        let status = Status::try_from(c.u8()?)?;
        let needle_flags = c.u8()?;
        let _reserved = c.u16()?;
        Ok(DataHeader {
            status,
            needle_flags,
            data_len: c.u32()?,
            needle_size: c.u32()?,
            crc: c.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_roundtrip_and_bad_magic() {
        let h = Hello { version: VERSION, transports: TRANSPORT_TCP, max_inflight: 64 };
        assert_eq!(Hello::decode(&h.encode()).expect("decodes"), h);
        let mut wire = h.encode();
        wire[0] = b'X';
        assert!(Hello::decode(&wire).is_err());
        assert!(Hello::decode(&wire[..5]).is_err());
    }

    #[test]
    fn ack_roundtrip() {
        let a = HelloAck {
            version: VERSION,
            transport: TRANSPORT_TCP,
            max_inflight: 256,
            max_frame: 65536,
            max_read: 1 << 26,
            server_id: 42,
        };
        assert_eq!(HelloAck::decode(&a.encode()).expect("decodes"), a);
    }

    #[test]
    fn frame_header_limits() {
        let h = FrameHeader { kind: Kind::Read, flags: 0, request_id: 9, body_len: 100, echo: 0 };
        assert_eq!(FrameHeader::decode(&h.encode(), 100).expect("fits"), h);
        assert!(FrameHeader::decode(&h.encode(), 99).is_err());
        let mut wire = h.encode();
        wire[0] = 77;
        assert!(FrameHeader::decode(&wire, 100).is_err());
    }

    #[test]
    fn read_roundtrip_and_garbage() {
        let r = ReadRequest {
            volume: 3,
            cookie: 0x637037d6,
            key: 1,
            offset: 10,
            length: 4096,
            flags: READ_WHOLE,
            dest_slot: 2,
            dest_offset: 128,
            jwt: "a.b.c".into(),
        };
        let mut wire = Vec::new();
        r.encode_into(&mut wire).expect("encodes");
        assert_eq!(wire.len(), READ_FIXED_LEN + 5);
        assert_eq!(ReadRequest::decode(&wire).expect("decodes"), r);
        assert!(ReadRequest::decode(&wire[..wire.len() - 1]).is_err());
        let mut longer = wire.clone();
        longer.push(0);
        assert!(ReadRequest::decode(&longer).is_err());
        assert!(ReadRequest::decode(&[0xff; 7]).is_err());
    }

    #[test]
    fn data_header_roundtrip() {
        let d = DataHeader {
            status: Status::Ok,
            needle_flags: 1,
            data_len: 5,
            needle_size: 9,
            crc: 0xdead_beef,
        };
        assert_eq!(DataHeader::decode(&d.encode()).expect("decodes"), d);
        let mut wire = d.encode();
        wire[0] = 99;
        assert!(DataHeader::decode(&wire).is_err());
    }
}
