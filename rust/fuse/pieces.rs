//! Large READs handed to the Python side go as several smaller READs, whose replies are
//! put back together into the one reply the kernel waits for.
//!
//! Why: libfuse writes each reply with one `writev` to the message socket, and a unix
//! datagram keeps all but 68 KiB of itself in one contiguous kernel buffer. A 1 MiB reply
//! needs an order-8 allocation, which fails on fragmented memory; libfuse then logs the
//! error and drops the reply, and the reader waits for ever. Pieces of at most 64 KiB need
//! order 2 at most. (Requests the other way are sent by the loop itself, which retries.)
//!
//! A piece's `unique` has the top bit set: the kernel counts its ids up from 0 in steps of
//! 2 and never gets there, and the ids stay even, as replies to interrupts are odd.

use std::collections::HashMap;
use std::os::fd::RawFd;

use super::abi::{out_header, InHeader, ReadIn, IN_HEADER, OUT_HEADER};

/// Where `fuse_read_in.offset` and `.size` sit in a READ request.
const READ_OFFSET_AT: usize = IN_HEADER + 8;
const READ_SIZE_AT: usize = IN_HEADER + 16;

/// Marks the ids of pieces.
const PIECE_BIT: u64 = 1 << 63;

/// What a reply to a piece led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a piece's reply: route it as usual.
    NotMine,
    /// Other pieces of its READ are still out.
    Waiting,
    /// The READ is complete: write `reply` to `dev`.
    Done { dev: RawFd, reply: Vec<u8> },
}

#[derive(Debug)]
struct Split {
    dev: RawFd,
    unique: u64,
    /// Bytes asked of each piece.
    sizes: Vec<u32>,
    /// Each piece's data, or its (negative) error, once answered.
    answers: Vec<Option<Result<Vec<u8>, i32>>>,
    left: usize,
}

impl Split {
    /// The kernel's reply: the first error in file order fails the whole READ (a short
    /// read would make the kernel shrink the file), else the data up to the first piece
    /// that came back short (the end of the file).
    fn reply(self) -> Vec<u8> {
        let mut data = Vec::new();
        for (answer, &size) in self.answers.into_iter().zip(&self.sizes) {
            match answer {
                Some(Ok(bytes)) => {
                    let short = bytes.len() < size as usize;
                    data.extend_from_slice(&bytes[..bytes.len().min(size as usize)]);
                    if short {
                        break;
                    }
                }
                Some(Err(error)) => return out_header(OUT_HEADER, error, self.unique).to_vec(),
                None => return out_header(OUT_HEADER, -libc::EIO, self.unique).to_vec(),
            }
        }
        let mut reply = out_header(OUT_HEADER + data.len(), 0, self.unique).to_vec();
        reply.extend_from_slice(&data);
        reply
    }
}

/// The READs out in pieces.
#[derive(Debug, Default)]
pub struct Pieces {
    next: u64,
    /// A piece's id -> its READ's id and its index.
    piece_of: HashMap<u64, (u64, usize)>,
    splits: HashMap<u64, Split>,
}

impl Pieces {
    /// The requests to send in place of READ `req` (from `dev`), in pieces of at most
    /// `piece` bytes; `None` when it is small enough to go whole.
    pub fn split(
        &mut self,
        dev: RawFd,
        h: InHeader,
        req: &[u8],
        piece: u32,
    ) -> Option<Vec<(u64, Vec<u8>)>> {
        let r = ReadIn::parse(req)?;
        let piece = piece.max(1);
        if r.size <= piece || req.len() < READ_SIZE_AT + 4 {
            return None;
        }
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let mut done = 0u32;
        while done < r.size {
            let size = piece.min(r.size - done);
            self.next += 1;
            let id = PIECE_BIT | (self.next << 1);
            let mut sub = req.to_vec();
            sub[8..16].copy_from_slice(&id.to_ne_bytes());
            let at = r.offset.saturating_add(u64::from(done));
            sub[READ_OFFSET_AT..READ_OFFSET_AT + 8].copy_from_slice(&at.to_ne_bytes());
            sub[READ_SIZE_AT..READ_SIZE_AT + 4].copy_from_slice(&size.to_ne_bytes());
            self.piece_of.insert(id, (h.unique, sizes.len()));
            sizes.push(size);
            out.push((id, sub));
            done += size;
        }
        let n = sizes.len();
        self.splits.insert(
            h.unique,
            Split { dev, unique: h.unique, sizes, answers: vec![None; n], left: n },
        );
        Some(out)
    }

    /// Takes the reply `msg` (one whole reply) to piece `unique`.
    pub fn answer(&mut self, unique: u64, msg: &[u8]) -> Outcome {
        let error =
            msg.get(4..8).and_then(|b| b.try_into().ok()).map_or(-libc::EIO, i32::from_ne_bytes);
        let result = if error == 0 {
            Ok(msg.get(OUT_HEADER..).unwrap_or_default().to_vec())
        } else {
            Err(error)
        };
        self.settle(unique, result)
    }

    /// Piece `unique` could not be sent (or answered): it fails with `error` (negative).
    pub fn fail(&mut self, unique: u64, error: i32) -> Outcome {
        self.settle(unique, Err(error))
    }

    fn settle(&mut self, unique: u64, result: Result<Vec<u8>, i32>) -> Outcome {
        let Some((parent, index)) = self.piece_of.remove(&unique) else {
            return Outcome::NotMine;
        };
        let Some(split) = self.splits.get_mut(&parent) else {
            return Outcome::Waiting;
        };
        if let Some(slot) = split.answers.get_mut(index) {
            if slot.is_none() {
                split.left -= 1;
            }
            *slot = Some(result);
        }
        if split.left > 0 {
            return Outcome::Waiting;
        }
        match self.splits.remove(&parent) {
            Some(split) => Outcome::Done { dev: split.dev, reply: split.reply() },
            None => Outcome::Waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::abi::{opcode, request};

    fn read(unique: u64, offset: u64, size: u32) -> Vec<u8> {
        let mut body = [0u8; 40];
        body[0..8].copy_from_slice(&5u64.to_ne_bytes());
        body[8..16].copy_from_slice(&offset.to_ne_bytes());
        body[16..20].copy_from_slice(&size.to_ne_bytes());
        request(opcode::READ, unique, &body)
    }

    fn header(msg: &[u8]) -> InHeader {
        InHeader::parse(msg).expect("a request")
    }

    fn reply(unique: u64, data: &[u8]) -> Vec<u8> {
        let mut m = out_header(OUT_HEADER + data.len(), 0, unique).to_vec();
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn pieces_cover_the_read_with_even_ids_the_kernel_never_uses() {
        let mut p = Pieces::default();
        assert!(p.split(3, header(&read(2, 0, 100)), &read(2, 0, 100), 100).is_none());
        let req = read(4, 10, 250);
        let subs = p.split(3, header(&req), &req, 100).expect("split");
        let got: Vec<(u64, u32)> = subs
            .iter()
            .map(|(id, m)| {
                assert_eq!(header(m).unique, *id);
                assert!(id & PIECE_BIT != 0 && id & 1 == 0, "id {id:#x}");
                assert_eq!(m[..8], req[..8], "length and opcode kept");
                assert_eq!(m[16..READ_OFFSET_AT], req[16..READ_OFFSET_AT], "node, ids, fh kept");
                let r = ReadIn::parse(m).expect("a READ");
                (r.offset, r.size)
            })
            .collect();
        assert_eq!(got, [(10, 100), (110, 100), (210, 50)]);
    }

    #[test]
    fn replies_join_in_file_order_whatever_order_they_come_in() {
        let mut p = Pieces::default();
        let req = read(6, 0, 250);
        let ids: Vec<u64> =
            p.split(9, header(&req), &req, 100).expect("split").into_iter().map(|s| s.0).collect();
        assert_eq!(p.answer(ids[2], &reply(ids[2], &[3; 50])), Outcome::Waiting);
        assert_eq!(p.answer(ids[0], &reply(ids[0], &[1; 100])), Outcome::Waiting);
        assert_eq!(p.answer(12345, &reply(12345, b"x")), Outcome::NotMine);
        let Outcome::Done { dev, reply: joined } = p.answer(ids[1], &reply(ids[1], &[2; 100]))
        else {
            panic!("complete");
        };
        let want: Vec<u8> = [[1u8; 100].as_slice(), &[2; 100], &[3; 50]].concat();
        assert_eq!((dev, joined), (9, reply(6, &want)));
        assert_eq!(p.answer(ids[1], &reply(ids[1], b"again")), Outcome::NotMine);
    }

    #[test]
    fn a_short_piece_ends_the_data_and_any_error_fails_the_read() {
        let mut p = Pieces::default();
        let req = read(8, 0, 300);
        let ids: Vec<u64> =
            p.split(1, header(&req), &req, 100).expect("split").into_iter().map(|s| s.0).collect();
        p.answer(ids[0], &reply(ids[0], &[1; 100]));
        p.answer(ids[1], &reply(ids[1], &[2; 30]));
        // Past the end: libfuse's handler may still return bytes; they are not the file's.
        let want: Vec<u8> = [[1u8; 100].as_slice(), &[2; 30]].concat();
        let done = p.answer(ids[2], &reply(ids[2], &[9; 5]));
        assert_eq!(done, Outcome::Done { dev: 1, reply: reply(8, &want) });
        assert_eq!(p.fail(0, 0), Outcome::NotMine);
        let req = read(10, 0, 300);
        let ids: Vec<u64> =
            p.split(1, header(&req), &req, 100).expect("split").into_iter().map(|s| s.0).collect();
        p.answer(ids[0], &reply(ids[0], &[1; 100]));
        assert_eq!(p.fail(ids[2], -libc::EIO), Outcome::Waiting);
        let failed = out_header(OUT_HEADER, -libc::EINTR, 10).to_vec();
        let err = out_header(OUT_HEADER, -libc::EINTR, ids[1]);
        assert_eq!(p.answer(ids[1], &err), Outcome::Done { dev: 1, reply: failed });
    }
}
