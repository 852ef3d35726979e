//! Completion matching for one verbs connection, free of any device: which READ owns which
//! receive slot, and when an answer is complete.
//!
//! An `OK` answer with bytes is complete only when both its DATA frame and the receive
//! completion whose immediate is its request id have arrived, in either order
//! (`docs/protocol.md`, "verbs"): the frame says how many bytes, the completion says they
//! have landed. Every other answer writes nothing, so its frame alone completes it. Until
//! then the slot stays here, whether or not anyone still waits for the answer: a READ whose
//! batch timed out keeps its slot retired, because the write may still land, and gets it
//! freed only when its answer does complete, or when the connection (and its queue pair)
//! is gone and the matcher is dropped with it.

use std::collections::HashMap;

/// What a DATA frame means for its READ.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::engine) enum FrameStep<S> {
    /// Complete: the bytes are in `slot` (`len` of them, from offset 0).
    Ready { slot: S, len: u32 },
    /// Complete without a write (an error status or no bytes); the slot is free again.
    NoWrite(S),
    /// The receive completion is still to come.
    Wait,
    /// No READ with that id was sent on this connection: a protocol error.
    Unknown,
}

/// What a receive completion means.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::engine) enum CompletionStep<S> {
    /// It completes the READ `id`, whose frame came first.
    Ready { id: u32, slot: S, len: u32 },
    /// It came before its frame, which completes the READ when it arrives.
    Early,
    /// A write for no READ of this connection: a protocol error.
    Stray,
}

#[derive(Debug)]
struct Entry<S> {
    slot: S,
    /// The byte count from the DATA frame, once it arrived.
    frame: Option<u32>,
    /// Whether the receive completion arrived.
    written: bool,
}

/// The slots of a connection's sent READs, by request id, and the receives to re-post.
#[derive(Debug)]
pub(in crate::engine) struct Matcher<S> {
    entries: HashMap<u32, Entry<S>>,
    /// Receives consumed and not yet posted again.
    repost: u32,
}

impl<S> Default for Matcher<S> {
    fn default() -> Self {
        Matcher { entries: HashMap::new(), repost: 0 }
    }
}

impl<S> Matcher<S> {
    /// A READ with id `id` is being sent to be written into `slot`. Returns the slot back
    /// if the id is still in use (a caller bug: ids are unique among pending requests).
    pub(in crate::engine) fn assign(&mut self, id: u32, slot: S) -> Result<(), S> {
        if self.entries.contains_key(&id) {
            return Err(slot);
        }
        self.entries.insert(id, Entry { slot, frame: None, written: false });
        Ok(())
    }

    /// The DATA frame for `id` arrived; `wrote` is true for `OK` with `data_len > 0`.
    pub(in crate::engine) fn frame(&mut self, id: u32, wrote: bool, len: u32) -> FrameStep<S> {
        let Some(entry) = self.entries.get_mut(&id) else { return FrameStep::Unknown };
        if entry.frame.is_some() {
            return FrameStep::Unknown; // a second answer to one READ
        }
        if !wrote {
            if entry.written {
                // A write landed for an answer that says none was made: the sidecar is
                // confused; keep the slot out of use until the connection closes.
                return FrameStep::Unknown;
            }
            let Some(entry) = self.entries.remove(&id) else { return FrameStep::Unknown };
            return FrameStep::NoWrite(entry.slot);
        }
        if entry.written {
            let Some(entry) = self.entries.remove(&id) else { return FrameStep::Unknown };
            return FrameStep::Ready { slot: entry.slot, len };
        }
        entry.frame = Some(len);
        FrameStep::Wait
    }

    /// A receive completion with immediate `imm` arrived. Each one consumed a posted
    /// receive, so it also adds one to [`take_reposts`](Self::take_reposts).
    pub(in crate::engine) fn completion(&mut self, imm: u32) -> CompletionStep<S> {
        self.repost = self.repost.saturating_add(1);
        let Some(entry) = self.entries.get_mut(&imm) else { return CompletionStep::Stray };
        if entry.written {
            return CompletionStep::Stray; // two writes for one READ
        }
        match entry.frame {
            Some(len) => match self.entries.remove(&imm) {
                Some(entry) => CompletionStep::Ready { id: imm, slot: entry.slot, len },
                None => CompletionStep::Stray,
            },
            None => {
                entry.written = true;
                CompletionStep::Early
            }
        }
    }

    /// How many receives to post again now (and resets the count).
    pub(in crate::engine) fn take_reposts(&mut self) -> u32 {
        std::mem::take(&mut self.repost)
    }

    /// Whether no READ holds a slot.
    pub(in crate::engine) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Slots held for READs not yet complete (answered or retired after a timeout).
    #[cfg(test)]
    pub(in crate::engine) fn held(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_completion_completes_once_with_the_slot() {
        let mut m = Matcher::default();
        m.assign(7, "slot7").expect("free id");
        assert_eq!(m.frame(7, true, 100), FrameStep::Wait);
        assert_eq!(m.held(), 1);
        assert_eq!(m.completion(7), CompletionStep::Ready { id: 7, slot: "slot7", len: 100 });
        assert_eq!(m.held(), 0);
        assert_eq!(m.take_reposts(), 1);
        assert_eq!(m.take_reposts(), 0, "reset after taking");
    }

    #[test]
    fn completion_then_frame_completes_on_the_frame() {
        let mut m = Matcher::default();
        m.assign(1, 'a').expect("free id");
        m.assign(2, 'b').expect("free id");
        assert_eq!(m.completion(2), CompletionStep::Early);
        assert_eq!(m.completion(1), CompletionStep::Early);
        assert_eq!(m.frame(1, true, 5), FrameStep::Ready { slot: 'a', len: 5 });
        assert_eq!(m.frame(2, true, 9), FrameStep::Ready { slot: 'b', len: 9 });
        assert_eq!(m.take_reposts(), 2, "one receive per completion");
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn answers_without_a_write_free_the_slot_on_the_frame() {
        let mut m = Matcher::default();
        m.assign(3, 30).expect("free id");
        assert_eq!(m.frame(3, false, 0), FrameStep::NoWrite(30));
        assert_eq!(m.take_reposts(), 0, "no receive consumed");
        assert_eq!(m.frame(3, false, 0), FrameStep::Unknown, "answered already");
    }

    #[test]
    fn a_timed_out_read_keeps_its_slot_until_its_answer_completes() {
        let mut m = Matcher::default();
        m.assign(4, 40).expect("free id");
        // The batch gave up here; nothing is told to the matcher, the slot stays held.
        assert_eq!(m.held(), 1);
        assert_eq!(m.completion(4), CompletionStep::Early);
        assert_eq!(m.held(), 1, "the frame is still to come");
        assert_eq!(m.frame(4, true, 8), FrameStep::Ready { slot: 40, len: 8 });
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn protocol_violations_are_reported_and_keep_slots_retired() {
        let mut m = Matcher::default();
        assert_eq!(m.frame(9, true, 1), FrameStep::Unknown, "never sent");
        assert_eq!(m.completion(9), CompletionStep::Stray, "write for nothing");
        assert_eq!(m.take_reposts(), 1, "a stray completion still consumed a receive");
        m.assign(5, 50).expect("free id");
        assert_eq!(m.assign(5, 51), Err(51), "id in use");
        assert_eq!(m.completion(5), CompletionStep::Early);
        assert_eq!(m.completion(5), CompletionStep::Stray, "second write");
        assert_eq!(m.frame(5, false, 0), FrameStep::Unknown, "written but says no write");
        assert_eq!(m.held(), 1, "the slot may have been written: retired");
    }

    #[test]
    fn many_reads_in_any_interleaving_each_complete_exactly_once() {
        let mut m = Matcher::default();
        let mut done = Vec::new();
        for id in 0..64u32 {
            m.assign(id, id + 1000).expect("free id");
        }
        for id in 0..64u32 {
            // Even ids: completion first; odd ids: frame first.
            if id % 2 == 0 {
                assert_eq!(m.completion(id), CompletionStep::Early);
            } else {
                assert_eq!(m.frame(id, true, id), FrameStep::Wait);
            }
        }
        for id in (0..64u32).rev() {
            if id % 2 == 0 {
                match m.frame(id, true, id) {
                    FrameStep::Ready { slot, len } => done.push((id, slot, len)),
                    other => panic!("{other:?}"),
                }
            } else {
                match m.completion(id) {
                    CompletionStep::Ready { id: got, slot, len } => done.push((got, slot, len)),
                    other => panic!("{other:?}"),
                }
            }
        }
        done.sort_unstable();
        assert_eq!(done, (0..64).map(|id| (id, id + 1000, id)).collect::<Vec<_>>());
        assert_eq!(m.take_reposts(), 64);
        assert_eq!(m.held(), 0);
    }
}
