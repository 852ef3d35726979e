//! Reads from volume files that a real SeaweedFS wrote.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{crc_ok, dir_arg, ranged, whole, Client, TestSidecar};
use crate::fid::FileId;
use crate::needle::FLAG_COMPRESSED;
use crate::proto::{ReadRequest, Status};
use crate::testutil::{Cluster, Rng, Upload};

fn upload(cluster: &Cluster, data: &[u8]) -> FileId {
    cluster.put(None, data, Upload { name: "blob.bin", mime: None, gzip: false })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Ranged and whole reads of every needle, byte-exact against what was uploaded.
fn check_bytes(client: &mut Client, fid: FileId, data: &[u8]) {
    let (head, bytes) = client.read(&whole(fid));
    assert_eq!(head.status, Status::Ok, "{fid} whole");
    assert_eq!(bytes, data, "{fid} whole bytes");
    assert_eq!(head.needle_size as usize, data.len());
    assert!(crc_ok(data, head.crc), "{fid}: stored crc {:#x}", head.crc);
    assert_eq!(head.needle_flags & FLAG_COMPRESSED, 0);
    let n = data.len() as u64;
    for (offset, len) in
        [(0, 10), (n / 3, (n / 2) as u32), (n.saturating_sub(5), 100), (n + 10, 5), (0, 0)]
    {
        let (head, bytes) = client.read(&ranged(fid, offset, len));
        assert_eq!(head.status, Status::Ok, "{fid} [{offset}+{len}]");
        let start = offset.min(n) as usize;
        let end = (offset + u64::from(len)).min(n) as usize;
        assert_eq!(bytes, &data[start..end], "{fid} [{offset}+{len}]");
        assert_eq!(head.data_len as usize, end - start);
    }
}

#[test]
fn serves_local_needles_byte_exact() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let volume_url = cluster.volume_url();
    let dir = dir_arg(cluster.volume_dir());
    // Re-scans so rare that only the refresh on a miss can find a needle written later.
    let sc =
        TestSidecar::start(&["--dir", &dir, "--volume-server", volume_url, "--rescan-secs", "60"]);
    let mut rng = Rng::new(11);
    let mut needles = Vec::new();
    for size in [1usize, 1000, 70_000, 1_500_000, 0] {
        let data = rng.bytes(size);
        needles.push((upload(&cluster, &data), data));
    }
    let mut client = sc.connect();
    for (fid, data) in &needles {
        check_bytes(&mut client, *fid, data);
    }

    // Uploaded after the sidecar has the volume open: found through a refresh on the miss.
    let late = rng.bytes(5000);
    let late_fid = upload(&cluster, &late);
    let (head, bytes) = client.read(&whole(late_fid));
    assert_eq!((head.status, bytes.as_slice()), (Status::Ok, late.as_slice()), "fresh needle");

    let (fid, _) = needles[1];
    let (head, _) = client.read(&whole(FileId { cookie: fid.cookie ^ 1, ..fid }));
    assert_eq!(head.status, Status::NotFound, "wrong cookie");
    let (head, _) = client.read(&whole(FileId { key: fid.key + 10_000, ..fid }));
    assert_eq!(head.status, Status::NotFound, "unknown key");

    // Pipelined: many reads in flight on one connection, answers matched by id.
    let mut expected = std::collections::HashMap::new();
    for (i, (fid, data)) in needles.iter().cycle().take(40).enumerate() {
        let offset = (i * 7) as u64 % (data.len() as u64 + 1);
        let id = client.send(&ranged(*fid, offset, 4096));
        let start = offset as usize;
        expected.insert(id, data[start..(start + 4096).min(data.len())].to_vec());
    }
    for _ in 0..expected.len() {
        let (id, head, bytes) = client.recv();
        assert_eq!(head.status, Status::Ok);
        assert_eq!(Some(&bytes), expected.get(&id), "answer {id}");
    }

    // A needle stored gzip-compressed comes back as stored, flagged, with its CRC.
    let text = b"seaweed ".repeat(4000);
    let packed = gzip(&text);
    let zfid =
        cluster.put(None, &packed, Upload { name: "t.txt", mime: Some("text/plain"), gzip: true });
    let (head, bytes) = client.read(&whole(zfid));
    assert_eq!(head.status, Status::Ok);
    assert_ne!(head.needle_flags & FLAG_COMPRESSED, 0, "compressed flag");
    assert!(crc_ok(&bytes, head.crc), "crc of the stored bytes");
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut unpacked).expect("gunzip");
    assert_eq!(unpacked, text);

    // Deleted: visible once the sidecar re-reads the index (at most --rescan-secs).
    let fast =
        TestSidecar::start(&["--dir", &dir, "--volume-server", volume_url, "--rescan-secs", "0.2"]);
    let mut client = fast.connect();
    cluster.delete(late_fid);
    wait_for_status(&mut client, late_fid, Status::Deleted);

    // Vacuum: the files are replaced and offsets move; every live needle still reads
    // byte-exact, before and after the sidecar re-opens the volume.
    let dat = cluster.volume_dir().join(format!("{}.dat", late_fid.volume));
    let inode = |p: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("dat"))
    };
    let before = inode(&dat);
    cluster.vacuum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while inode(&dat) == before {
        assert!(Instant::now() < deadline, "vacuum never replaced {}", dat.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..2 {
        for (fid, data) in &needles {
            let (head, bytes) = client.read(&whole(*fid));
            assert_eq!(head.status, Status::Ok, "{fid} after vacuum, round {round}");
            assert!(bytes == *data, "{fid} bytes after vacuum, round {round}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Compaction drops the deleted needle from the index altogether.
    wait_for_status(&mut client, late_fid, Status::NotFound);
    client.ping();
    eprintln!("serves_local_needles_byte_exact: {:?}", started.elapsed());
}

#[test]
fn deletes_show_at_once() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let dir = dir_arg(cluster.volume_dir());
    let mut rng = Rng::new(23);
    // Needles in the volumes' maps from the start (and something in every volume, so the
    // sidecar opens them all at start).
    let mut live: Vec<(FileId, Vec<u8>)> = (0..24)
        .map(|_| {
            let size = 1 + rng.below(30_000) as usize;
            let data = rng.bytes(size);
            (upload(&cluster, &data), data)
        })
        .collect();
    // Periodic refreshes so rare that none happens during the test: only the read path
    // can notice a deletion.
    let sc = TestSidecar::start(&[
        "--dir",
        &dir,
        "--volume-server",
        cluster.volume_url(),
        "--rescan-secs",
        "60",
    ]);
    let mut client = sc.connect();
    let delete_and_check = |client: &mut Client, fid: FileId, data: Option<&[u8]>, what: &str| {
        if let Some(data) = data {
            let (head, bytes) = client.read(&whole(fid));
            assert_eq!((head.status, bytes.as_slice()), (Status::Ok, data), "{what}: {fid}");
        }
        cluster.delete(fid);
        for req in [whole(fid), ranged(fid, 0, 1)] {
            let (head, bytes) = client.read(&req);
            assert_eq!(head.status, Status::Deleted, "{what}: {fid} right after its delete");
            assert!(bytes.is_empty());
        }
    };
    // After a vacuum the volume server appends to a new `.idx`; the sidecar must notice
    // deletions there too, though it still holds the old files open. One deletion first,
    // so that this volume, and only this one, has garbage: the master compacts each volume
    // with garbage before it answers, a few seconds each.
    let count = |vid: u32| live.iter().filter(|(f, _)| f.volume == vid).count();
    let vid = live.iter().map(|(f, _)| f.volume).max_by_key(|&v| count(v)).expect("needles");
    let in_vid: Vec<(FileId, Vec<u8>)> =
        live.iter().filter(|(f, _)| f.volume == vid).cloned().collect();
    live.retain(|(f, _)| f.volume != vid);
    assert!(in_vid.len() >= 2, "volume {vid} holds {} needles", in_vid.len());
    delete_and_check(&mut client, in_vid[0].0, Some(&in_vid[0].1), "before vacuum");
    let dat = cluster.volume_dir().join(format!("{vid}.dat"));
    let inode = |p: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("dat"))
    };
    let before = inode(&dat);
    cluster.vacuum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while inode(&dat) == before {
        assert!(Instant::now() < deadline, "vacuum never replaced {}", dat.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // No read in between: the first thing the sidecar hears of the new files is a read
    // of a needle deleted in them.
    delete_and_check(&mut client, in_vid[1].0, None, "first after vacuum");
    for (fid, data) in &in_vid[2..] {
        delete_and_check(&mut client, *fid, Some(data), "after vacuum");
    }

    for round in 0..20 {
        // Alternately a needle from before the sidecar started and one written just now
        // (found through a refresh), now and then an empty one.
        let (fid, data) = if round % 2 == 0 && !live.is_empty() {
            live.swap_remove(rng.below(live.len() as u64) as usize)
        } else {
            let size = if round % 7 == 3 { 0 } else { 1 + rng.below(100_000) as usize };
            let data = rng.bytes(size);
            (upload(&cluster, &data), data)
        };
        delete_and_check(&mut client, fid, Some(&data), &format!("round {round}"));
    }
    client.ping();
    eprintln!("deletes_show_at_once: {:?}", started.elapsed());
}

fn wait_for_status(client: &mut Client, fid: FileId, want: Status) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, _) = client.read(&whole(fid));
        if head.status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{fid} never became {want:?}, still {:?}", head.status);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(url: &str, bearer: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut request = agent.get(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().expect("HTTP request");
    let source =
        response.headers().get("x-source").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut body).expect("body");
    (response.status().as_u16(), source, body)
}

#[test]
fn http_endpoints_and_jwt() {
    let cluster = Cluster::start();
    let volume_url = cluster.volume_url();
    let dir = dir_arg(cluster.volume_dir());
    let data = Rng::new(5).bytes(3000);
    let fid = upload(&cluster, &data);
    let sc = TestSidecar::start(&["--dir", &dir, "--volume-server", volume_url]);
    let base = sc.http();

    let (status, source, body) = http_get(
        &format!("{base}/read?volume={}&needle={}&cookie={}", fid.volume, fid.key, fid.cookie),
        None,
    );
    assert_eq!(
        (status, source.as_deref(), body.as_slice()),
        (200, Some("rdma-sidecar-local"), data.as_slice())
    );
    let hex = format!(
        "{base}/read?volume={}&needle={:#x}&cookie={:#x}&offset=100&size=50",
        fid.volume, fid.key, fid.cookie
    );
    assert_eq!(http_get(&hex, None).2, &data[100..150]);
    let by_fid = format!("{base}/read?file_id={fid}&offset=2990");
    assert_eq!(http_get(&by_fid, None).2, &data[2990..]);
    let wrong =
        format!("{base}/read?volume={}&needle={}&cookie={}", fid.volume, fid.key, fid.cookie ^ 1);
    assert_eq!(http_get(&wrong, None).0, 404);
    let (status, _, body) = http_get(&format!("{base}/read?volume=1&needle=2"), None);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("cookie"), "says what is missing");

    let (status, _, body) = http_get(&format!("{base}/health"), None);
    let health: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    assert!(health["volumes"].as_u64().is_some_and(|n| n >= 1), "{health}");
    let (_, _, body) = http_get(&format!("{base}/stats"), None);
    let stats: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(stats["transport"], "tcp");
    assert_eq!(stats["sources"]["local"]["reads"], 3, "{stats}");
    assert_eq!(stats["status"]["not_found"], 1, "{stats}");
    let (_, _, body) = http_get(&format!("{base}/metrics"), None);
    let metrics = String::from_utf8(body).expect("text");
    assert!(metrics.contains("seaweed_rdma_sidecar_reads_total{status=\"ok\"} 3"), "{metrics}");
    assert!(
        metrics.contains("seaweed_rdma_sidecar_bytes_total{source=\"local\"} 3060"),
        "{metrics}"
    );

    // With a read key: tokens for exactly this fid, over both the protocol and HTTP.
    let secured =
        TestSidecar::start(&["--dir", &dir, "--volume-server", volume_url, "--jwt-key", "s3cret"]);
    let token =
        super::super::mint_jwt("s3cret", &fid, Some(jsonwebtoken::get_current_timestamp() + 60))
            .expect("mint");
    let expired = super::super::mint_jwt("s3cret", &fid, Some(10)).expect("mint");
    let mut client = secured.connect();
    let (head, bytes) = client.read(&ReadRequest { jwt: token.clone(), ..whole(fid) });
    assert_eq!((head.status, bytes.as_slice()), (Status::Ok, data.as_slice()));
    let (head, _) = client.read(&ReadRequest { jwt: expired, ..whole(fid) });
    assert_eq!(head.status, Status::Unauthorized, "expired token");
    let url = format!("{}/read?file_id={fid}", secured.http());
    assert_eq!(http_get(&url, None).0, 401);
    assert_eq!(http_get(&url, Some(&token)).2, data);
    assert_eq!(http_get(&format!("{url}&jwt={token}"), None).0, 200);
}
