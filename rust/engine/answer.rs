//! The one decoder of DATA answers, called the same way by every reader of answers: the
//! lane (`lane.rs`, tcp and verbs), the async reader task (`tasks.rs`), polled batches
//! (`polled.rs`) and the verbs receive path (`verbs/rx.rs`). Those are drivers that move
//! bytes; the layout of the body ([`data_body`]), the DATA header ([`data_header`]), the
//! echo ([`check_echo`]) and what the answer means ([`judge`]) are decided here. Whether a payload may be written into the caller's buffer, and what a
//! short or refused answer means, is decided here and nowhere else.

use super::types::{Failure, WholeNeedle};
use crate::needle::FLAG_COMPRESSED;
use crate::proto::{self, DataHeader, FrameHeader, Status};

/// A delivered answer.
#[derive(Debug)]
pub(super) enum Delivered {
    /// That many bytes were written to the destination.
    Range(u32),
    /// The needle's whole data.
    Whole(WholeNeedle),
    /// The sidecar answered a PING.
    Pong,
}

/// What the request behind an answer asked for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Asked {
    /// A range of this many bytes, into the caller's buffer.
    Range(usize),
    /// The whole needle.
    Whole,
}

/// What to do with an answer's payload.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Do not use the bytes (skip them); the op fails with this.
    Refuse(Failure),
    /// Keep the bytes as the whole needle.
    Whole,
    /// Write the bytes into the destination.
    Write,
}

/// Decides on an answer of `payload` bytes with `data` as its header.
///
/// # Errors
/// A payload larger than the range asked for: the sidecar broke the protocol, and the
/// connection must close.
pub(super) fn judge(data: &DataHeader, payload: usize, asked: Asked) -> Result<Verdict, Failure> {
    if data.status != Status::Ok {
        return Ok(Verdict::Refuse(Failure::Status(data.status)));
    }
    match asked {
        Asked::Whole => Ok(Verdict::Whole),
        // A ranged read of a compressed needle would give the stored (compressed) bytes.
        Asked::Range(_) if data.needle_flags & FLAG_COMPRESSED != 0 => {
            Ok(Verdict::Refuse(Failure::Compressed))
        }
        Asked::Range(len) if payload > len => {
            Err(Failure::protocol(format!("{payload} bytes for a {len}-byte read")))
        }
        Asked::Range(_) => Ok(Verdict::Write),
    }
}

/// Checks that the answer to request `id` echoes the READ that was sent under that id
/// (`want`, [`proto::read_echo`] of its body). Anything else is an answer meant for a
/// request that another writer sent with the same id on this connection (a forked
/// process, a second owner of the socket): its bytes must reach nobody.
///
/// # Errors
/// [`Failure::Crossed`]: the connection must close.
pub(super) fn check_echo(id: u32, got: u32, want: u32) -> Result<(), Failure> {
    if got == want {
        return Ok(());
    }
    tracing::warn!(
        request_id = id,
        "engine: the answer to request {id} is for another READ (echo {got:#010x}, \
         expected {want:#010x}); closing the connection"
    );
    Err(Failure::Crossed(format!(
        "the answer to request {id} echoes another READ ({got:#010x}, not {want:#010x})"
    )))
}

/// The outcome of a ranged read that wrote `got` of the `want` bytes asked for.
pub(super) fn range_outcome(got: usize, want: usize) -> Result<Delivered, Failure> {
    // Both fit in u32: a read is at most `max_read` (u32) bytes.
    let (got, want) = (got as u32, want as u32);
    if got < want {
        Err(Failure::Short { got, want })
    } else {
        Ok(Delivered::Range(got))
    }
}

/// How a DATA frame's needle bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carried {
    /// In the frame, after the DATA header (tcp).
    Inline,
    /// RDMA-written into the READ's receive slot; the body is the DATA header alone (verbs).
    Written,
}

/// The first step of decoding a DATA frame, before its body is read: checks the body's
/// layout for how its bytes travel and returns how many payload bytes follow the DATA
/// header in the frame (0 for [`Carried::Written`]). Every reader of answers (the async
/// reader task, the lane, polled batches, the verbs receive path) calls this, then reads
/// the DATA header and calls [`data_header`].
///
/// # Errors
/// A body shorter than the DATA header, or a verbs body that is not exactly one.
pub(super) fn data_body(header: &FrameHeader, carried: Carried) -> Result<u32, Failure> {
    let len = proto::DATA_HEADER_LEN as u32;
    match carried {
        Carried::Inline => header
            .body_len
            .checked_sub(len)
            .ok_or_else(|| Failure::protocol("DATA body shorter than its header")),
        Carried::Written if header.body_len == len => Ok(0),
        Carried::Written => {
            Err(Failure::protocol(format!("verbs DATA with a {}-byte body", header.body_len)))
        }
    }
}

/// The second step: decodes the DATA header and checks that an inline OK answer carries
/// the byte count the header announces (`payload`, from [`data_body`]).
///
/// # Errors
/// A malformed header, or a count that differs.
pub(super) fn data_header(
    raw: &[u8],
    payload: u32,
    carried: Carried,
) -> Result<DataHeader, Failure> {
    let data = DataHeader::decode(raw).map_err(|e| Failure::protocol(e.to_string()))?;
    if carried == Carried::Inline && data.status == Status::Ok && data.data_len != payload {
        return Err(Failure::protocol(format!(
            "DATA says {} bytes but carries {payload}",
            data.data_len
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(status: Status, flags: u8) -> DataHeader {
        DataHeader { status, needle_flags: flags, data_len: 10, needle_size: 10, crc: 0 }
    }

    #[test]
    fn one_decision_for_every_answer() {
        let ok = header(Status::Ok, 0);
        assert!(matches!(judge(&ok, 10, Asked::Range(10)), Ok(Verdict::Write)));
        assert!(matches!(judge(&ok, 4, Asked::Range(10)), Ok(Verdict::Write)));
        assert!(matches!(judge(&ok, 11, Asked::Range(10)), Err(Failure::Protocol(_))));
        assert!(matches!(judge(&ok, 99, Asked::Whole), Ok(Verdict::Whole)));
        let packed = header(Status::Ok, FLAG_COMPRESSED);
        assert!(matches!(
            judge(&packed, 10, Asked::Range(10)),
            Ok(Verdict::Refuse(Failure::Compressed))
        ));
        assert!(matches!(judge(&packed, 10, Asked::Whole), Ok(Verdict::Whole)));
        let missing = header(Status::NotFound, 0);
        for asked in [Asked::Range(10), Asked::Whole] {
            assert!(matches!(
                judge(&missing, 0, asked),
                Ok(Verdict::Refuse(Failure::Status(Status::NotFound)))
            ));
        }
    }

    #[test]
    fn short_and_full_ranges() {
        assert!(matches!(range_outcome(10, 10), Ok(Delivered::Range(10))));
        assert_eq!(range_outcome(3, 10).err(), Some(Failure::Short { got: 3, want: 10 }));
    }

    #[test]
    fn an_answer_must_echo_its_own_read() {
        assert!(check_echo(3, 0xdead_beef, 0xdead_beef).is_ok());
        let crossed = check_echo(3, 1, 2).expect_err("crossed");
        assert_eq!(crossed.reason(), "crossed");
    }

    fn frame(body_len: u32) -> FrameHeader {
        FrameHeader { kind: proto::Kind::Data, flags: 0, request_id: 1, body_len, echo: 0 }
    }

    fn encoded(data: &DataHeader) -> Vec<u8> {
        data.encode().to_vec()
    }

    #[test]
    fn bodies_and_lengths_are_checked_for_each_carriage() {
        let len = proto::DATA_HEADER_LEN as u32;
        assert_eq!(data_body(&frame(len + 10), Carried::Inline).ok(), Some(10));
        assert!(data_body(&frame(len - 1), Carried::Inline).is_err());
        assert_eq!(data_body(&frame(len), Carried::Written).ok(), Some(0));
        assert!(data_body(&frame(len + 10), Carried::Written).is_err());
        let ok = header(Status::Ok, 0);
        assert!(data_header(&encoded(&ok), 10, Carried::Inline).is_ok());
        assert!(data_header(&encoded(&ok), 9, Carried::Inline).is_err());
        // Over verbs the bytes are in the slot: the frame carries none.
        assert!(data_header(&encoded(&ok), 0, Carried::Written).is_ok());
        let missing = header(Status::NotFound, 0);
        assert!(data_header(&encoded(&missing), 0, Carried::Inline).is_ok());
        assert!(data_header(&[0u8; 3], 0, Carried::Inline).is_err());
    }
}
