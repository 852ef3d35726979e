//! The loop against stand-ins for the kernel (one `SOCK_SEQPACKET` pair per device: one
//! request per read, one reply per write, as `/dev/fuse`) and for libfuse (the other end
//! of the message socket), with the engine reading from the in-test protocol server.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::abi::{
    opcode, open_reply, out_header, request, request_on, Attr, ENTRY_OUT, FOPEN_KEEP_CACHE,
    OUT_HEADER,
};
use super::fd;
use super::files::{NativeFile, Route};
use super::opens::Named;
use super::readahead::AheadConfig;
use super::session::{LoopConfig, NativeLoop};
use crate::engine::test_server::{Mode, TestServer};
use crate::engine::tests::{engine, needles, pattern, COOKIE};
use crate::plan::ChunkSpec;

const SMALL: usize = 64 << 10;
/// Forwarded READs larger than this go in pieces.
const PIECE: u32 = 8192;

fn pair() -> (OwnedFd, OwnedFd) {
    fd::message_pair(SMALL).expect("socketpair")
}

fn read_req(unique: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&fh.to_ne_bytes());
    body.extend_from_slice(&offset.to_ne_bytes());
    body.extend_from_slice(&size.to_ne_bytes());
    body.extend_from_slice(&[0u8; 20]);
    request(opcode::READ, unique, &body)
}

/// The next message on `sock`, or None after `ms` milliseconds of nothing.
fn next(sock: &OwnedFd, ms: i32) -> Option<Vec<u8>> {
    let mut p = [libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: a live array of one pollfd.
    if unsafe { libc::poll(p.as_mut_ptr(), 1, ms) } <= 0 {
        return None;
    }
    let mut buf = vec![0u8; SMALL];
    let n = fd::recv(sock.as_raw_fd(), &mut buf).expect("recv");
    buf.truncate(n);
    Some(buf)
}

fn send(sock: &OwnedFd, msg: &[u8]) {
    fd::send(sock.as_raw_fd(), msg).expect("send");
}

/// Sends `msg` from `kernel` and checks that it reaches the Python side intact.
fn passes_through(kernel: &OwnedFd, python: &OwnedFd, msg: &[u8]) {
    send(kernel, msg);
    assert_eq!(next(python, 5000).expect("forwarded"), msg);
}

struct Rig {
    native: NativeLoop,
    kernels: Vec<OwnedFd>,
    python: OwnedFd,
    _server: TestServer,
}

/// A loop over two devices; handle 7 is a file of needle 1 (5000 bytes at 0), a hole,
/// and needle 2 (5000 bytes at 8192), 16384 bytes long; handle 9 reads a needle the
/// server does not have.
fn rig() -> Rig {
    let server = TestServer::start(needles(1..3, 5000), Mode::Normal);
    let mut kernels = Vec::new();
    let mut devices = Vec::new();
    for _ in 0..2 {
        let (k, d) = pair();
        kernels.push(k);
        devices.push(d);
    }
    let (python, ours) = pair();
    // Read-ahead in windows smaller than the file, so READs in order meet it.
    let read_ahead = AheadConfig { per_handle: 8192, total: 12288, unit: 4096 };
    let cfg = LoopConfig { op_bytes: 3000, max_message: SMALL, forward_piece: PIECE, read_ahead };
    // Notifications go to device 0's kernel end, as they may to any device of a session.
    let notify = fd::dup(devices[0].as_raw_fd()).expect("dup");
    let native =
        NativeLoop::start(Arc::new(engine(1)), devices, notify, ours, cfg, None).expect("starts");
    let route = |key| {
        Some(Route {
            sidecar: server.addr.clone(),
            volume: 1,
            key,
            cookie: COOKIE,
            jwt: String::new(),
        })
    };
    let chunk = |offset, size| ChunkSpec { offset, size, modified_ts_ns: 1, whole: false };
    let file =
        NativeFile::new(vec![(chunk(0, 5000), route(1)), (chunk(8192, 5000), route(2))], 16384)
            .expect("plans");
    native.files().insert(7, file);
    let missing = NativeFile::new(vec![(chunk(0, 100), route(42))], 100).expect("plans");
    native.files().insert(9, missing);
    Rig { native, kernels, python, _server: server }
}

fn expected_file() -> Vec<u8> {
    let mut want = vec![0u8; 16384];
    want[..5000].copy_from_slice(&pattern(1, 5000));
    want[8192..13192].copy_from_slice(&pattern(2, 5000));
    want
}

#[test]
fn registered_reads_are_answered_from_the_engine_on_their_own_device() {
    let r = rig();
    let want = expected_file();
    for (unique, offset, size) in
        [(10u64, 0u64, 16384u32), (11, 4000, 6000), (12, 16000, 4096), (13, 20000, 10)]
    {
        let k = &r.kernels[unique as usize % 2];
        send(k, &read_req(unique, 7, offset, size));
        let reply = next(k, 5000).expect("a reply");
        let start = (offset as usize).min(want.len());
        let body = &want[start..(offset as usize + size as usize).min(want.len()).max(start)];
        assert_eq!(&reply[..OUT_HEADER], &out_header(OUT_HEADER + body.len(), 0, unique));
        assert!(reply[OUT_HEADER..] == *body, "bytes of READ {unique}");
    }
    assert!(next(&r.python, 100).is_none(), "nothing went to the Python side");
    let st = r.native.stats();
    assert_eq!((st.reads, st.bytes, st.forwarded), (4, 16384 + 6000 + 384, 0));
}

#[test]
fn reads_in_order_are_answered_from_read_ahead_and_its_memory_goes_with_the_handle() {
    let r = rig();
    let want = expected_file();
    let k = &r.kernels[0];
    for (i, offset) in (0..16384u64).step_by(1024).enumerate() {
        send(k, &read_req(100 + i as u64, 7, offset, 1024));
        let reply = next(k, 5000).expect("a reply");
        assert_eq!(&reply[..OUT_HEADER], &out_header(OUT_HEADER + 1024, 0, 100 + i as u64));
        let at = offset as usize;
        assert!(reply[OUT_HEADER..] == want[at..at + 1024], "bytes at {offset}");
    }
    // Counted just after each reply is written.
    let t = Instant::now();
    while r.native.stats().reads < 16 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ra = r.native.read_ahead_stats();
    assert!(ra.hits >= 8, "READs answered from read-ahead: {ra:?}");
    assert_eq!(ra.hit_bytes, ra.hits * 1024);
    assert!(ra.most_held <= 8192, "within the handle's cap: {ra:?}");
    assert_eq!(ra.failed, 0);
    let st = r.native.stats();
    assert_eq!((st.reads, st.bytes, st.forwarded), (16, 16384, 0));
    // Releasing the handle frees its windows (one still in flight once its batch ends).
    assert!(r.native.files().remove(7));
    let t = Instant::now();
    while r.native.read_ahead_stats().held != 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "read-ahead memory kept after release");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn other_requests_go_to_python_and_replies_back_to_their_device() {
    let r = rig();
    passes_through(&r.kernels[1], &r.python, &request(1, 20, b"name\0"));
    // An unregistered handle's READ, and one the engine cannot deliver, go too, intact.
    let unregistered = read_req(24, 8, 0, 4096);
    passes_through(&r.kernels[0], &r.python, &unregistered);
    let missing = read_req(22, 9, 0, 100);
    passes_through(&r.kernels[0], &r.python, &missing);
    // Replies in another order than the requests: each reaches the device it came from.
    let mut reply22 = out_header(OUT_HEADER + 3, 0, 22).to_vec();
    reply22.extend_from_slice(b"abc");
    send(&r.python, &reply22);
    send(&r.python, &out_header(OUT_HEADER, -libc::ENOENT, 20));
    send(&r.python, &out_header(OUT_HEADER, 0, 24));
    assert_eq!(next(&r.kernels[0], 5000).expect("reply 22"), reply22);
    assert_eq!(next(&r.kernels[0], 5000).expect("reply 24"), out_header(OUT_HEADER, 0, 24));
    assert_eq!(
        next(&r.kernels[1], 5000).expect("reply 20"),
        out_header(OUT_HEADER, -libc::ENOENT, 20)
    );
    // libfuse's EAGAIN for an interrupt (odd id) is dropped quietly.
    send(&r.python, &out_header(OUT_HEADER, -libc::EAGAIN, 31));
    // A notification (unique 0) goes to a device; FORGET goes to Python and expects nothing.
    send(
        &r.python,
        &out_header(OUT_HEADER + 8, 1, 0).iter().chain(&[0u8; 8]).copied().collect::<Vec<_>>(),
    );
    assert!(next(&r.kernels[0], 5000).is_some(), "notification delivered");
    let forget = request(opcode::FORGET, 23, &[0u8; 8]);
    passes_through(&r.kernels[1], &r.python, &forget);
    // The pump counts a reply just after writing it: give it a moment.
    let t = Instant::now();
    while r.native.stats().replies < 4 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = r.native.stats();
    assert_eq!((st.unregistered, st.failed, st.forwarded, st.replies, st.errors), (1, 1, 4, 4, 0));
}

#[test]
fn a_large_forwarded_read_goes_in_pieces_and_reaches_its_device_whole() {
    let r = rig();
    // Handle 8 is not registered: the READ goes to Python, as three READs.
    send(&r.kernels[1], &read_req(80, 8, 1000, 20000));
    let mut pieces = Vec::new();
    for _ in 0..3 {
        let msg = next(&r.python, 5000).expect("a piece");
        let h = super::abi::InHeader::parse(&msg).expect("a request");
        let read = super::abi::ReadIn::parse(&msg).expect("a READ");
        assert_eq!(read.fh, 8);
        pieces.push((h.unique, read.offset, read.size));
    }
    assert!(next(&r.python, 100).is_none(), "no more pieces");
    let spans: Vec<(u64, u32)> = pieces.iter().map(|p| (p.1, p.2)).collect();
    assert_eq!(spans, [(1000, PIECE), (9192, PIECE), (17384, 20000 - 2 * PIECE)]);
    // Answered out of order, with the file's bytes at those offsets.
    let file: Vec<u8> = (0..21000u32).map(|i| (i % 251) as u8).collect();
    for &(unique, offset, size) in [pieces[2], pieces[0], pieces[1]].iter() {
        let body = &file[offset as usize..(offset + u64::from(size)) as usize];
        let mut reply = out_header(OUT_HEADER + body.len(), 0, unique).to_vec();
        reply.extend_from_slice(body);
        send(&r.python, &reply);
    }
    let got = next(&r.kernels[1], 5000).expect("the joined reply");
    assert_eq!(&got[..OUT_HEADER], &out_header(OUT_HEADER + 20000, 0, 80));
    assert!(got[OUT_HEADER..] == file[1000..21000], "bytes in file order");
    assert!(next(&r.kernels[0], 100).is_none(), "nothing on the other device");
    let st = r.native.stats();
    assert_eq!((st.forwarded, st.split, st.errors), (1, 1, 0));
}

#[test]
fn a_piece_that_fails_fails_its_whole_read() {
    let r = rig();
    send(&r.kernels[0], &read_req(90, 8, 0, 2 * PIECE));
    let a = next(&r.python, 5000).expect("piece 1");
    let b = next(&r.python, 5000).expect("piece 2");
    let unique = |m: &[u8]| super::abi::InHeader::parse(m).expect("request").unique;
    let mut full = out_header(OUT_HEADER + PIECE as usize, 0, unique(&a)).to_vec();
    full.resize(OUT_HEADER + PIECE as usize, 1);
    send(&r.python, &full);
    send(&r.python, &out_header(OUT_HEADER, -libc::EIO, unique(&b)));
    assert_eq!(next(&r.kernels[0], 5000).expect("reply"), out_header(OUT_HEADER, -libc::EIO, 90));
}

#[test]
fn interrupts_reach_python_only_for_requests_it_owes() {
    let r = rig();
    let getattr = request(3, 30, &[0u8; 16]);
    passes_through(&r.kernels[0], &r.python, &getattr);
    // For the pending GETATTR: forwarded. For a native READ long answered: dropped.
    let owed = request(opcode::INTERRUPT, 31, &30u64.to_ne_bytes());
    passes_through(&r.kernels[1], &r.python, &owed);
    send(&r.kernels[1], &read_req(32, 7, 0, 10));
    assert!(next(&r.kernels[1], 5000).is_some());
    send(&r.kernels[1], &request(opcode::INTERRUPT, 33, &32u64.to_ne_bytes()));
    assert!(next(&r.python, 200).is_none(), "an interrupt for a native READ is dropped");
}

#[test]
fn garbage_from_either_side_is_counted_and_the_loop_goes_on() {
    let r = rig();
    send(&r.kernels[0], &[1, 2, 3]);
    let mut lying = read_req(40, 7, 0, 10);
    lying[0] = 200; // length field disagrees with what was read
    send(&r.kernels[0], &lying);
    send(&r.python, &[9u8; 5]);
    send(&r.python, &out_header(OUT_HEADER, 0, 12346)); // nobody waits for it
    send(&r.kernels[0], &read_req(41, 7, 0, 10));
    let reply = next(&r.kernels[0], 5000).expect("still answers");
    assert_eq!(&reply[OUT_HEADER..], &expected_file()[..10]);
    assert!(next(&r.kernels[0], 100).is_none(), "nothing sent for the garbage");
    let t = Instant::now();
    while r.native.stats().errors < 4 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.native.stats().errors, 4);
}

#[test]
fn a_reply_too_large_to_route_fails_its_request() {
    let r = rig();
    send(&r.kernels[1], &request(1, 50, b"x\0"));
    assert!(next(&r.python, 5000).is_some());
    // Larger than the loop's message buffer (the socket itself can carry it).
    let mut huge = out_header(OUT_HEADER + SMALL, 0, 50).to_vec();
    huge.resize(OUT_HEADER + SMALL, 7);
    send(&r.python, &huge);
    assert_eq!(next(&r.kernels[1], 5000).expect("failed"), out_header(OUT_HEADER, -libc::EIO, 50));
}

#[test]
fn a_closed_device_ends_the_session_and_stop_returns_promptly() {
    let mut r = rig();
    assert!(!r.native.has_ended());
    let ended = r.native.ended_fd();
    r.kernels.remove(0); // the kernel side goes away, as on unmount
    let mut p = [libc::pollfd { fd: ended, events: libc::POLLIN, revents: 0 }];
    // SAFETY: a live array of one pollfd.
    assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 5000) }, 1, "ended fd readable");
    assert!(r.native.has_ended());
    // The Python side never reads: a reader blocked handing it requests must not hang stop.
    // Fill both queues (Python's, then the device's) until the kernel side would block.
    let mut sent = 0;
    for i in 0..100_000u64 {
        let msg = request(1, 100 + i, &[0u8; 1000]);
        // SAFETY: sends from a live buffer without blocking.
        let n = unsafe {
            libc::send(r.kernels[0].as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT)
        };
        if n < 0 {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0 && sent < 100_000, "{sent} requests queued");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    r.native.stop();
    r.native.stop();
    assert!(t.elapsed() < Duration::from_secs(3), "stop took {:?}", t.elapsed());
}

#[test]
fn an_init_reply_is_held_to_what_the_loop_can_read() {
    let r = rig();
    let init = request(opcode::INIT, 60, &[0u8; 64]);
    passes_through(&r.kernels[0], &r.python, &init);
    let mut reply = out_header(OUT_HEADER + 64, 0, 60).to_vec();
    reply.resize(OUT_HEADER + 64, 0);
    reply[OUT_HEADER + 20..OUT_HEADER + 24].copy_from_slice(&(4u32 << 20).to_ne_bytes());
    reply[OUT_HEADER + 12..OUT_HEADER + 16].copy_from_slice(&(1u32 << 22).to_ne_bytes());
    reply[OUT_HEADER + 28..OUT_HEADER + 30].copy_from_slice(&1024u16.to_ne_bytes());
    send(&r.python, &reply);
    let got = next(&r.kernels[0], 5000).expect("INIT reply");
    let max_write =
        u32::from_ne_bytes(got[OUT_HEADER + 20..OUT_HEADER + 24].try_into().expect("4"));
    assert_eq!(max_write as usize, SMALL - 4096, "lowered to fit the loop's buffers");
    let max_pages =
        u16::from_ne_bytes(got[OUT_HEADER + 28..OUT_HEADER + 30].try_into().expect("2"));
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    assert_eq!(max_pages as usize, (SMALL - 4096) / page, "a READ's reply fits one message");
    assert_eq!(got[..OUT_HEADER + 20], reply[..OUT_HEADER + 20], "the rest is untouched");
}

#[test]
fn a_notification_the_kernel_holds_up_does_not_hold_up_replies() {
    let r = rig();
    passes_through(&r.kernels[1], &r.python, &request(1, 70, b"d\0"));
    // Device 0 takes no more (as the kernel does while an invalidation waits for a lock
    // held by a request in flight): notifications to it pile up and block their writer.
    let notice: Vec<u8> =
        out_header(OUT_HEADER + 8, 3, 0).iter().chain(&[0u8; 8]).copied().collect();
    for _ in 0..30 {
        send(&r.python, &notice);
    }
    send(&r.python, &out_header(OUT_HEADER, 0, 70));
    assert_eq!(next(&r.kernels[1], 5000).expect("reply 70"), out_header(OUT_HEADER, 0, 70));
}

#[test]
fn a_registered_handle_is_flushed_here_and_any_other_goes_to_python() {
    let r = rig();
    let flush = |unique: u64, fh: u64| {
        let mut body = fh.to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]); // unused, padding, lock_owner
        request(opcode::FLUSH, unique, &body)
    };
    send(&r.kernels[1], &flush(30, 7));
    let reply = next(&r.kernels[1], 5000).expect("a reply");
    assert_eq!(reply, out_header(OUT_HEADER, 0, 30).to_vec());
    assert!(next(&r.python, 100).is_none(), "a registered handle's FLUSH stays here");
    // A handle the loop does not know (a write handle, say) is the Python side's to flush.
    passes_through(&r.kernels[0], &r.python, &flush(31, 8));
    let st = r.native.stats();
    assert_eq!((st.flushes, st.forwarded), (1, 1));
}

fn open_req(unique: u64, inode: u64, flags: i32) -> Vec<u8> {
    let mut body = (flags as u32).to_ne_bytes().to_vec();
    body.extend_from_slice(&[0u8; 4]); // open_flags
    request_on(opcode::OPEN, unique, inode, &body)
}

fn release_req(unique: u64, inode: u64, fh: u64) -> Vec<u8> {
    let mut body = fh.to_ne_bytes().to_vec();
    body.extend_from_slice(&[0u8; 16]); // flags, release_flags, lock_owner
    request_on(opcode::RELEASE, unique, inode, &body)
}

/// The handle an OPEN reply carries, after checking its header and flags.
fn opened(reply: &[u8], unique: u64, keep: bool) -> u64 {
    let fh = u64::from_ne_bytes(reply[OUT_HEADER..OUT_HEADER + 8].try_into().expect("fh"));
    let flags = if keep { FOPEN_KEEP_CACHE } else { 0 };
    assert_eq!(reply, open_reply(unique, fh, flags).to_vec());
    fh
}

#[test]
fn an_offered_inode_opens_reads_and_closes_here_until_withdrawn() {
    let r = rig();
    let chunk = |offset, size| ChunkSpec { offset, size, modified_ts_ns: 1, whole: false };
    let route = |key| {
        Some(Route {
            sidecar: r._server.addr.clone(),
            volume: 1,
            key,
            cookie: COOKIE,
            jwt: String::new(),
        })
    };
    let file =
        NativeFile::new(vec![(chunk(0, 5000), route(1)), (chunk(8192, 5000), route(2))], 16384)
            .expect("plans");
    r.native.opens().offer(20, file, false, None);
    let (k, py) = (&r.kernels[0], &r.python);
    // Anything that could write, and any inode not offered, is the Python side's.
    for (unique, inode, flags) in
        [(40, 20, libc::O_RDWR), (42, 20, libc::O_RDONLY | libc::O_TRUNC), (44, 21, 0)]
    {
        passes_through(k, py, &open_req(unique, inode, flags));
    }
    send(k, &open_req(46, 20, libc::O_RDONLY | libc::O_CLOEXEC));
    let a = opened(&next(k, 5000).expect("opened"), 46, false);
    send(k, &open_req(48, 20, libc::O_RDONLY));
    let b = opened(&next(k, 5000).expect("opened"), 48, true);
    assert!(a != b && a & super::NATIVE_FH != 0);
    // A handle opened here reads here, every byte.
    send(k, &read_req(50, a, 0, 16384));
    let reply = next(k, 5000).expect("read");
    assert_eq!(&reply[OUT_HEADER..], &expected_file()[..]);
    send(k, &release_req(52, 20, a));
    assert_eq!(next(k, 5000).expect("released"), out_header(OUT_HEADER, 0, 52).to_vec());
    assert!(next(py, 100).is_none(), "none of that reached Python");
    // Withdrawn: b is the Python side's now; its RELEASE and new OPENs go there.
    assert_eq!(r.native.opens().withdraw(20), vec![b]);
    passes_through(k, py, &open_req(54, 20, 0));
    passes_through(k, py, &release_req(56, 20, b));
    passes_through(k, py, &read_req(58, a, 0, 100)); // a is gone: not registered
    let st = r.native.stats();
    assert_eq!((st.opens, st.releases, st.reads), (2, 1, 1));
}

/// Runs INIT through the loop with libfuse answering protocol 7.`minor`.
fn init(r: &Rig, minor: u32) {
    passes_through(&r.kernels[0], &r.python, &request(opcode::INIT, 80, &[0u8; 64]));
    let mut reply = out_header(OUT_HEADER + 64, 0, 80).to_vec();
    reply.resize(OUT_HEADER + 64, 0);
    reply[OUT_HEADER..OUT_HEADER + 4].copy_from_slice(&7u32.to_ne_bytes());
    reply[OUT_HEADER + 4..OUT_HEADER + 8].copy_from_slice(&minor.to_ne_bytes());
    send(&r.python, &reply);
    assert!(next(&r.kernels[0], 5000).is_some(), "INIT reply");
}

#[test]
fn a_named_offer_answers_lookups_here_until_withdrawn() {
    let r = rig();
    let file = |size| {
        let spec = ChunkSpec { offset: 0, size, modified_ts_ns: 1, whole: false };
        NativeFile::new(vec![(spec, None)], size).expect("plans")
    };
    let attr = Attr { size: 5000, mode: 0o100644, nlink: 1, ..Attr::default() };
    let named = Named {
        parent: 3,
        name: (*b"f.bin").into(),
        attr,
        entry_valid: Duration::from_secs(60),
        attr_valid: Duration::from_secs(60),
    };
    r.native.opens().offer(20, file(5000), true, Some(named));
    let (k, py) = (&r.kernels[1], &r.python);
    let lookup = |unique, parent, name: &[u8]| request_on(opcode::LOOKUP, unique, parent, name);
    // Before INIT said which protocol runs, every LOOKUP is the Python side's.
    passes_through(k, py, &lookup(90, 3, b"f.bin\0"));
    init(&r, 31);
    send(k, &lookup(92, 3, b"f.bin\0"));
    let reply = next(k, 5000).expect("answered here");
    assert_eq!(reply.len(), OUT_HEADER + ENTRY_OUT);
    assert_eq!(reply[..OUT_HEADER], out_header(OUT_HEADER + ENTRY_OUT, 0, 92));
    let at = |i: usize| u64::from_ne_bytes(reply[i..i + 8].try_into().expect("8"));
    assert_eq!((at(OUT_HEADER), at(OUT_HEADER + 48)), (20, 5000), "inode, size");
    // Other names, other directories and names without their NUL go on to Python.
    passes_through(k, py, &lookup(94, 3, b"g.bin\0"));
    passes_through(k, py, &lookup(96, 4, b"f.bin\0"));
    passes_through(k, py, &lookup(98, 3, b"f.bin"));
    assert_eq!(r.native.opens().take_lookups(20), 1, "the kernel holds one reference");
    r.native.opens().withdraw(20);
    passes_through(k, py, &lookup(100, 3, b"f.bin\0"));
    assert_eq!(r.native.opens().take_lookups(20), 0);
    assert_eq!(r.native.stats().lookups, 1);
    // IOCTLs are refused here as libfuse refuses them for pyfuse3.
    send(k, &request_on(opcode::IOCTL, 102, 20, &[0u8; 32]));
    assert_eq!(next(k, 5000).expect("refused"), out_header(OUT_HEADER, -libc::ENOSYS, 102));
    assert!(next(py, 100).is_none(), "nothing reached Python");
    assert_eq!(r.native.stats().ioctls, 1);
}
