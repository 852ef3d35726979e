//! Clients that hold on to what the sidecar lends them: READs whose answers are never read
//! (staging pinned), HTTP connections that never finish their request header (slowloris)
//! or never read the response. Each may lose its own connection; nobody else may notice.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::fake_volume::FakeVolume;
use super::{closed_by_peer, dir_arg, ranged, Client, TestSidecar};
use crate::fid::FileId;
use crate::proto::Status;

const MIB: usize = 1 << 20;

/// Polls `/stats` until `done` holds for it, for up to `wait`; the last stats either way.
fn stats_until(
    sc: &TestSidecar,
    wait: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + wait;
    loop {
        let stats = sc.stats();
        if done(&stats) || Instant::now() >= deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(stats: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(stats, |v, key| &v[*key]).as_u64().unwrap_or(u64::MAX)
}

#[test]
fn clients_that_never_read_cannot_pin_the_staging_pool() {
    let fid = FileId::new(5, 1, 0x1234_5678);
    let blob: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let volume = FakeVolume::start(&[(fid, blob.clone())]);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_arg(dir.path());
    // 16 slabs of 1 MiB: each connection may hold a quarter of them (the default).
    let sc = TestSidecar::start(&[
        "--dir",
        &path,
        "--volume-server",
        volume.addr(),
        "--max-read",
        "1048576",
        "--staging-mib",
        "16",
        "--write-timeout-secs",
        "3",
    ]);
    assert_eq!(count(&sc.stats(), &["staging", "per_connection"]), 4);

    // Two clients each ask for 64 MiB and read nothing: far more than the kernel's socket
    // buffers take, so the rest waits in staging.
    let mut hogs: Vec<Client> = (0..2).map(|_| sc.connect()).collect();
    for hog in &mut hogs {
        for _ in 0..64 {
            hog.send(&ranged(fid, 0, MIB as u32));
        }
    }
    // Let them fill their sockets and take what staging they can.
    let held = stats_until(&sc, Duration::from_secs(5), |s| count(s, &["staging", "in_use"]) >= 8);
    assert!(count(&held, &["staging", "in_use"]) <= 8, "each holds at most its cap: {held}");

    // Everyone else is still served, from the slabs the hogs cannot take.
    let started = Instant::now();
    let mut other = sc.connect();
    let (head, bytes) = other.read(&ranged(fid, 0, MIB as u32));
    assert_eq!(head.status, Status::Ok, "another client is not BUSY while the hogs hold on");
    assert!(bytes == blob, "the right bytes");
    assert!(started.elapsed() < Duration::from_secs(2), "without waiting for staging");

    // Having taken nothing for --write-timeout-secs, the hogs are closed and their staging
    // comes back.
    let stats = stats_until(&sc, Duration::from_secs(20), |s| {
        count(s, &["connections", "stalled"]) == 2 && count(s, &["staging", "in_use"]) == 0
    });
    assert_eq!(count(&stats, &["connections", "stalled"]), 2, "{stats}");
    assert_eq!(count(&stats, &["staging", "in_use"]), 0, "{stats}");
    assert_eq!(count(&stats, &["connections", "open"]), 1, "only the patient client: {stats}");
    for hog in &mut hogs {
        // What the kernel had buffered can still be read; then the connection ends.
        assert!(closed_by_peer(&mut hog.stream, Duration::from_secs(10)), "hog closed");
    }
    assert!(sc.metrics().contains("seaweed_rdma_sidecar_connections_stalled_total 2\n"));
    let (head, _) = other.read(&ranged(fid, 0, 10));
    assert_eq!(head.status, Status::Ok, "a client that reads its answers keeps its connection");

    // The same over HTTP: pipelined /read requests whose responses are never read.
    let mut http = TcpStream::connect(sc.http().trim_start_matches("http://")).expect("connect");
    let request = format!("GET /read?file_id={fid} HTTP/1.1\r\nHost: sidecar\r\n\r\n");
    for _ in 0..32 {
        http.write_all(request.as_bytes()).expect("send");
    }
    let stats = stats_until(&sc, Duration::from_secs(20), |s| {
        count(s, &["http_connections", "stalled"]) == 1 && count(s, &["staging", "in_use"]) == 0
    });
    assert_eq!(count(&stats, &["http_connections", "stalled"]), 1, "{stats}");
    assert_eq!(count(&stats, &["staging", "in_use"]), 0, "{stats}");
    assert!(closed_by_peer(&mut http, Duration::from_secs(10)), "stalled HTTP client closed");
}

#[test]
fn http_slowloris_and_connection_cap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_arg(dir.path());
    let sc = TestSidecar::start(&[
        "--dir",
        &path,
        "--volume-server",
        "127.0.0.1:9",
        "--http-header-timeout-secs",
        "3",
        "--http-max-connections",
        "8",
    ]);
    let addr = sc.http().trim_start_matches("http://").to_owned();
    let connect = || {
        let stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream
    };
    // A request header that never ends, and a connection that never says anything.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..7)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: sidecar\r\nX-Slow: 1").expect("send");
            s
        })
        .collect();
    slow.push(connect());
    // At the cap, one more is closed on accept, long before any header timeout.
    let mut beyond = connect();
    assert!(closed_by_peer(&mut beyond, Duration::from_secs(2)), "beyond the cap: closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    // One deadline for all of them, so a sidecar that keeps them open fails in 15 s.
    let deadline = started + Duration::from_secs(15);
    for (i, s) in slow.iter_mut().enumerate() {
        let left =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        assert!(closed_by_peer(s, left), "connection {i} closed");
    }
    assert!(started.elapsed() >= Duration::from_secs(3), "not before the header timeout");

    // Slots are free again, and a keep-alive connection left idle is closed the same way.
    let mut idle = connect();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: sidecar\r\n\r\n").expect("send");
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert!(closed_by_peer(&mut idle, Duration::from_secs(15)), "idle keep-alive closed");

    let stats = sc.stats();
    let http = &stats["http_connections"];
    assert!(count(http, &["header_timeouts"]) >= 9, "{stats}");
    assert!(count(http, &["refused"]) >= 1, "{stats}");
    assert_eq!(count(http, &["open"]), 1, "only the /stats request's own: {stats}");
    let metrics = sc.metrics();
    assert!(
        metrics.contains("seaweed_rdma_sidecar_http_connections_refused_total 1\n"),
        "{metrics}"
    );
}
