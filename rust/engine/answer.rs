//! The one decision on a DATA answer, made the same way by all three readers of answers:
//! the lane (`lane.rs`), the async reader task (`tasks.rs`) and the verbs receive path
//! (`verbs/rx.rs`). Whether a payload may be written into the caller's buffer, and what a
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

/// The payload length of a DATA frame that carries its bytes (tcp), from its frame header.
///
/// # Errors
/// A body shorter than the DATA header.
pub(super) fn payload_len(header: &FrameHeader) -> Result<u32, Failure> {
    header
        .body_len
        .checked_sub(proto::DATA_HEADER_LEN as u32)
        .ok_or_else(|| Failure::protocol("DATA body shorter than its header"))
}

/// Checks that an OK answer carries the byte count its header announces.
///
/// # Errors
/// The two differ.
pub(super) fn check_len(data: &DataHeader, payload: u32) -> Result<(), Failure> {
    if data.status == Status::Ok && data.data_len != payload {
        return Err(Failure::protocol(format!(
            "DATA says {} bytes but carries {payload}",
            data.data_len
        )));
    }
    Ok(())
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

    #[test]
    fn lengths_are_checked() {
        let ok = header(Status::Ok, 0);
        assert!(check_len(&ok, 10).is_ok());
        assert!(check_len(&ok, 9).is_err());
        assert!(check_len(&header(Status::NotFound, 0), 0).is_ok());
    }
}
