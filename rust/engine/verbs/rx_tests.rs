//! The verbs completion path with a fake receive queue, and the engine's choice of
//! transport on a host without an RDMA device.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::matcher::{FrameStep, Matcher};
use super::rx::pump;
use super::{Host, RecvEvent, RecvQueue};
use crate::engine::test_server::{Mode, TestServer};
use crate::engine::tests::{cfg, needles, op, pattern, whole};
use crate::engine::{Engine, EngineConfig, Failure, Transport};

/// A receive queue whose completions the test hands in.
#[derive(Debug, Default)]
pub(super) struct FakeQueue {
    ready: Mutex<VecDeque<RecvEvent>>,
    posted: AtomicU32,
    refuse_posts: bool,
}

impl FakeQueue {
    pub(super) fn land(&self, event: RecvEvent) {
        self.ready.lock().expect("lock").push_back(event);
    }
}

impl RecvQueue for FakeQueue {
    fn poll(&self, out: &mut Vec<RecvEvent>) -> Result<(), Failure> {
        out.extend(self.ready.lock().expect("lock").drain(..));
        Ok(())
    }

    fn post(&self, n: u32) -> Result<(), Failure> {
        if self.refuse_posts {
            return Err(Failure::Verbs("receive queue full".into()));
        }
        self.posted.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn a_frame_waits_for_its_completion_and_each_completion_reposts_a_receive() {
    let q = FakeQueue::default();
    let mut m = Matcher::default();
    let mut events = Vec::new();
    m.assign(5, 50u32).expect("free id");
    assert_eq!(m.frame(5, true, 1234), FrameStep::Wait);
    assert_eq!(pump(&q, &mut m, 5, &mut events), Ok(None), "nothing landed yet");
    assert_eq!(q.posted.load(Ordering::Relaxed), 0);
    q.land(RecvEvent::Written(5));
    assert_eq!(pump(&q, &mut m, 5, &mut events), Ok(Some((50, 1234))));
    assert_eq!(q.posted.load(Ordering::Relaxed), 1, "one receive re-posted");
}

#[test]
fn completions_of_later_reads_are_kept_for_their_frames() {
    let q = FakeQueue::default();
    let mut m = Matcher::default();
    let mut events = Vec::new();
    for id in 1..=3 {
        m.assign(id, id * 10).expect("free id");
    }
    assert_eq!(m.frame(1, true, 7), FrameStep::Wait);
    for id in [3, 2, 1] {
        q.land(RecvEvent::Written(id));
    }
    assert_eq!(pump(&q, &mut m, 1, &mut events), Ok(Some((10, 7))));
    assert_eq!(q.posted.load(Ordering::Relaxed), 3);
    assert_eq!(m.frame(2, true, 8), FrameStep::Ready { slot: 20, len: 8 });
    assert_eq!(m.frame(3, false, 0), FrameStep::Unknown, "written, so it must say OK");
    assert_eq!(m.held(), 1, "READ 3's slot stays retired");
}

#[test]
fn a_failed_receive_or_a_stray_write_closes_the_connection_and_keeps_slots() {
    let q = FakeQueue::default();
    let mut m = Matcher::default();
    let mut events = Vec::new();
    m.assign(1, 1u32).expect("free id");
    q.land(RecvEvent::Failed("IBV_WC_REM_ACCESS_ERR".into()));
    assert!(matches!(pump(&q, &mut m, 1, &mut events), Err(Failure::Verbs(_))));
    q.land(RecvEvent::Written(99));
    assert!(matches!(pump(&q, &mut m, 1, &mut events), Err(Failure::Protocol(_))));
    assert_eq!(m.held(), 1, "the slot is freed only with the connection");
    let refusing = FakeQueue { refuse_posts: true, ..FakeQueue::default() };
    m.assign(2, 2).expect("free id");
    refusing.land(RecvEvent::Written(2));
    assert!(matches!(pump(&refusing, &mut m, 1, &mut events), Err(Failure::Verbs(_))));
}

#[test]
fn a_timed_out_reads_late_write_keeps_its_slot_apart_from_later_reads() {
    let q = FakeQueue::default();
    let mut m = Matcher::default();
    let mut events = Vec::new();
    m.assign(1, 'a').expect("free id");
    // READ 1's batch gave up here; the matcher is told nothing and keeps slot 'a'.
    m.assign(2, 'b').expect("free id");
    assert_eq!(m.frame(2, true, 10), FrameStep::Wait);
    // READ 1's late write lands while READ 2 waits for its own.
    q.land(RecvEvent::Written(1));
    assert_eq!(pump(&q, &mut m, 2, &mut events), Ok(None), "not READ 2's write");
    assert_eq!(m.held(), 2, "slot 'a' is still READ 1's");
    q.land(RecvEvent::Written(2));
    assert_eq!(pump(&q, &mut m, 2, &mut events), Ok(Some(('b', 10))));
    assert_eq!(m.held(), 1, "slot 'a' waits for READ 1's frame");
    assert_eq!(m.frame(1, true, 99), FrameStep::Ready { slot: 'a', len: 99 }, "only now free");
    assert_eq!(q.posted.load(Ordering::Relaxed), 2, "both receives re-posted");
}

/// Whether this host has a usable device: the transport tests below expect none.
fn no_device() -> bool {
    let missing = Host::open(4096, 1, 1 << 20).is_err();
    if !missing {
        eprintln!("skipped: this host has an RDMA device (see device_tests)");
    }
    missing
}

#[test]
fn auto_without_a_device_is_plain_tcp() {
    if !no_device() {
        return;
    }
    let server = TestServer::start(needles(0..4, 3000), Mode::Normal);
    let engine =
        Engine::new(EngineConfig { transport: Transport::Auto, ..cfg(1) }).expect("engine");
    let engine = engine.without_lane();
    let mut buf = vec![0u8; 4000];
    let ops = [op(&server.addr, 0, 0, 3000, 0), op(&server.addr, 1, 100, 1000, 3000)];
    assert_eq!(engine.read_into(&mut buf, &ops), vec![Ok(()), Ok(())]);
    assert_eq!(&buf[..3000], &pattern(0, 3000)[..]);
    assert_eq!(&buf[3000..], &pattern(1, 3000)[100..1100]);
    let health = engine.health();
    assert_eq!(health[0].transport, "tcp");
    let stats = engine.stats();
    assert_eq!(stats.bytes_by_transport["tcp"], 4000);
    assert_eq!(stats.bytes_by_transport["verbs"], 0);
}

#[test]
fn verbs_without_a_device_fails_every_op_with_a_reason_to_fall_back() {
    if !no_device() {
        return;
    }
    let server = TestServer::start(needles(0..4, 3000), Mode::Normal);
    let engine =
        Engine::new(EngineConfig { transport: Transport::Verbs, ..cfg(1) }).expect("engine");
    let mut buf = vec![0u8; 10];
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 10, 0)]);
    assert!(matches!(&out[0], Err(Failure::Verbs(_))), "{out:?}");
    let out = engine.read_whole(&[whole(&server.addr, 1)]);
    assert!(matches!(&out[0], Err(Failure::Verbs(_))), "{out:?}");
    assert_eq!(server.accepted(), 0, "no connection was made");
    assert!(engine.health().iter().all(|h| h.up), "a local failure says nothing of the sidecar");
    assert_eq!(engine.stats().failures_by_reason["verbs"], 2);
}

#[test]
fn transports_parse_and_a_verbs_engine_needs_slots() {
    assert_eq!(Transport::parse("auto"), Some(Transport::Auto));
    assert_eq!(Transport::parse("tcp"), Some(Transport::Tcp));
    assert_eq!(Transport::parse("verbs"), Some(Transport::Verbs));
    assert_eq!(Transport::parse("rdma"), None);
    assert_eq!(EngineConfig::default().transport, Transport::Auto);
    let zero = EngineConfig { verbs_slots: 0, ..EngineConfig::default() };
    assert!(Engine::new(zero).is_err());
    let tcp = EngineConfig { verbs_slots: 0, transport: Transport::Tcp, ..EngineConfig::default() };
    assert!(Engine::new(tcp).is_ok(), "tcp never builds the pool");
}
