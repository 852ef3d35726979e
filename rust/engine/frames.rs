//! What the async connections ([`super::conn`]) and the blocking lane ([`super::wire`])
//! share: the handshake messages and READ frames, checked against the sidecar's grants.

use super::types::Failure;
use crate::proto::{self, FrameHeader, Hello, HelloAck, Kind, ReadRequest};

/// Where a READ frame holds `dest_slot` (then `dest_offset`): after the frame header and
/// volume, cookie, key, offset, length and flags (`docs/protocol.md`).
const DEST_SLOT_AT: usize = proto::FRAME_HEADER_LEN + 32;

/// The HELLO asking for `want_inflight` requests per connection over `transports` (the
/// protocol's bits, as [`offer`] chooses them).
pub(super) fn hello(want_inflight: u32, transports: u16) -> [u8; proto::HELLO_LEN] {
    Hello { version: proto::VERSION, transports, max_inflight: want_inflight }.encode()
}

/// Parses a HELLO_ACK and refuses grants this engine cannot work with, or a transport it
/// did not offer (`offered`: the HELLO's bits).
pub(super) fn accept_ack(
    raw: &[u8; proto::HELLO_ACK_LEN],
    offered: u16,
) -> Result<HelloAck, Failure> {
    let ack = HelloAck::decode(raw).map_err(|e| Failure::Protocol(e.to_string()))?;
    if ack.version != proto::VERSION {
        return Err(Failure::Protocol(format!(
            "sidecar answered version {} to version {}",
            ack.version,
            proto::VERSION
        )));
    }
    let known = [proto::TRANSPORT_TCP, proto::TRANSPORT_VERBS].contains(&ack.transport);
    if !known || ack.transport & offered == 0 {
        return Err(Failure::Protocol(format!("sidecar chose transport {}", ack.transport)));
    }
    if ack.max_inflight == 0 {
        return Err(Failure::Protocol("sidecar granted no in-flight requests".into()));
    }
    Ok(ack)
}

/// Requests one connection may have in flight: what was granted, at most what was asked.
pub(super) fn window(ack: &HelloAck, want_inflight: u32) -> usize {
    ack.max_inflight.min(want_inflight.max(1)) as usize
}

/// Largest answer body a connection accepts: the granted `max_read` plus the DATA header
/// (with room to spare, as the protocol allows).
pub(super) fn max_answer(ack: &HelloAck) -> u32 {
    ack.max_read.saturating_add(64)
}

/// A READ frame for `req`, its header still blank (see [`stamp`]), or why the sidecar would
/// refuse it: a range above its `max_read`, a body above its `max_frame`.
pub(super) fn read_body(req: &ReadRequest, ack: &HelloAck) -> Result<Vec<u8>, Failure> {
    if !req.whole() && req.length > ack.max_read {
        return Err(Failure::BadOp(format!(
            "read of {} bytes exceeds the sidecar's max_read {}",
            req.length, ack.max_read
        )));
    }
    let mut frame = vec![0u8; proto::FRAME_HEADER_LEN];
    req.encode_into(&mut frame).map_err(|e| Failure::BadOp(e.to_string()))?;
    let body = frame.len() - proto::FRAME_HEADER_LEN;
    if body as u64 > u64::from(ack.max_frame) {
        return Err(Failure::BadOp("request larger than the sidecar's max_frame".into()));
    }
    Ok(frame)
}

/// The transport bits a HELLO offers: tcp alone without a queue pair to offer; verbs with
/// one, plus tcp unless the engine was told to use verbs only (`tcp_ok` false).
pub(super) fn offer(verbs: bool, tcp_ok: bool) -> u16 {
    match (verbs, tcp_ok) {
        (true, true) => proto::TRANSPORT_TCP | proto::TRANSPORT_VERBS,
        (true, false) => proto::TRANSPORT_VERBS,
        (false, _) => proto::TRANSPORT_TCP,
    }
}

/// What a failed read of the HELLO_ACK means: a sidecar that closes a verbs-only handshake
/// has no verbs or could not connect its queue pair, which is a reason to read another
/// way, not a sign that the sidecar is down.
pub(super) fn ack_failure(offered: u16, e: &std::io::Error) -> Failure {
    if offered == proto::TRANSPORT_VERBS && e.kind() == std::io::ErrorKind::UnexpectedEof {
        Failure::Verbs(format!(
            "the sidecar closed a verbs-only handshake (no verbs there, or its queue pair \
             could not connect; see its log): {e}"
        ))
    } else {
        Failure::Connect(format!("HELLO_ACK: {e}"))
    }
}

/// Writes the header of `frame` (a blank header and a body that fits `max_frame`, as
/// [`read_body`] makes, or a bare header for a PING).
pub(super) fn stamp(frame: &mut [u8], kind: Kind, request_id: u32) {
    // Bodies were checked against `max_frame`, a u32, so the cast is lossless.
    let body_len = (frame.len() - proto::FRAME_HEADER_LEN) as u32;
    let header = FrameHeader { kind, flags: 0, request_id, body_len, echo: 0 };
    frame[..proto::FRAME_HEADER_LEN].copy_from_slice(&header.encode());
}

/// The echo the answer to READ `frame` (header and body, as [`read_body`] makes it) must
/// carry; see [`proto::read_echo`].
pub(super) fn echo_of(frame: &[u8]) -> u32 {
    proto::read_echo(frame.get(proto::FRAME_HEADER_LEN..).unwrap_or_default())
}

/// Names the receive slot of a READ frame made by [`read_body`] (offset 0 in the slot).
pub(super) fn set_dest(frame: &mut [u8], slot: u32) {
    if let Some(field) = frame.get_mut(DEST_SLOT_AT..DEST_SLOT_AT + 8) {
        field[..4].copy_from_slice(&slot.to_le_bytes());
        field[4..].copy_from_slice(&0u32.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_dest_writes_the_fields_the_sidecar_decodes() {
        let req =
            ReadRequest { volume: 3, key: 9, length: 10, jwt: "t".into(), ..Default::default() };
        let ack = HelloAck {
            version: proto::VERSION,
            transport: proto::TRANSPORT_VERBS,
            max_inflight: 8,
            max_frame: 1 << 16,
            max_read: 1 << 20,
            server_id: 1,
        };
        let mut frame = read_body(&req, &ack).expect("frame");
        set_dest(&mut frame, 0x0102_0304);
        let got = ReadRequest::decode(&frame[proto::FRAME_HEADER_LEN..]).expect("decodes");
        assert_eq!(got, ReadRequest { dest_slot: 0x0102_0304, dest_offset: 0, ..req });
    }

    #[test]
    fn both_kinds_of_connection_offer_and_read_a_refusal_the_same_way() {
        use std::io::{Error, ErrorKind};
        assert_eq!(offer(false, true), proto::TRANSPORT_TCP);
        assert_eq!(offer(false, false), proto::TRANSPORT_TCP, "no queue pair: tcp only");
        assert_eq!(offer(true, true), proto::TRANSPORT_TCP | proto::TRANSPORT_VERBS);
        assert_eq!(offer(true, false), proto::TRANSPORT_VERBS);
        let eof = Error::from(ErrorKind::UnexpectedEof);
        assert!(matches!(ack_failure(proto::TRANSPORT_VERBS, &eof), Failure::Verbs(_)));
        let both = proto::TRANSPORT_TCP | proto::TRANSPORT_VERBS;
        assert!(matches!(ack_failure(both, &eof), Failure::Connect(_)));
        let reset = Error::from(ErrorKind::ConnectionReset);
        assert!(matches!(ack_failure(proto::TRANSPORT_VERBS, &reset), Failure::Connect(_)));
    }

    #[test]
    fn an_ack_must_choose_an_offered_transport() {
        let ack = |transport| {
            HelloAck {
                version: proto::VERSION,
                transport,
                max_inflight: 8,
                max_frame: 1 << 16,
                max_read: 1 << 20,
                server_id: 1,
            }
            .encode()
        };
        let both = proto::TRANSPORT_TCP | proto::TRANSPORT_VERBS;
        assert!(accept_ack(&ack(proto::TRANSPORT_TCP), proto::TRANSPORT_TCP).is_ok());
        assert!(accept_ack(&ack(proto::TRANSPORT_VERBS), proto::TRANSPORT_TCP).is_err());
        assert!(accept_ack(&ack(proto::TRANSPORT_VERBS), both).is_ok());
        assert!(accept_ack(&ack(proto::TRANSPORT_TCP), both).is_ok());
        assert!(accept_ack(&ack(both), both).is_err(), "one transport, not a set");
    }
}
