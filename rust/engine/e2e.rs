//! End to end: the engine against the real sidecar ([`crate::sidecar`]) serving volume
//! files that a real SeaweedFS wrote ([`crate::testutil::Cluster`]).

use std::io::Write;
use std::time::Duration;

use super::*;
use crate::fid::FileId;
use crate::proto::Status;
use crate::sidecar::{Config, Sidecar};
use crate::testutil::{Cluster, Rng, Upload};

/// The real sidecar on its own runtime; stopped on drop.
pub(super) struct RealSidecar {
    rt: tokio::runtime::Runtime,
    sidecar: Option<Sidecar>,
}

impl RealSidecar {
    pub(super) fn start(volume_dir: &std::path::Path, extra: &[&str]) -> RealSidecar {
        let dir = volume_dir.display().to_string();
        // Every needle is local, so the upstream volume server is never asked.
        let mut args = vec!["--dir", &dir, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(&["--volume-server", "http://127.0.0.1:9"]);
        args.extend_from_slice(extra);
        let config = Config::from_args(&args).expect("sidecar arguments");
        // The sidecar's warnings (a local read that failed and went upstream, ...) then show
        // in a failing test's output; the first test to get here installs the logger.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::WARN)
            .with_target(false)
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sidecar = rt.block_on(Sidecar::start(config)).expect("sidecar starts");
        RealSidecar { rt, sidecar: Some(sidecar) }
    }

    pub(super) fn addr(&self) -> String {
        self.sidecar.as_ref().expect("running").listen_addr().to_string()
    }

    /// The sidecar's `/stats` as JSON (it must have been started with `--http`).
    pub(super) fn stats(&self) -> serde_json::Value {
        let http = self.sidecar.as_ref().and_then(Sidecar::http_addr).expect("started with --http");
        let mut response = ureq::get(&format!("http://{http}/stats")).call().expect("GET /stats");
        let body = response.body_mut().read_to_string().expect("stats body");
        serde_json::from_str(&body).expect("stats JSON")
    }
}

impl Drop for RealSidecar {
    fn drop(&mut self) {
        if let Some(sidecar) = self.sidecar.take() {
            self.rt.block_on(sidecar.shutdown());
        }
    }
}

pub(super) fn range(addr: &str, fid: FileId, offset: u64, len: u32, buf_offset: usize) -> RangeOp {
    RangeOp {
        sidecar: addr.to_owned(),
        volume: fid.volume,
        key: fid.key,
        cookie: fid.cookie,
        offset,
        len,
        buf_offset,
        jwt: String::new(),
    }
}

pub(super) fn whole(addr: &str, fid: FileId) -> WholeOp {
    WholeOp {
        sidecar: addr.to_owned(),
        volume: fid.volume,
        key: fid.key,
        cookie: fid.cookie,
        jwt: String::new(),
    }
}

#[test]
fn reads_needles_of_a_real_cluster_through_the_real_sidecar() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(29);
    let plain = Upload { name: "blob.bin", mime: None, gzip: false };
    let mut needles = Vec::new();
    for size in [1usize, 1000, 70_000, 1_500_000] {
        let data = rng.bytes(size);
        needles.push((cluster.put(None, &data, plain), data));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&rng.bytes(5000)).expect("gzip");
    let packed = enc.finish().expect("gzip");
    let gz = cluster.put(None, &packed, Upload { gzip: true, ..plain });
    let sidecar = RealSidecar::start(cluster.volume_dir(), &["--max-read", "1048576"]);
    let addr = sidecar.addr();
    let engine =
        Engine::new(EngineConfig { timeout: Duration::from_secs(10), ..Default::default() })
            .expect("engine");
    assert!(engine.ping(&addr).is_ok());

    // Many ranges of every needle in one batch, pipelined over two connections.
    let mut ops = Vec::new();
    let mut at = 0usize;
    for (fid, data) in &needles {
        let n = data.len() as u64;
        for (offset, len) in [(0, 1), (n / 3, (n / 2).min(1 << 20) as u32), (n - 1, 1)] {
            ops.push(range(&addr, *fid, offset, len, at));
            at += len as usize;
        }
    }
    let mut buf = vec![0u8; at];
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    for (op, (_, data)) in ops.iter().zip(needles.iter().flat_map(|n| [n, n, n])) {
        let want = &data[op.offset as usize..op.offset as usize + op.len as usize];
        assert_eq!(&buf[op.buf_offset..op.buf_offset + op.len as usize], want, "{op:?}");
    }

    // Whole reads come with a CRC that verifies; compressed needles only whole; a needle
    // larger than the granted max_read is refused whole.
    let mut wholes: Vec<WholeOp> = needles.iter().map(|(fid, _)| whole(&addr, *fid)).collect();
    wholes.push(whole(&addr, gz));
    let out = engine.read_whole(&wholes);
    for (i, ((fid, data), got)) in needles.iter().zip(&out).take(3).enumerate() {
        let got = got.as_ref().unwrap_or_else(|why| {
            panic!("whole needle {i} ({fid}): {why:?}; engine {:?}", engine.stats())
        });
        assert!(got.verify() && got.data == *data && got.needle_flags & 0x01 == 0);
    }
    assert_eq!(out[3], Err(Failure::Status(Status::BadRequest)), "1.5 MB > max_read");
    let got = out[4].as_ref().expect("compressed needle");
    assert!(got.verify() && got.data == packed && got.needle_flags & 0x01 != 0);
    let mut small = [0u8; 16];
    let out = engine.read_into(&mut small, &[range(&addr, gz, 0, 16, 0)]);
    assert_eq!(out, vec![Err(Failure::Compressed)]);

    // Needle answers and the granted limits.
    let mut wrong = needles[1].0;
    wrong.cookie ^= 1;
    let out = engine.read_into(&mut buf, &[range(&addr, wrong, 0, 10, 0)]);
    assert_eq!(out, vec![Err(Failure::Status(Status::NotFound))]);
    let mut big = vec![0u8; 2 << 20];
    let out = engine.read_into(&mut big, &[range(&addr, needles[3].0, 0, 2 << 20, 0)]);
    assert!(matches!(out[0], Err(Failure::BadOp(_))), "{out:?}");
    let h = engine.health().pop().expect("one sidecar");
    assert!(h.up && h.server_id.is_some(), "{h:?}");

    // A sidecar that goes away: the connection is lost, then it is marked down.
    drop(sidecar);
    let ops = [range(&addr, needles[0].0, 0, 1, 0)];
    assert!(engine.read_into(&mut small, &ops)[0].is_err());
    assert!(engine.read_into(&mut small, &ops)[0].is_err());
    let out = engine.read_into(&mut small, &ops);
    assert_eq!(out, vec![Err(Failure::Down)], "{:?}", engine.health());
}

#[test]
fn submitted_batches_match_blocking_ones_through_the_real_sidecar() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(31);
    let plain = Upload { name: "blob.bin", mime: None, gzip: false };
    let data = rng.bytes(300_000);
    let fid = cluster.put(None, &data, plain);
    let sidecar = RealSidecar::start(cluster.volume_dir(), &[]);
    let addr = sidecar.addr();
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    // One 4 KiB range (the lane) and a 20-op batch (the async path).
    let one = vec![range(&addr, fid, 12_345, 4096, 0)];
    let many: Vec<RangeOp> =
        (0..20u64).map(|i| range(&addr, fid, i * 14_000, 8000, i as usize * 8192)).collect();
    for ops in [one, many] {
        let mut want = vec![0u8; 20 * 8192];
        let blocking = engine.read_into(&mut want, &ops);
        assert!(blocking.iter().all(std::result::Result::is_ok), "{blocking:?}");
        let ticket = engine.submit_read_into(vec![0u8; want.len()], ops).expect("ticket");
        assert!(ticket.wait(Duration::from_secs(10)));
        assert_eq!(ticket.results(), Some(blocking.as_slice()));
        assert!(ticket.take_buffer().is_some_and(|got| got == want));
    }
    let ticket = engine.submit_read_whole(vec![whole(&addr, fid)]).expect("ticket");
    assert!(ticket.wait(Duration::from_secs(10)));
    let got = ticket.results().and_then(|r| r[0].as_ref().ok()).expect("whole needle");
    assert!(got.verify() && got.data == data);
}
