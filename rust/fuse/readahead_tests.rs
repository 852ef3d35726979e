use std::sync::atomic::AtomicUsize;

use super::*;

const MIB: usize = 1 << 20;

fn byte_at(i: u64) -> u8 {
    (i % 251) as u8
}

/// A file of `size` bytes whose byte `i` is `i % 251`; windows are fetched at once, or fail
/// from byte `fail_from` on.
#[derive(Debug)]
struct FakeFile {
    size: u64,
    fail_from: u64,
    started: AtomicUsize,
}

impl FakeFile {
    fn new(size: u64) -> FakeFile {
        FakeFile { size, fail_from: u64::MAX, started: AtomicUsize::new(0) }
    }
}

#[derive(Debug)]
struct Fetched(Mutex<Option<Held>>);

impl InFlight for Fetched {
    fn finish(&self) -> Option<Held> {
        self.0.lock().expect("lock").take()
    }
    fn done(&self) -> bool {
        true
    }
}

impl Source for FakeFile {
    fn span(&self, at: u64, want: usize) -> Option<usize> {
        Some(self.size.saturating_sub(at).min(want as u64) as usize)
    }
    fn start(&self, at: u64, mut buf: Held) -> Option<Box<dyn InFlight>> {
        self.started.fetch_add(1, Ordering::Relaxed);
        let ok = at + buf.buf.len() as u64 <= self.fail_from;
        for (i, b) in buf.bytes().iter_mut().enumerate() {
            *b = byte_at(at + i as u64);
        }
        Some(Box::new(Fetched(Mutex::new(ok.then_some(buf)))))
    }
}

fn ahead(per_handle: usize, total: usize, unit: usize) -> ReadAhead {
    ReadAhead::new(AheadConfig { per_handle, total, unit })
}

/// The bytes a hit gives, joined.
fn joined(hit: &Hit) -> Option<Vec<u8>> {
    hit.slices().map(|s| s.concat())
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(byte_at).collect()
}

#[test]
fn an_in_order_reader_is_served_from_windows_within_its_cap() {
    let ra = ahead(8 * MIB, 64 * MIB, 2 * MIB);
    let file = FakeFile::new(40 * MIB as u64);
    let stream = Stream::default();
    // The first READ starts nothing; the second starts windows up to the handle's cap.
    assert!(ra.read(&stream, &file, 0, MIB).is_none());
    assert_eq!(ra.stats().windows, 0);
    assert!(ra.read(&stream, &file, MIB as u64, MIB).is_none());
    assert_eq!(ra.stats().windows, 4);
    assert_eq!(ra.stats().held, 8 * MIB as u64);
    let mut hits = 0;
    for i in 2..40u64 {
        let at = i * MIB as u64;
        let hit = ra.read(&stream, &file, at, MIB).expect("a window covers it");
        assert_eq!(joined(&hit).expect("fetched"), expected(at, MIB), "READ at {i} MiB");
        hit.served(MIB);
        hits += 1;
        assert!(ra.stats().held <= (8 * MIB) as u64, "held within the handle's cap");
    }
    let st = ra.stats();
    assert_eq!(st.hits, hits);
    assert_eq!(st.misses, 0);
    assert_eq!(st.window_bytes, 38 * MIB as u64, "read ahead exactly to the end, once");
    assert!(ra.stats().spare > 0, "buffers of passed windows are kept for the next");
    drop(stream);
    assert_eq!(ra.stats().held, 0, "dropping the handle's state frees its windows");
    assert_eq!(ra.stats().spare, 0, "and the spare buffers with them");
}

#[test]
fn random_reads_start_nothing_and_a_jump_drops_the_windows() {
    let ra = ahead(8 * MIB, 64 * MIB, 2 * MIB);
    let file = FakeFile::new(1 << 30);
    let stream = Stream::default();
    for at in [7u64, 900, 3, 512, 100, 40, 800, 5] {
        assert!(ra.read(&stream, &file, at * MIB as u64 + 4096, 4096).is_none());
    }
    assert_eq!(file.started.load(Ordering::Relaxed), 0, "no window for random 4 KiB reads");
    ra.read(&stream, &file, 0, MIB);
    ra.read(&stream, &file, MIB as u64, MIB);
    assert!(ra.stats().held > 0);
    assert!(ra.read(&stream, &file, 500 * MIB as u64, MIB).is_none());
    let st = ra.stats();
    assert_eq!(st.held, 0, "a jump drops the windows");
    assert_eq!(st.unused_bytes, st.window_bytes, "none of them was used");
}

#[test]
fn the_loop_budget_caps_all_handles_together() {
    let ra = ahead(8 * MIB, 12 * MIB, 2 * MIB);
    let file = FakeFile::new(1 << 30);
    let (a, b) = (Stream::default(), Stream::default());
    for s in [&a, &b] {
        ra.read(s, &file, 0, MIB);
        ra.read(s, &file, MIB as u64, MIB);
    }
    let st = ra.stats();
    assert_eq!(st.held, 12 * MIB as u64);
    assert!(st.capped > 0);
    assert!(st.most_held <= 12 * MIB as u64);
    // The second handle still reads correctly, from windows where it has them and the
    // direct way where it has none.
    for i in 2..6u64 {
        if let Some(hit) = ra.read(&b, &file, i * MIB as u64, MIB) {
            assert_eq!(joined(&hit).expect("fetched"), expected(i * MIB as u64, MIB));
        }
    }
    drop(a);
    drop(b);
    assert_eq!(ra.stats().held, 0);
}

#[test]
fn a_read_across_windows_takes_both_and_the_end_of_file_stops_them() {
    let ra = ahead(8 * MIB, 64 * MIB, MIB);
    let size = 5 * MIB as u64 + 123;
    let file = FakeFile::new(size);
    let stream = Stream::default();
    ra.read(&stream, &file, 0, 4096);
    ra.read(&stream, &file, 4096, 4096);
    // Windows start at 8192 and are 1 MiB each: this READ straddles two.
    let at = MIB as u64 - 1000;
    let hit = ra.read(&stream, &file, at, 64 << 10).expect("covered");
    assert_eq!(joined(&hit).expect("fetched"), expected(at, 64 << 10));
    assert_eq!(ra.stats().window_bytes, size - 8192, "nothing past the end");
    let tail = ra.read(&stream, &file, size - 123, 123).expect("covered");
    assert_eq!(joined(&tail).expect("fetched"), expected(size - 123, 123));
}

#[test]
fn a_failed_window_sends_its_reads_the_direct_way() {
    let ra = ahead(4 * MIB, 64 * MIB, MIB);
    let mut file = FakeFile::new(64 * MIB as u64);
    file.fail_from = 3 * MIB as u64;
    let stream = Stream::default();
    ra.read(&stream, &file, 0, MIB);
    ra.read(&stream, &file, MIB as u64, MIB);
    let good = ra.read(&stream, &file, 2 * MIB as u64, MIB).expect("covered");
    assert!(joined(&good).is_some());
    let bad = ra.read(&stream, &file, 3 * MIB as u64, MIB).expect("covered");
    assert!(joined(&bad).is_none(), "a failed window gives no bytes");
    assert_eq!(ra.stats().failed, 1);
}

#[test]
fn turned_off_it_does_nothing() {
    let ra = ahead(0, 64 * MIB, MIB);
    let file = FakeFile::new(64 * MIB as u64);
    let stream = Stream::default();
    for i in 0..8u64 {
        assert!(ra.read(&stream, &file, i * MIB as u64, MIB).is_none());
    }
    assert_eq!(ra.stats(), AheadStats::default());
}
