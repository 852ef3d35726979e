//! Which idle connection to close for another one, and the loop that takes pinned memory
//! back from idle verbs connections when the budget is full.
//!
//! Both the connection cap (`max_conns`) and the pinned budget are shared by every sidecar
//! of the process; both are made room in by closing the least recently used connection
//! that is idle (owing no answer, no batch on it). For the budget only a connection that
//! holds a slice of it helps, so only those are taken: closing an idle tcp connection would
//! cost a reconnect and give no memory back. A busy connection is never taken, however slow
//! or old, so it never loses its slice under a READ.
//!
//! Plain logic over plain values: the pools feed it what they hold (`pool.rs`), the
//! generation drives the loop with the real arena (`runtime.rs`), and both are tested here
//! without a device.

/// What choosing a connection to close needs to know about one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder<K> {
    /// Where the connection is (a seat, the lane list...).
    pub(super) key: K,
    /// When it was last used ([`super::pool::now_ms`]).
    pub(super) used: u64,
    /// Open, owing no answer, and no batch has it.
    pub(super) idle: bool,
    /// Holds a slice of the pinned budget (a verbs connection).
    pub(super) leased: bool,
}

impl<K> Holder<K> {
    /// The same connection, found under another key.
    pub(super) fn at<L>(self, key: L) -> Holder<L> {
        Holder { key, used: self.used, idle: self.idle, leased: self.leased }
    }
}

/// What a close is for, which decides the connections it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// A connection slot under `max_conns`: any idle connection frees one.
    Conn,
    /// A slice of the pinned budget: only an idle connection that holds one.
    Pinned,
}

impl Need {
    /// Whether closing `holder` serves this need.
    fn served_by<K>(self, holder: &Holder<K>) -> bool {
        holder.idle && (self == Need::Conn || holder.leased)
    }
}

/// The least recently used of `holders` whose close serves `need`; `None` when none does.
pub(super) fn victim<K>(
    holders: impl IntoIterator<Item = Holder<K>>,
    need: Need,
) -> Option<Holder<K>> {
    holders.into_iter().filter(|h| need.served_by(h)).min_by_key(|h| h.used)
}

/// Makes room in a full pinned budget: while `has_room` says no, `evict` closes the least
/// recently used idle connection that holds a slice (false when none is left) and
/// `wait_back` waits, up to the caller's deadline, until a slice is back (false when the
/// deadline passed with none). Returns whether there is room, and how many connections it
/// closed.
///
/// Another connection being made at the same moment may take the slice that came back;
/// then the loop closes the next one, so it ends either with room or with no idle leased
/// connection left (or at the deadline), never spinning: each turn closes a connection.
pub(super) fn make_room(
    mut has_room: impl FnMut() -> bool,
    mut evict: impl FnMut() -> bool,
    mut wait_back: impl FnMut() -> bool,
) -> (bool, usize) {
    let mut closed = 0;
    loop {
        if has_room() {
            return (true, closed);
        }
        if !evict() {
            return (false, closed);
        }
        closed += 1;
        if !wait_back() {
            return (has_room(), closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    fn holder(key: &'static str, used: u64, idle: bool, leased: bool) -> Holder<&'static str> {
        Holder { key, used, idle, leased }
    }

    #[test]
    fn the_budget_takes_only_idle_leased_connections_least_recently_used_first() {
        let holders = [
            holder("busy verbs, oldest", 1, false, true),
            holder("idle tcp, old", 2, true, false),
            holder("idle verbs, newer", 9, true, true),
            holder("idle verbs, older", 5, true, true),
        ];
        let pick = |need| victim(holders, need).map(|h| h.key);
        assert_eq!(pick(Need::Pinned), Some("idle verbs, older"));
        // The connection cap takes any idle one, leased or not; never a busy one.
        assert_eq!(pick(Need::Conn), Some("idle tcp, old"));
    }

    #[test]
    fn busy_and_tcp_connections_are_never_taken_for_the_budget() {
        let holders = [holder("busy verbs", 1, false, true), holder("idle tcp", 2, true, false)];
        assert_eq!(victim(holders, Need::Pinned), None);
        assert_eq!(victim(Vec::<Holder<u8>>::new(), Need::Conn), None);
    }

    /// A fake budget: `free` slots, idle leased connections holding one slot each (by
    /// when they were last used), and slices that come back only when waited for.
    struct Budget {
        free: Cell<u32>,
        idle: RefCell<Vec<Holder<u32>>>,
        closing: Cell<u32>,
        closed: RefCell<Vec<u32>>,
    }

    impl Budget {
        fn new(free: u32, idle: &[u64]) -> Budget {
            let idle = idle.iter().enumerate().map(|(i, &used)| Holder {
                key: i as u32,
                used,
                idle: true,
                leased: true,
            });
            Budget {
                free: Cell::new(free),
                idle: RefCell::new(idle.collect()),
                closing: Cell::new(0),
                closed: RefCell::new(Vec::new()),
            }
        }

        fn evict(&self) -> bool {
            let mut idle = self.idle.borrow_mut();
            let Some(v) = victim(idle.iter().copied(), Need::Pinned) else { return false };
            idle.retain(|h| h.key != v.key);
            self.closed.borrow_mut().push(v.key);
            self.closing.set(self.closing.get() + 1);
            true
        }

        fn wait_back(&self) -> bool {
            self.free.set(self.free.get() + self.closing.replace(0));
            self.free.get() > 0
        }
    }

    #[test]
    fn room_already_free_closes_nothing() {
        let b = Budget::new(1, &[3, 1]);
        let got = make_room(|| b.free.get() > 0, || b.evict(), || b.wait_back());
        assert_eq!(got, (true, 0));
        assert!(b.closed.borrow().is_empty());
    }

    #[test]
    fn a_full_budget_closes_the_least_recently_used_idle_connection_and_waits_for_it() {
        let b = Budget::new(0, &[30, 10, 20]);
        let got = make_room(|| b.free.get() > 0, || b.evict(), || b.wait_back());
        assert_eq!(got, (true, 1));
        assert_eq!(*b.closed.borrow(), [1], "the one used longest ago");
        assert_eq!(b.free.get(), 1, "its slice is back");
    }

    #[test]
    fn a_slice_taken_by_someone_else_meanwhile_closes_the_next_one() {
        let b = Budget::new(0, &[30, 10, 20]);
        let raced = Cell::new(false);
        let has_room = || {
            // Another connection takes the first slice that comes back.
            if b.free.get() > 0 && !raced.replace(true) {
                b.free.set(b.free.get() - 1);
            }
            b.free.get() > 0
        };
        let got = make_room(has_room, || b.evict(), || b.wait_back());
        assert_eq!(got, (true, 2));
        assert_eq!(*b.closed.borrow(), [1, 2]);
    }

    #[test]
    fn no_idle_leased_connection_left_means_no_room() {
        let b = Budget::new(0, &[]);
        assert_eq!(make_room(|| b.free.get() > 0, || b.evict(), || b.wait_back()), (false, 0));
    }

    #[test]
    fn a_slice_that_does_not_come_back_in_time_ends_the_loop() {
        let b = Budget::new(0, &[5, 6]);
        let got = make_room(|| b.free.get() > 0, || b.evict(), || false);
        assert_eq!(got, (false, 1), "one closed, then the deadline");
    }
}
