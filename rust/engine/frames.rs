//! What the async connections ([`super::conn`]) and the blocking lane ([`super::wire`])
//! share: the handshake messages and READ frames, checked against the sidecar's grants.

use super::types::Failure;
use crate::proto::{self, FrameHeader, Hello, HelloAck, Kind, ReadRequest};

/// The HELLO asking for `want_inflight` requests per connection over tcp.
pub(super) fn hello(want_inflight: u32) -> [u8; proto::HELLO_LEN] {
    Hello { version: proto::VERSION, transports: proto::TRANSPORT_TCP, max_inflight: want_inflight }
        .encode()
}

/// Parses a HELLO_ACK and refuses grants this engine cannot work with.
pub(super) fn accept_ack(raw: &[u8; proto::HELLO_ACK_LEN]) -> Result<HelloAck, Failure> {
    let ack = HelloAck::decode(raw).map_err(|e| Failure::Protocol(e.to_string()))?;
    if ack.version != proto::VERSION {
        return Err(Failure::Protocol(format!(
            "sidecar answered version {} to version {}",
            ack.version,
            proto::VERSION
        )));
    }
    if ack.transport != proto::TRANSPORT_TCP {
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

/// Writes the header of `frame` (a blank header and a body that fits `max_frame`, as
/// [`read_body`] makes, or a bare header for a PING).
pub(super) fn stamp(frame: &mut [u8], kind: Kind, request_id: u32) {
    // Bodies were checked against `max_frame`, a u32, so the cast is lossless.
    let body_len = (frame.len() - proto::FRAME_HEADER_LEN) as u32;
    let header = FrameHeader { kind, flags: 0, request_id, body_len };
    frame[..proto::FRAME_HEADER_LEN].copy_from_slice(&header.encode());
}
