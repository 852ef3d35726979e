//! The engine over verbs against the real sidecar on a real RDMA device (soft-RoCE or
//! hardware), serving needles a real SeaweedFS wrote. Run with
//! `SEAWEED_RDMA_DEVICE=rxe0 cargo test engine::verbs -- --ignored --test-threads 1`.

use std::time::Duration;

use crate::engine::e2e::{range, RealSidecar};
use crate::engine::{Engine, EngineConfig, Failure, Transport, WholeOp};
use crate::testutil::{Cluster, Rng, Upload};

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
    let device = std::env::var(super::DEVICE_ENV).unwrap_or_default();
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
    let whole = |fid: crate::fid::FileId| WholeOp {
        sidecar: addr.clone(),
        volume: fid.volume,
        key: fid.key,
        cookie: fid.cookie,
        jwt: String::new(),
    };
    let out = engine.read_whole(&[whole(needles[2].0), whole(big_fid), whole(needles[3].0)]);
    assert_eq!(out[0].as_ref().expect("fits a slot").data, needles[2].1);
    assert!(matches!(&out[1], Err(Failure::Verbs(_))), "{:?}", out[1]);
    assert!(matches!(&out[2], Err(Failure::Verbs(_))), "{:?}", out[2]);

    let health = engine.health();
    assert_eq!(health[0].transport, "verbs", "{health:?}");
    let stats = engine.stats();
    assert_eq!(stats.bytes_by_transport["verbs"], stats.bytes, "{stats:?}");
    assert_eq!(stats.bytes_by_transport["tcp"], 0, "{stats:?}");
}
