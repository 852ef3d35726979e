//! The engine over verbs against the real sidecar on a real RDMA device (soft-RoCE or
//! hardware), serving needles a real SeaweedFS wrote. Run with
//! `SEAWEED_RDMA_DEVICE=rxe0 cargo test engine::verbs -- --ignored --test-threads 1`.

use std::time::Duration;

use crate::engine::e2e::{range, whole, RealSidecar};
use crate::engine::{Engine, EngineConfig, Failure, Transport};
use crate::testutil::{Cluster, Rng, Upload};

/// A queue pair connects in milliseconds on hardware, but under qemu's TCG on a loaded
/// 2-core host the handshake has taken over the default second: these tests are about
/// what the connection carries, not how fast it comes up.
const DEVICE_CONNECT: Duration = Duration::from_secs(30);

/// The sidecar's device: `SEAWEED_RDMA_SIDECAR_DEVICE` when set (the guest puts the sidecar
/// on the other end of a veth pair, so every byte crosses a link), else the engine's.
fn sidecar_device() -> String {
    std::env::var("SEAWEED_RDMA_SIDECAR_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| std::env::var(super::DEVICE_ENV).ok())
        .unwrap_or_default()
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware) and the weed binary; optionally set SEAWEED_RDMA_DEVICE"]
fn engine_reads_byte_exact_over_verbs_from_the_real_sidecar() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(41);
    let plain = Upload { name: "blob.bin", mime: None, gzip: false };
    let mut needles = Vec::new();
    for size in [1usize, 4000, 70_000, 900_000] {
        let data = rng.bytes(size);
        needles.push((cluster.put(None, &data, plain), data));
    }
    let big = rng.bytes(300_000);
    let big_fid = cluster.put(None, &big, plain);
    let device = sidecar_device();
    let mut args = vec!["--transport", "verbs", "--max-read", "1048576"];
    if !device.is_empty() {
        args.extend(["--rdma-device", device.as_str()]);
    }
    let sidecar = RealSidecar::start(cluster.volume_dir(), &args);
    let addr = sidecar.addr();
    let cfg = EngineConfig {
        timeout: Duration::from_secs(10),
        transport: Transport::Verbs,
        // Small slots and few of them: slots are reused many times, and a whole needle
        // larger than a slot must fail with a reason to fall back.
        verbs_slot_size: 256 * 1024,
        verbs_slots: 4,
        connect_timeout: DEVICE_CONNECT,
        ..EngineConfig::default()
    };
    let engine = Engine::new(cfg).expect("engine");

    // Ranged reads, more than there are slots, in one batch.
    let mut ops = Vec::new();
    let mut at = 0usize;
    for _ in 0..3 {
        for (fid, data) in &needles {
            let len = data.len().min(200_000) as u32;
            ops.push(range(&addr, *fid, 0, len, at));
            at += len as usize;
        }
    }
    let mut buf = vec![0u8; at];
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    for (op, (_, data)) in ops.iter().zip(needles.iter().cycle()) {
        assert_eq!(&buf[op.buf_offset..op.buf_offset + op.len as usize], &data[..op.len as usize]);
    }

    // Whole needles: within a slot they come back exact; larger ones say "use another way".
    let ops = [whole(&addr, needles[2].0), whole(&addr, big_fid), whole(&addr, needles[3].0)];
    let out = engine.read_whole(&ops);
    assert_eq!(out[0].as_ref().expect("fits a slot").data, needles[2].1);
    assert!(matches!(&out[1], Err(Failure::Verbs(_))), "{:?}", out[1]);
    assert!(matches!(&out[2], Err(Failure::Verbs(_))), "{:?}", out[2]);

    let health = engine.health();
    assert_eq!(health[0].transport, "verbs", "{health:?}");
    let stats = engine.stats();
    assert_eq!(stats.bytes_by_transport["verbs"], stats.bytes, "{stats:?}");
    assert_eq!(stats.bytes_by_transport["tcp"], 0, "{stats:?}");
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware); optionally set SEAWEED_RDMA_DEVICE"]
fn each_connection_registers_and_announces_a_pool_of_its_own() {
    let host =
        std::sync::Arc::new(super::Host::open(64 * 1024, 4, 64 << 20).expect("an RDMA device"));
    let a = host.prepare(16).expect("first connection");
    let b = host.prepare(2).expect("second connection");
    let (pa, pb) = (a.remote(), b.remote());
    assert_eq!(pa.slot_count, 4, "capped at verbs_slots");
    assert_eq!(pb.slot_count, 2, "one slot per READ asked for");
    assert_ne!(pa.rkey, pb.rkey, "one registration per connection");
    assert!(pa.addr + pa.len <= pb.addr || pb.addr + pb.len <= pa.addr, "{pa:?} {pb:?}");
    let announced = crate::verbs::ClientExchange::decode(&a.exchange()).expect("exchange");
    assert_eq!(announced.pool, pa, "a connection announces its own pool");
    let registered = || host.registered.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(registered(), 6 * 64 * 1024, "both pools count against memlock");
    drop(a);
    assert_eq!(registered(), 2 * 64 * 1024, "a dropped connection's pool is returned");
}

/// A cluster with needles of these sizes, and a verbs sidecar (with `/stats`) serving it.
fn verbs_setup(
    seed: u64,
    sizes: &[usize],
) -> (Cluster, Vec<(crate::fid::FileId, Vec<u8>)>, RealSidecar) {
    let cluster = Cluster::start();
    let mut rng = Rng::new(seed);
    let plain = Upload { name: "blob.bin", mime: None, gzip: false };
    let needles = sizes
        .iter()
        .map(|&size| {
            let data = rng.bytes(size);
            (cluster.put(None, &data, plain), data)
        })
        .collect();
    let device = sidecar_device();
    let mut args = vec!["--transport", "verbs", "--max-read", "1048576", "--http", "127.0.0.1:0"];
    if !device.is_empty() {
        args.extend(["--rdma-device", device.as_str()]);
    }
    let sidecar = RealSidecar::start(cluster.volume_dir(), &args);
    (cluster, needles, sidecar)
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware) and the weed binary; optionally set SEAWEED_RDMA_DEVICE"]
fn small_batches_take_the_lane_over_verbs_and_count_as_verbs_on_both_ends() {
    let (_cluster, needles, sidecar) = verbs_setup(43, &[1, 4000, 70_000, 200_000]);
    let addr = sidecar.addr();
    let mut total = 0u64;
    for transport in [Transport::Auto, Transport::Verbs] {
        let cfg = EngineConfig {
            timeout: Duration::from_secs(10),
            transport,
            verbs_slot_size: 256 * 1024,
            verbs_slots: 4,
            connect_timeout: DEVICE_CONNECT,
            ..EngineConfig::default()
        };
        let engine = Engine::new(cfg).expect("engine");
        for _ in 0..3 {
            // At most LANE_MAX_OPS small ops for one sidecar: the lane takes them.
            let mut ops = Vec::new();
            let mut at = 0usize;
            for (fid, data) in &needles {
                ops.push(range(&addr, *fid, 0, data.len() as u32, at));
                at += data.len();
            }
            let mut buf = vec![0u8; at];
            let out = engine.read_into(&mut buf, &ops);
            assert!(out.iter().all(Result::is_ok), "{transport:?}: {out:?}");
            for (op, (_, data)) in ops.iter().zip(&needles) {
                assert_eq!(&buf[op.buf_offset..op.buf_offset + op.len as usize], &data[..]);
            }
        }
        let out = engine.read_whole(&[whole(&addr, needles[1].0), whole(&addr, needles[3].0)]);
        assert_eq!(out[0].as_ref().expect("whole").data, needles[1].1);
        assert_eq!(out[1].as_ref().expect("whole").data, needles[3].1);
        let stats = engine.stats();
        assert_eq!(stats.lane_batches, 4, "{transport:?}: every batch took the lane: {stats:?}");
        assert_eq!(stats.bytes_by_transport["verbs"], stats.bytes, "{stats:?}");
        assert_eq!(stats.bytes_by_transport["tcp"], 0, "{stats:?}");
        assert_eq!(engine.health()[0].transport, "verbs");
        total += stats.bytes;
    }
    let json = sidecar.stats();
    assert_eq!(json["transports"]["verbs"]["bytes"], total, "{json}");
    assert_eq!(json["transports"]["tcp"]["bytes"], 0, "{json}");
}

/// A TCP proxy in front of the sidecar that makes a timed-out READ's write land late, at
/// the worst moment: it holds the first READ frame it sees (READ A) for `hold` while it
/// forwards later requests at once, and on that connection it delivers no DATA frame until
/// A's has gone by. So a READ sent meanwhile is written first, A's write lands after it, and
/// only then does that READ's answer reach the engine: had A's slot been handed out again,
/// the engine would copy A's bytes as that READ's.
struct HoldFirstRead {
    addr: String,
}

/// One proxied connection's state: the id of the held READ whose DATA frame the
/// sidecar-to-client direction waits for.
type Awaited = std::sync::Arc<std::sync::Mutex<Option<u32>>>;

impl HoldFirstRead {
    fn start(upstream: String, hold: Duration) -> HoldFirstRead {
        use std::net::TcpListener;
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let held = Arc::new(AtomicBool::new(false));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { return };
                let awaited: Awaited = Arc::new(Mutex::new(None));
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
                let to_client = awaited.clone();
                std::thread::spawn(move || Self::answers(s2, c2, &to_client));
                let held = held.clone();
                std::thread::spawn(move || Self::requests(client, server, &held, &awaited, hold));
            }
        });
        HoldFirstRead { addr }
    }

    fn requests(
        mut client: std::net::TcpStream,
        server: std::net::TcpStream,
        held: &std::sync::atomic::AtomicBool,
        awaited: &Awaited,
        hold: Duration,
    ) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let server = Arc::new(Mutex::new(server));
        let send = |server: &Mutex<std::net::TcpStream>, bytes: &[u8]| {
            server.lock().is_ok_and(|mut s| s.write_all(bytes).is_ok())
        };
        let mut hello = [0u8; crate::proto::HELLO_LEN];
        if client.read_exact(&mut hello).is_err() || !send(&server, &hello) {
            return;
        }
        let Ok(hello) = crate::proto::Hello::decode(&hello) else { return };
        if hello.transports & crate::proto::TRANSPORT_VERBS != 0 {
            let mut exchange = [0u8; crate::verbs::exchange::CLIENT_EXCHANGE_LEN];
            if client.read_exact(&mut exchange).is_err() || !send(&server, &exchange) {
                return;
            }
        }
        loop {
            let mut raw = [0u8; crate::proto::FRAME_HEADER_LEN];
            if client.read_exact(&mut raw).is_err() {
                break;
            }
            let Ok(header) = crate::proto::FrameHeader::decode(&raw, 1 << 20) else { break };
            let mut frame = raw.to_vec();
            frame.resize(raw.len() + header.body_len as usize, 0);
            if client.read_exact(&mut frame[raw.len()..]).is_err() {
                break;
            }
            if header.kind == crate::proto::Kind::Read && !held.swap(true, Ordering::SeqCst) {
                if let Ok(mut id) = awaited.lock() {
                    *id = Some(header.request_id);
                }
                let server = server.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(hold);
                    send(&server, &frame);
                });
                continue;
            }
            if !send(&server, &frame) {
                break;
            }
        }
        // The held READ still goes out after `hold`; the sidecar sees the end of the stream
        // when both this thread and that one have let go of the socket.
    }

    fn answers(
        mut server: std::net::TcpStream,
        mut client: std::net::TcpStream,
        awaited: &Awaited,
    ) {
        use std::io::{Read, Write};
        let mut ack = [0u8; crate::proto::HELLO_ACK_LEN];
        if server.read_exact(&mut ack).is_err() || client.write_all(&ack).is_err() {
            return;
        }
        let Ok(ack) = crate::proto::HelloAck::decode(&ack) else { return };
        if ack.transport == crate::proto::TRANSPORT_VERBS {
            let mut endpoint = [0u8; crate::verbs::exchange::ENDPOINT_LEN];
            if server.read_exact(&mut endpoint).is_err() || client.write_all(&endpoint).is_err() {
                return;
            }
        }
        let mut behind = Vec::new();
        loop {
            let mut raw = [0u8; crate::proto::FRAME_HEADER_LEN];
            if server.read_exact(&mut raw).is_err() {
                break;
            }
            let Ok(header) = crate::proto::FrameHeader::decode(&raw, 1 << 22) else { break };
            let mut frame = raw.to_vec();
            frame.resize(raw.len() + header.body_len as usize, 0);
            if server.read_exact(&mut frame[raw.len()..]).is_err() {
                break;
            }
            let mut awaited = match awaited.lock() {
                Ok(awaited) => awaited,
                Err(_) => break,
            };
            match *awaited {
                Some(id) if id != header.request_id => {
                    behind.extend_from_slice(&frame);
                    continue;
                }
                Some(_) => {
                    *awaited = None;
                    frame.extend_from_slice(&behind);
                    behind.clear();
                }
                None => {}
            }
            drop(awaited);
            if client.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware) and the weed binary; optionally set SEAWEED_RDMA_DEVICE"]
fn a_late_write_for_a_timed_out_read_never_lands_in_a_later_reads_slot() {
    let (_cluster, needles, sidecar) = verbs_setup(47, &[900_000, 4000, 60_000, 200_000]);
    for lane in [false, true] {
        // The first batch also connects: under emulation, with the sidecar on another
        // device, the handshake alone can take a second or more, so the deadline leaves
        // room for it and the hold outlasts the deadline.
        let proxy = HoldFirstRead::start(sidecar.addr(), Duration::from_millis(7000));
        let addr = proxy.addr.clone();
        let cfg = EngineConfig {
            timeout: Duration::from_millis(5000),
            connect_timeout: Duration::from_millis(5000),
            transport: Transport::Verbs,
            conns_per_sidecar: 1,
            // The timeout marks the sidecar down; the next batch may probe it at once.
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            verbs_slot_size: 1 << 20,
            // Two slots: a timed-out READ's slot would be the next one handed out, were it
            // freed with the batch.
            verbs_slots: 2,
            ..EngineConfig::default()
        };
        let engine = Engine::new(cfg).expect("engine");
        let engine = if lane { engine } else { engine.without_lane() };
        let (big_fid, big) = &needles[0];
        let mut buf = vec![0u8; big.len()];
        let out = engine.read_into(&mut buf, &[range(&addr, *big_fid, 0, big.len() as u32, 0)]);
        assert_eq!(out, vec![Err(Failure::Timeout)], "lane {lane}: the held READ gives up");
        // The held READ is released while these run; its 900 KB write lands meanwhile.
        for round in 0..12 {
            // Past the 1 ms back-off a timeout started, so no read fails as "down".
            std::thread::sleep(Duration::from_millis(5));
            let mut ops = Vec::new();
            let mut at = 0usize;
            for (fid, data) in &needles[1..] {
                ops.push(range(&addr, *fid, 0, data.len() as u32, at));
                at += data.len();
            }
            let mut buf = vec![0u8; at];
            let out = engine.read_into(&mut buf, &ops);
            for ((op, (_, data)), result) in ops.iter().zip(&needles[1..]).zip(&out) {
                match result {
                    Ok(()) => assert!(
                        buf[op.buf_offset..op.buf_offset + op.len as usize] == data[..],
                        "lane {lane}, round {round}: a read delivered bytes that are not its own"
                    ),
                    // Answers wait behind the held READ's, so these may time out too.
                    Err(Failure::Timeout) if round < 2 => {}
                    Err(why) => panic!("lane {lane}, round {round}: {why:?}"),
                }
            }
        }
        let stats = engine.stats();
        assert_eq!(stats.bytes_by_transport["verbs"], stats.bytes, "{stats:?}");
    }
}

/// Pages this process has pinned (`VmPin` in /proc/self/status), in bytes.
fn vm_pin() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware) and the weed binary; optionally set SEAWEED_RDMA_DEVICE"]
fn sixteen_sidecars_over_verbs_pin_at_most_the_budget() {
    const BUDGET: u64 = 64 << 20;
    const SIDECARS: usize = 16;
    let (cluster, needles, first) = verbs_setup(47, &[4000, 70_000, 300_000, 900_000]);
    let device = sidecar_device();
    // Small staging: the guest has a few GiB, and each sidecar pins its staging pool.
    let mut args = vec!["--transport", "verbs", "--max-read", "1048576", "--staging-mib", "8"];
    if !device.is_empty() {
        args.extend(["--rdma-device", device.as_str()]);
    }
    let mut sidecars = vec![first];
    while sidecars.len() < SIDECARS {
        sidecars.push(RealSidecar::start(cluster.volume_dir(), &args));
    }
    // The sidecars run in this process and pin their staging pools: count the engine's
    // pins from here on.
    let before = vm_pin();
    // A Client's defaults: 16 slots of 1 MiB + 4 KiB per connection, two async
    // connections per sidecar plus lane connections.
    let cfg = EngineConfig {
        timeout: Duration::from_secs(20),
        transport: Transport::Auto,
        verbs_slot_size: (1 << 20) + 4096,
        verbs_slots: 16,
        max_inflight: 16,
        pinned_budget: BUDGET,
        connect_timeout: DEVICE_CONNECT,
        ..EngineConfig::default()
    };
    let engine = Engine::new(cfg).expect("engine");
    for used in [2, 4, 8, 16] {
        // One batch over the first `used` sidecars (async path), then a small one on each
        // (lane path).
        let mut ops = Vec::new();
        let mut at = 0usize;
        for sidecar in &sidecars[..used] {
            for (fid, data) in &needles {
                ops.push(range(&sidecar.addr(), *fid, 0, data.len() as u32, at));
                at += data.len();
            }
        }
        let mut buf = vec![0u8; at];
        let out = engine.read_into(&mut buf, &ops);
        assert!(out.iter().all(Result::is_ok), "{used} sidecars: {out:?}");
        for (op, (_, data)) in ops.iter().zip(needles.iter().cycle()) {
            assert_eq!(&buf[op.buf_offset..op.buf_offset + op.len as usize], &data[..]);
        }
        for sidecar in &sidecars[..used] {
            let (fid, data) = &needles[0];
            let mut small = vec![0u8; data.len()];
            let out = engine.read_into(&mut small, &[range(&sidecar.addr(), *fid, 0, 4000, 0)]);
            assert!(out.iter().all(Result::is_ok), "{out:?}");
            assert_eq!(&small, data);
        }
        let stats = engine.stats();
        let pinned = vm_pin().saturating_sub(before);
        eprintln!(
            "{used} sidecars: VmPin +{} KiB, engine pinned {} KiB of {} KiB, {} pools, \
             verbs bytes {} of {}",
            pinned >> 10,
            stats.pinned_bytes >> 10,
            stats.pinned_budget >> 10,
            stats.pinned_leases,
            stats.bytes_by_transport["verbs"],
            stats.bytes
        );
        assert!(stats.pinned_budget <= BUDGET, "{stats:?}");
        assert!(stats.pinned_bytes <= stats.pinned_budget, "{stats:?}");
        assert!(pinned <= BUDGET, "VmPin grew by {pinned} bytes with {used} sidecars");
        assert!(stats.bytes_by_transport["verbs"] > 0, "{stats:?}");
    }
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware); optionally set SEAWEED_RDMA_DEVICE"]
fn connections_lease_disjoint_slices_of_one_budget_and_a_held_one_takes_no_other() {
    const SLOT: u32 = 64 * 1024;
    // Eight slots in all.
    let host = std::sync::Arc::new(
        super::Host::open(SLOT, 16, 8 * u64::from(SLOT)).expect("an RDMA device"),
    );
    let before = vm_pin();
    // A connection that asks for 16 gets at most an eighth of what is free (at least one):
    // eight connections of one slot each.
    let stuck = host.prepare(16).expect("first connection");
    let others: Vec<_> = (0..7).map(|_| host.prepare(16).expect("a later connection")).collect();
    let counts: Vec<u32> =
        std::iter::once(&stuck).chain(&others).map(|p| p.remote().slot_count).collect();
    assert_eq!(counts, [1; 8], "each gets at most an eighth of what is free");
    // Each its own registration over its own slice.
    let pools: Vec<_> = std::iter::once(&stuck).chain(&others).map(|p| p.remote()).collect();
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            assert_ne!(a.rkey, b.rkey);
            assert!(a.addr + a.len <= b.addr || b.addr + b.len <= a.addr, "{a:?} {b:?}");
        }
    }
    let (registered, budget, leases) = host.pinned();
    assert_eq!((registered, budget, leases), (8 * u64::from(SLOT), 8 * u64::from(SLOT), 8));
    assert!(!host.has_room());
    let full = host.prepare(1).expect_err("the budget is all leased");
    assert!(full.to_string().contains("pinned_budget"), "{full}");
    let pinned = vm_pin().saturating_sub(before);
    assert!(pinned <= 8 * u64::from(SLOT), "VmPin grew by {pinned}");
    // The stuck connection keeps its own slots only; when another goes, its slot is free
    // for a new connection, and the stuck one's are not touched.
    drop(others);
    let again = host.prepare(16).expect("room again");
    assert_eq!(again.remote().slot_count, 1);
    assert_eq!(host.pinned().0, 2 * u64::from(SLOT));
    drop(stuck);
    assert_eq!(host.pinned().0, u64::from(SLOT));
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware) and the weed binary; optionally set SEAWEED_RDMA_DEVICE"]
fn a_full_budget_takes_slices_back_from_idle_connections_of_other_sidecars() {
    const SLOT: u32 = 256 * 1024;
    // A budget of N slots: with so few free, every connection gets one, so N connections
    // fill it.
    const N: usize = 4;
    let (cluster, needles, first) = verbs_setup(53, &[4000, 70_000, 200_000]);
    let device = sidecar_device();
    let mut args = vec!["--transport", "verbs", "--max-read", "1048576", "--staging-mib", "8"];
    args.extend(["--http", "127.0.0.1:0"]);
    if !device.is_empty() {
        args.extend(["--rdma-device", device.as_str()]);
    }
    let mut sidecars = vec![first];
    while sidecars.len() < 2 * N {
        sidecars.push(RealSidecar::start(cluster.volume_dir(), &args));
    }
    // `verbs`, not `auto`: a connection that found no room would fail, not slip to tcp.
    let cfg = EngineConfig {
        timeout: Duration::from_secs(20),
        transport: Transport::Verbs,
        verbs_slot_size: SLOT,
        verbs_slots: 4,
        conns_per_sidecar: 1,
        pinned_budget: N as u64 * u64::from(SLOT),
        connect_timeout: DEVICE_CONNECT,
        ..EngineConfig::default()
    };
    let engine = Engine::new(cfg).expect("engine");
    let small = |addr: &str| {
        let (fid, data) = &needles[1];
        let mut buf = vec![0u8; data.len()];
        let out = engine.read_into(&mut buf, &[range(addr, *fid, 0, data.len() as u32, 0)]);
        assert!(out.iter().all(Result::is_ok), "{addr}: {out:?}");
        assert_eq!(&buf, data);
    };
    let check = |what: &str| {
        let stats = engine.stats();
        eprintln!(
            "{what}: pinned {} of {} bytes, {} pools, {} open, pinned_evicted {}, evicted {}",
            stats.pinned_bytes,
            stats.pinned_budget,
            stats.pinned_leases,
            stats.open_conns,
            stats.pinned_evicted,
            stats.evicted
        );
        assert_eq!(stats.pinned_budget, N as u64 * u64::from(SLOT), "{stats:?}");
        assert!(stats.pinned_bytes <= stats.pinned_budget, "{what}: {stats:?}");
        assert_eq!(stats.bytes_by_transport["tcp"], 0, "{what}: {stats:?}");
        assert_eq!(stats.evicted, 0, "{what}: max_conns is far: {stats:?}");
        stats
    };
    // N sidecars, one lane connection each: the budget is full; then they go idle.
    for sidecar in &sidecars[..N] {
        small(&sidecar.addr());
    }
    let stats = check("first N");
    assert_eq!((stats.pinned_bytes, stats.pinned_evicted), (stats.pinned_budget, 0), "{stats:?}");
    // N others: each new connection closes the least recently used idle one for its slice.
    for sidecar in &sidecars[N..] {
        small(&sidecar.addr());
    }
    let stats = check("next N");
    assert_eq!(stats.pinned_evicted, N as u64, "one slice taken back per new sidecar: {stats:?}");
    assert_eq!(stats.pinned_leases, 2 * N as u64, "{stats:?}");
    assert_eq!(stats.open_conns, N, "{stats:?}");
    // The async path makes room the same way: more ops than the lane takes, for the first
    // sidecar again (its lane connection was closed above).
    let addr = sidecars[0].addr();
    let mut ops = Vec::new();
    let mut at = 0usize;
    for (fid, data) in needles.iter().cycle().take(crate::engine::lane::LANE_MAX_OPS + 1) {
        ops.push(range(&addr, *fid, 0, data.len() as u32, at));
        at += data.len();
    }
    let mut buf = vec![0u8; at];
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(Result::is_ok), "async: {out:?}");
    for (op, (_, data)) in ops.iter().zip(needles.iter().cycle()) {
        assert_eq!(&buf[op.buf_offset..op.buf_offset + op.len as usize], &data[..]);
    }
    let stats = check("async");
    assert_eq!(stats.pinned_evicted, N as u64 + 1, "{stats:?}");
    assert_eq!(stats.bytes_by_transport["verbs"], stats.bytes, "{stats:?}");
    // And the sidecars pushed every byte over verbs too.
    let mut pushed = 0;
    for sidecar in &sidecars {
        let json = sidecar.stats();
        assert_eq!(json["transports"]["tcp"]["bytes"], 0, "{json}");
        pushed += json["transports"]["verbs"]["bytes"].as_u64().unwrap_or(0);
    }
    assert_eq!(pushed, stats.bytes, "{stats:?}");
}
