//! The requests in flight on one async connection, and their one state machine.
//!
//! An entry goes `Queued` (registered, waiting for the writer and a permit) -> `Sent` ->
//! (`Writing`, ranged reads only, while the reader task fills the destination) -> removed.
//! Its in-flight permit is released only when it is removed, so a request the sidecar still
//! owes an answer for keeps counting against the granted `max_inflight` even after its batch
//! gave up on it. The fields are private: batches (`conn.rs`), the writer and reader tasks
//! (`tasks.rs`) and the verbs receive path (`verbs/rx.rs`) move entries only through the
//! named transitions below, each made under the connection's table lock.

use std::collections::HashMap;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{self, Asked, Delivered, Verdict};
use super::dest::Dest;
use super::types::{Failure, WholeNeedle};
use super::verbs::matcher::Matcher;
use super::verbs::SlotLease;
use crate::proto::DataHeader;

/// Where the answer to a request goes.
#[derive(Debug)]
pub(super) enum Recipient {
    /// Straight into the caller's buffer.
    Range(Dest),
    /// Into a fresh `Vec` (whole-needle reads).
    Whole,
    /// A PONG; no payload.
    Pong,
}

/// What a batch receives for one of its requests.
#[derive(Debug)]
pub(super) struct Done {
    /// The batch's own index for the request.
    pub(super) tag: usize,
    /// The outcome.
    pub(super) result: Result<Delivered, Failure>,
}

/// Where to report an entry's outcome.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) tag: usize,
    pub(super) tx: UnboundedSender<Done>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    Sent,
    /// The reader task is filling the entry's destination right now.
    Writing,
}

#[derive(Debug)]
struct Entry {
    stage: Stage,
    /// `None` once its batch gave up: the payload is read into scratch space and dropped.
    recipient: Option<Recipient>,
    reply: Option<Reply>,
    /// Which batch registered it, so a cancel never hits a recycled request id.
    owner: u64,
    /// What its answer must echo ([`crate::proto::read_echo`] of the READ sent).
    echo: u32,
    permit: Option<OwnedSemaphorePermit>,
}

/// What the writer does with a queued request it got a permit for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Send {
    /// Its batch gave up meanwhile: drop the frame (and the permit and slot).
    Skip,
    /// Send it; a verbs READ carries this receive slot.
    Go { slot: Option<u32> },
}

/// What the reader does with a DATA payload (tcp).
#[derive(Debug)]
pub(super) enum Claim {
    /// Nobody waits for it: read it into scratch space.
    Skip,
    /// Read it into scratch space, then fail the entry with this.
    Refuse(Failure),
    /// Read it into a fresh `Vec` and [`finish`](Table::finish) the entry with it.
    Whole,
    /// Read it into this destination (the entry is now `Writing`), then finish the entry
    /// with [`answer::range_outcome`].
    Write(Dest),
}

/// The pending requests of one connection and whether it is still usable.
#[derive(Debug, Default)]
pub(super) struct Table {
    entries: HashMap<u32, Entry>,
    next_id: u32,
    /// Set once the connection is unusable; new requests fail with it.
    closed: Option<Failure>,
    /// Verbs connections: the receive slot of each sent READ until its answer completes
    /// (empty on tcp).
    verbs: Matcher<SlotLease>,
}

impl Table {
    /// Registers a request whose answer must carry `echo`; its id, or why the connection
    /// takes no more.
    pub(super) fn register(
        &mut self,
        recipient: Recipient,
        reply: Reply,
        owner: u64,
        echo: u32,
    ) -> Result<u32, Failure> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        // Skip ids still in use (only possible after 2^32 requests on one connection).
        let mut id = self.next_id;
        while self.entries.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let entry = Entry {
            stage: Stage::Queued,
            recipient: Some(recipient),
            reply: Some(reply),
            owner,
            echo,
            permit: None,
        };
        self.entries.insert(id, entry);
        Ok(id)
    }

    /// Takes back a request that never reached the writer.
    pub(super) fn withdraw(&mut self, id: u32) {
        self.entries.remove(&id);
    }

    /// Queued -> Sent, with its permit and, for a verbs READ, its receive slot.
    pub(super) fn mark_sent(
        &mut self,
        id: u32,
        permit: OwnedSemaphorePermit,
        lease: Option<SlotLease>,
    ) -> Send {
        let Some(entry) = self.entries.get_mut(&id).filter(|e| e.stage == Stage::Queued) else {
            return Send::Skip;
        };
        entry.stage = Stage::Sent;
        entry.permit = Some(permit);
        let Some(lease) = lease else { return Send::Go { slot: None } };
        let slot = lease.index();
        if self.verbs.assign(id, lease).is_err() {
            // Cannot happen: ids of pending entries are unique, and a slot is assigned
            // only while its entry is pending. Refuse rather than share a slot.
            self.finish(id, Err(Failure::protocol("request id reused")));
            return Send::Skip;
        }
        Send::Go { slot: Some(slot) }
    }

    /// A batch takes its entry back: after this returns `false`, no task can reach the
    /// entry's destination. `true` means the reader is writing into it right now; the batch
    /// must then kill the connection and wait for its reader before releasing the buffer.
    pub(super) fn cancel(&mut self, id: u32, owner: u64) -> bool {
        let Some(entry) = self.entries.get_mut(&id).filter(|e| e.owner == owner) else {
            return false; // answered (or failed) already
        };
        match entry.stage {
            Stage::Queued => {
                self.entries.remove(&id);
                false
            }
            Stage::Sent => {
                // Keep the entry (and its permit) until the sidecar answers, so the
                // in-flight count stays honest; just forget where the bytes were to go.
                entry.recipient = None;
                entry.reply = None;
                false
            }
            Stage::Writing => true,
        }
    }

    /// A PONG arrived for `id`.
    ///
    /// # Errors
    /// A PONG answering a READ.
    pub(super) fn pong(&mut self, id: u32) -> Result<(), Failure> {
        match self.entries.get(&id).map(|e| &e.recipient) {
            Some(Some(Recipient::Pong)) => self.finish(id, Ok(Delivered::Pong)),
            Some(None) => self.withdraw(id),
            Some(Some(_)) => return Err(Failure::protocol("PONG answering a READ")),
            None => {} // a PING whose batch gave up and whose entry is gone
        }
        Ok(())
    }

    /// What the entry `id` awaits from a DATA answer echoing `echo`, and its destination
    /// for a range. `None` when nobody waits (no such entry, or its batch gave up: then it
    /// is removed).
    ///
    /// # Errors
    /// The entry is a PING, or the answer echoes another READ.
    fn awaiting(&mut self, id: u32, echo: u32) -> Result<Option<(Asked, Option<Dest>)>, Failure> {
        let Some(entry) = self.entries.get(&id) else { return Ok(None) };
        if !matches!(entry.recipient, Some(Recipient::Pong)) {
            answer::check_echo(id, echo, entry.echo)?;
        }
        Ok(Some(match &entry.recipient {
            None => {
                self.withdraw(id);
                return Ok(None);
            }
            Some(Recipient::Pong) => return Err(Failure::protocol("DATA answering a PING")),
            Some(Recipient::Whole) => (Asked::Whole, None),
            Some(Recipient::Range(dest)) => (Asked::Range(dest.len()), Some(*dest)),
        }))
    }

    /// A DATA answer of `payload` bytes arrived for `id` (tcp): what to do with the bytes.
    /// An entry whose batch gave up is removed here.
    ///
    /// # Errors
    /// The answer breaks the protocol (DATA for a PING, more bytes than asked).
    pub(super) fn claim(
        &mut self,
        id: u32,
        echo: u32,
        data: &DataHeader,
        payload: u32,
    ) -> Result<Claim, Failure> {
        let Some((asked, dest)) = self.awaiting(id, echo)? else { return Ok(Claim::Skip) };
        Ok(match (answer::judge(data, payload as usize, asked)?, dest) {
            (Verdict::Refuse(why), _) => Claim::Refuse(why),
            (Verdict::Write, Some(dest)) => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.stage = Stage::Writing;
                }
                Claim::Write(dest)
            }
            // `judge` says Write only for a range, which has a destination.
            (Verdict::Whole | Verdict::Write, _) => Claim::Whole,
        })
    }

    /// A DATA answer for `id`, echoing `echo`, whose bytes are `bytes` (verbs: already in the receive
    /// slot): settles the entry, copying a range into its destination under this lock.
    /// `refused` turns a refusal into the failure to report. `delivered` is told the byte
    /// count of a delivered answer before its batch hears of it, so a caller that reads the
    /// stats once its read returned finds the bytes already counted.
    ///
    /// # Errors
    /// The answer breaks the protocol (DATA for a PING, more bytes than asked).
    pub(super) fn settle_copied(
        &mut self,
        id: u32,
        echo: u32,
        data: &DataHeader,
        bytes: &[u8],
        refused: impl FnOnce(Failure) -> Failure,
        delivered: impl FnOnce(usize),
    ) -> Result<(), Failure> {
        let Some((asked, dest)) = self.awaiting(id, echo)? else { return Ok(()) };
        let result = match (answer::judge(data, bytes.len(), asked)?, dest) {
            (Verdict::Refuse(why), _) => Err(refused(why)),
            (Verdict::Write, Some(dest)) => {
                // SAFETY: the entry holding `dest` is in the table with a Range recipient
                // and the table lock is held (`&mut self`): a batch releases a destination
                // only under this lock (it removes the entry or drops its recipient), so
                // the caller's buffer is still borrowed and nothing else touches these bytes
                // until the lock is dropped. `judge` checked `bytes.len() <= dest.len()`.
                let target = unsafe { dest.slice() };
                target[..bytes.len()].copy_from_slice(bytes);
                answer::range_outcome(bytes.len(), dest.len())
            }
            (Verdict::Whole | Verdict::Write, _) => Ok(Delivered::Whole(WholeNeedle {
                data: bytes.to_vec(),
                crc: data.crc,
                needle_flags: data.needle_flags,
            })),
        };
        if result.is_ok() {
            delivered(bytes.len());
        }
        self.finish(id, result);
        Ok(())
    }

    /// Removes an entry and reports `result` to its batch, if the batch still listens.
    pub(super) fn finish(&mut self, id: u32, result: Result<Delivered, Failure>) {
        if let Some(Entry { reply: Some(reply), .. }) = self.entries.remove(&id) {
            // The batch may have returned already; then nobody needs the answer.
            let _ = reply.tx.send(Done { tag: reply.tag, result });
        }
    }

    /// Marks the connection unusable (the first reason given sticks).
    pub(super) fn close(&mut self, why: Failure) {
        self.closed.get_or_insert(why);
    }

    /// Whether no request is waiting for its answer.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the connection is still usable.
    pub(super) fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Fails every entry with the reason the connection closed (or "connection closed").
    pub(super) fn fail_all(&mut self) {
        let why =
            self.closed.get_or_insert_with(|| Failure::Lost("connection closed".into())).clone();
        for (_, entry) in self.entries.drain() {
            if let Some(reply) = entry.reply {
                let _ = reply.tx.send(Done { tag: reply.tag, result: Err(why.clone()) });
            }
        }
    }

    /// The receive slots of sent verbs READs.
    pub(super) fn verbs(&mut self) -> &mut Matcher<SlotLease> {
        &mut self.verbs
    }
}
