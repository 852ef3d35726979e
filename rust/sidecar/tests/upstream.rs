//! Needles the sidecar does not hold locally come from the volume server, found directly
//! (`--volume-server`) or through the master (`--master`), and look like local answers.

use std::io::Write;

use super::{dir_arg, ranged, whole, Client, TestSidecar};
use crate::fid::FileId;
use crate::needle::{FLAG_CHUNK_MANIFEST, FLAG_COMPRESSED};
use crate::proto::{DataHeader, Status};
use crate::testutil::{Cluster, Rng, Upload};

/// `(header, bytes)` of the whole needle, with the answer's data_len checked.
fn read_whole(client: &mut Client, fid: FileId) -> (DataHeader, Vec<u8>) {
    let (head, bytes) = client.read(&whole(fid));
    assert_eq!(head.status, Status::Ok, "{fid}");
    (head, bytes)
}

#[test]
fn fetches_what_it_cannot_read_locally() {
    let cluster = Cluster::start();
    let (volume_url, master_url) = (cluster.volume_url(), cluster.master_url());
    let mut rng = Rng::new(3);
    let plain = rng.bytes(5000);
    let big = rng.bytes(1_300_000);
    let mut packed = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    packed.write_all(&b"upstream ".repeat(3000)).expect("gzip");
    let packed = packed.finish().expect("gzip");
    let fids = [
        cluster.put(None, &plain, Upload { name: "a.bin", mime: None, gzip: false }),
        cluster.put(None, &big, Upload { name: "b.bin", mime: None, gzip: false }),
        cluster.put(None, &packed, Upload { name: "c.txt", mime: Some("text/plain"), gzip: true }),
    ];
    let empty = tempfile::tempdir().expect("temp dir");
    let empty = dir_arg(empty.path());
    let local = TestSidecar::start(&[
        "--dir",
        &dir_arg(cluster.volume_dir()),
        "--volume-server",
        volume_url,
    ]);
    let direct = TestSidecar::start(&["--dir", &empty, "--volume-server", volume_url]);
    let via_master = TestSidecar::start(&["--dir", &empty, "--master", master_url]);
    let mut reference = local.connect();

    for sc in [&direct, &via_master] {
        let mut client = sc.connect();
        for fid in fids {
            // Same bytes, flags, size and CRC as the local read of the same needle.
            let (want, want_bytes) = read_whole(&mut reference, fid);
            let (got, got_bytes) = read_whole(&mut client, fid);
            // Over HTTP only the bits a client acts on can be told; the rest describe
            // optional fields (name, mime...) that the answer does not carry anyway.
            let meaningful = FLAG_COMPRESSED | FLAG_CHUNK_MANIFEST;
            let masked =
                |h: DataHeader| DataHeader { needle_flags: h.needle_flags & meaningful, ..h };
            assert_eq!((masked(got), got_bytes.len()), (masked(want), want_bytes.len()), "{fid}");
            assert!(got_bytes == want_bytes, "{fid}: bytes differ");
            let n = want_bytes.len() as u64;
            for (offset, len) in [(7, 1000), (n - 3, 50), (n + 1, 10)] {
                let (head, bytes) = client.read(&ranged(fid, offset, len));
                assert_eq!(head.status, Status::Ok, "{fid} [{offset}+{len}]");
                let (start, end) =
                    (offset.min(n) as usize, (offset + u64::from(len)).min(n) as usize);
                assert!(bytes == want_bytes[start..end], "{fid} [{offset}+{len}]");
                assert_eq!(head.needle_size, want.needle_size, "{fid} [{offset}+{len}] size");
            }
        }
        let fid = fids[0];
        let (head, _) = client.read(&whole(FileId { cookie: fid.cookie ^ 1, ..fid }));
        assert_eq!(head.status, Status::NotFound, "wrong cookie upstream");
        let (head, _) = client.read(&whole(FileId::new(999, 1, 1)));
        assert_eq!(head.status, Status::NotFound, "volume nobody has");
    }

    let url = format!("{}/read?file_id={}&size=100", direct.http(), fids[0]);
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut response = agent.get(&url).call().expect("HTTP /read");
    assert_eq!(
        response.headers().get("x-source").and_then(|v| v.to_str().ok()),
        Some("rdma-sidecar-upstream")
    );
    assert_eq!(response.body_mut().read_to_vec().expect("body"), &plain[..100]);
    let stats: serde_json::Value = serde_json::from_str(
        &agent
            .get(&format!("{}/stats", direct.http()))
            .call()
            .expect("stats")
            .body_mut()
            .read_to_string()
            .expect("body"),
    )
    .expect("json");
    assert_eq!(stats["sources"]["local"]["reads"], 0, "{stats}");
    assert_eq!(stats["sources"]["upstream"]["reads"], 13, "{stats}");
}
