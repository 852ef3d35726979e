//! Tests against files that a real SeaweedFS volume server writes while the test runs.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;
use crate::fid::FileId;
use crate::needle::legacy_crc;
use crate::testutil::{Cluster, Rng, Upload};

/// One uploaded needle and what the volume must give back for it.
struct Put {
    fid: FileId,
    /// The bytes as stored (gzip for a compressed upload).
    stored: Vec<u8>,
    how: Upload<'static>,
}

/// A 200-byte file name.
const LONG_NAME: &str = "a-file-name-long-enough-to-push-the-crc-far-from-the-flags-a-file-name-long-enough-to-push-the-crc-far-from-the-flags-a-file-name-long-enough-to-push-the-crc-far-from-the-flags-a-file-name-long-enough";

fn open_all(cluster: &Cluster) -> HashMap<u32, Volume> {
    let scan = scan_dir(cluster.volume_dir()).expect("scan volume dir");
    assert!(scan.ec_volumes.is_empty());
    scan.volumes.iter().map(|f| (f.vid, Volume::open(&f.dat).expect("open volume"))).collect()
}

fn volume(volumes: &HashMap<u32, Volume>, fid: FileId) -> &Volume {
    volumes.get(&fid.volume).unwrap_or_else(|| panic!("volume {} of {fid} not opened", fid.volume))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// Walks `.dat` record by record with [`needle::record_len`] and checks that the walk ends
/// exactly at the end of the file and meets every offset `.idx` names: this is what checks
/// the padding rule against what the volume server really wrote.
fn check_layout(vol: &Volume) {
    let dat = fs::read(&vol.files().dat).expect("read .dat");
    let version = vol.super_block().version;
    let mut starts = BTreeSet::new();
    let mut pos = vol.super_block().first_needle_offset();
    while pos < dat.len() as u64 {
        let record = &dat[pos as usize..];
        let needle =
            Needle::parse(record, version).unwrap_or_else(|e| panic!("record at {pos}: {e}"));
        starts.insert(pos);
        pos += needle::record_len(needle.header.size, version);
    }
    assert_eq!(
        pos,
        dat.len() as u64,
        "records of volume {} do not end at the end of .dat",
        vol.id()
    );
    let idx = fs::read(&vol.files().idx).expect("read .idx");
    let entry_size = vol.index_layout().entry_size();
    assert_eq!(idx.len() % entry_size, 0, "volume {}: .idx of {} bytes", vol.id(), idx.len());
    for chunk in idx.chunks_exact(entry_size) {
        let entry = IndexEntry::decode(chunk, vol.index_layout()).expect("whole entry");
        // Deletions point at the tombstone record they appended (offset 0 is the other form).
        if entry.offset != 0 {
            assert!(
                starts.contains(&entry.offset),
                "volume {}: {entry:?} is not at a record start",
                vol.id()
            );
            let header = Header::parse(&dat[entry.offset as usize..]).expect("header");
            assert_eq!(header.key, entry.key);
            let want_size = if entry.is_tombstone() { 0 } else { entry.size };
            assert_eq!(header.size, want_size, "{entry:?}");
        }
    }
}

fn check_reads(vol: &Volume, put: &Put, rng: &mut Rng) {
    let FileId { key, cookie, .. } = put.fid;
    let loc = vol.locate(key, cookie).unwrap_or_else(|e| panic!("locate {}: {e}", put.fid));
    assert_eq!(loc.data_size as usize, put.stored.len(), "{}", put.fid);
    assert_eq!(vol.read_verified_data(key, cookie).expect("verified read"), put.stored);

    let record = vol.read_needle(key, cookie).expect("read record");
    let needle = Needle::parse(&record, vol.super_block().version).expect("parse record");
    assert_eq!(needle.is_compressed(), put.how.gzip, "{}", put.fid);
    assert!(!needle.is_chunk_manifest());
    if !put.how.name.is_empty() {
        assert_eq!(needle.name, Some(put.how.name.as_bytes()));
    }
    if let Some(mime) = put.how.mime {
        assert_eq!(needle.mime, Some(mime.as_bytes()));
    }
    if vol.super_block().version == 3 {
        assert!(needle.append_at_ns.is_some());
    }
    // The flags and CRC without reading the record, as the parsed record has them.
    let meta = vol.read_meta(&loc).expect("read meta");
    assert_eq!(meta, NeedleMeta { flags: needle.flags, crc: needle.checksum }, "{}", put.fid);
    assert_eq!(meta.flags & needle::FLAG_COMPRESSED != 0, put.how.gzip, "{}", put.fid);
    assert!(needle::crc_matches(&put.stored, meta.crc), "{}: crc {:#x}", put.fid, meta.crc);

    let len = put.stored.len() as u64;
    for _ in 0..20 {
        let start = rng.below(len + 1);
        let size = rng.below(len - start + 1) as usize;
        let mut buf = vec![0u8; size];
        vol.read_data(&loc, start, &mut buf).expect("read in bounds");
        assert_eq!(
            buf,
            put.stored[start as usize..start as usize + size],
            "{} at {start}+{size}",
            put.fid
        );
    }
    assert_eq!(vol.read_range(key, cookie, 0, put.stored.len()).expect("whole range"), put.stored);
    vol.read_data(&loc, len, &mut []).expect("an empty read at the end is in bounds");
    for (start, size) in [(0, len + 1), (len, 1), (len.saturating_sub(3), 4), (u64::MAX, 1)] {
        let err =
            vol.read_data(&loc, start, &mut vec![0u8; size as usize]).expect_err("past the data");
        assert!(matches!(err, Error::OutOfBounds { .. }), "{err}");
    }
    assert!(matches!(vol.read_range(key, cookie, 0, usize::MAX), Err(Error::OutOfBounds { .. })));
    assert!(matches!(vol.locate(key, cookie ^ 0x0100_0000), Err(Error::NotFound { .. })));
}

#[test]
fn reads_what_a_real_volume_server_wrote() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(0x5eed_0001);
    let plain = Upload::default();
    let mut puts = Vec::new();
    // Sizes 0..=24 reach every padding length; then a multi-block size and a few hundred KB.
    for len in (0..=24).chain([1000, 4096, 300 * 1024]) {
        let data = rng.bytes(len);
        puts.push(Put { fid: cluster.put(None, &data, plain), stored: data, how: plain });
    }
    // Optional fields this long put the CRC too far from the flags for one read of both.
    let long =
        Upload { name: LONG_NAME, mime: Some("application/x-seaweed-rdma-test"), gzip: false };
    let data = rng.bytes(100);
    puts.push(Put { fid: cluster.put(None, &data, long), stored: data, how: long });
    let named = Upload { name: "cat.png", mime: Some("image/png"), gzip: false };
    let data = rng.bytes(777);
    puts.push(Put { fid: cluster.put(None, &data, named), stored: data, how: named });
    let original =
        b"a text that compresses, a text that compresses, a text that compresses".repeat(50);
    let zipped = Upload { name: "notes.txt", mime: None, gzip: true };
    let stored = gzip(&original);
    puts.push(Put { fid: cluster.put(None, &stored, zipped), stored, how: zipped });
    let data = rng.bytes(5000);
    let in_foo = Put { fid: cluster.put(Some("foo"), &data, plain), stored: data, how: plain };

    let mut volumes = open_all(&cluster);
    let foo = volume(&volumes, in_foo.fid);
    assert_eq!(foo.collection(), "foo");
    assert_eq!(
        foo.files().dat.file_name(),
        Some(format!("foo_{}.dat", in_foo.fid.volume).as_ref())
    );
    for vol in volumes.values() {
        assert_eq!(vol.super_block().version, 3);
        assert_eq!(vol.super_block().compaction_revision, 0);
        assert!(!vol.index_behind(), "volume {} just opened", vol.id());
        check_layout(vol);
    }
    for put in puts.iter().chain([&in_foo]) {
        check_reads(volume(&volumes, put.fid), put, &mut rng);
    }
    let zipped_back = volume(&volumes, puts[puts.len() - 1].fid)
        .read_verified_data(puts[puts.len() - 1].fid.key, puts[puts.len() - 1].fid.cookie)
        .expect("compressed needle");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped_back[..])
        .read_to_end(&mut unzipped)
        .expect("stored bytes are gzip");
    assert_eq!(unzipped, original);

    // An empty upload is a live needle with no data, and the volume server serves it so.
    let empty = &puts[0];
    assert_eq!(cluster.get(empty.fid), Some(Vec::new()));
    let max_key = puts.iter().map(|p| p.fid.key).max().unwrap_or(0);
    for vol in volumes.values() {
        assert!(matches!(vol.locate(max_key + 1000, 1), Err(Error::NotFound { .. })));
    }

    // A real record, cut anywhere or with its CRC in the legacy form.
    let named_put = &puts[puts.len() - 2];
    let vol = volume(&volumes, named_put.fid);
    let mut record = vol.read_needle(named_put.fid.key, named_put.fid.cookie).expect("record");
    for cut in 0..record.len() {
        assert!(
            matches!(Needle::parse(&record[..cut], 3), Err(Error::CorruptNeedle(_))),
            "cut at {cut}"
        );
    }
    let crc_at = HEADER_SIZE + Header::parse(&record).expect("header").size as usize;
    let crc = crc32c::crc32c(&named_put.stored);
    assert_eq!(
        record[crc_at..crc_at + 4],
        crc.to_be_bytes(),
        "the stored CRC is the plain CRC32-C"
    );
    record[crc_at..crc_at + 4].copy_from_slice(&legacy_crc(crc).to_be_bytes());
    Needle::parse(&record, 3).expect("record").verify_crc().expect("legacy CRC accepted");
    record[crc_at] ^= 0x40;
    let err = Needle::parse(&record, 3).expect("record").verify_crc().expect_err("flipped CRC bit");
    assert!(matches!(err, Error::CrcMismatch { .. }));

    // Needles written after opening appear on refresh, not before.
    let data = rng.bytes(3333);
    let late = Put { fid: cluster.put(None, &data, plain), stored: data, how: plain };
    let vol =
        volumes.get_mut(&late.fid.volume).expect("plain volumes all exist from the first assign");
    assert!(matches!(vol.locate(late.fid.key, late.fid.cookie), Err(Error::NotFound { .. })));
    let count = vol.needle_count();
    assert!(vol.index_behind(), "the new .idx entry shows without a refresh");
    assert_eq!(vol.refresh().expect("refresh"), RefreshOutcome::Appended { entries: 1 });
    assert!(!vol.index_behind());
    assert_eq!(vol.refresh().expect("refresh"), RefreshOutcome::Unchanged);
    assert_eq!(vol.needle_count(), count + 1);
    check_reads(vol, &late, &mut rng);

    // Deletions: the non-empty needle and the empty one.
    for gone in [&puts[5], empty] {
        cluster.delete(gone.fid);
        assert_eq!(cluster.get(gone.fid), None);
        let vol = volumes.get_mut(&gone.fid.volume).expect("opened");
        let count = vol.needle_count();
        // The volume server wrote the tombstone's entry before it answered the delete.
        assert!(vol.index_behind(), "deletion of {} shows without a refresh", gone.fid);
        assert_eq!(vol.refresh().expect("refresh"), RefreshOutcome::Appended { entries: 1 });
        assert!(!vol.index_behind());
        assert_eq!(vol.needle_count(), count - 1);
        let FileId { key, cookie, .. } = gone.fid;
        assert!(matches!(vol.locate(key, cookie), Err(Error::Deleted { .. })));
        assert!(matches!(vol.read_verified_data(key, cookie), Err(Error::Deleted { .. })));
        assert!(vol.index_entry(key).is_some_and(|e| e.is_tombstone()));
        check_layout(vol);
    }
}

#[test]
fn vacuum_reopens_and_reads_stay_exact() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(0x5eed_0002);
    let plain = Upload::default();
    let puts: Vec<Put> = (0..30)
        .map(|_| {
            let len = 1 + rng.below(20_000) as usize;
            let data = rng.bytes(len);
            Put { fid: cluster.put(None, &data, plain), stored: data, how: plain }
        })
        .collect();
    let mut volumes = open_all(&cluster);
    let before: HashMap<u64, Location> = puts
        .iter()
        .map(|p| {
            (p.fid.key, volume(&volumes, p.fid).locate(p.fid.key, p.fid.cookie).expect("locate"))
        })
        .collect();

    // Deleting every other needle leaves garbage before most survivors, so they move.
    let gone: Vec<&Put> = puts.iter().step_by(2).collect();
    let kept: Vec<&Put> = puts.iter().skip(1).step_by(2).collect();
    for put in &gone {
        cluster.delete(put.fid);
    }
    let vacuumed: BTreeSet<u32> = gone.iter().map(|p| p.fid.volume).collect();
    for vid in &vacuumed {
        assert!(matches!(
            volumes.get_mut(vid).expect("opened").refresh(),
            Ok(RefreshOutcome::Appended { .. })
        ));
    }

    cluster.vacuum();
    // The master asks the volume server to compact and commit; wait until each commit shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    for vid in &vacuumed {
        let vol = &volumes[vid];
        loop {
            let dat = File::open(&vol.files().dat).expect("open .dat");
            if SuperBlock::read(&dat, &vol.files().dat).expect("superblock").compaction_revision > 0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "volume {vid} was not vacuumed:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for vid in &vacuumed {
        let vol = volumes.get_mut(vid).expect("opened");
        // The new `.idx` may be renamed in a moment after the new `.dat`.
        while !vol.index_behind() {
            assert!(Instant::now() < deadline, "volume {vid}: the replaced .idx never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(vol.refresh().expect("refresh"), RefreshOutcome::Reopened, "volume {vid}");
        assert!(!vol.index_behind());
        assert_eq!(vol.super_block().compaction_revision, 1);
        assert_eq!(vol.refresh().expect("refresh"), RefreshOutcome::Unchanged);
        check_layout(vol);
    }
    let mut moved = 0;
    for put in &kept {
        let vol = volume(&volumes, put.fid);
        check_reads(vol, put, &mut rng);
        let old = &before[&put.fid.key];
        if vacuumed.contains(&put.fid.volume) {
            let err =
                vol.read_data(old, 0, &mut []).expect_err("a location from before the vacuum");
            assert!(matches!(err, Error::StaleLocation { .. }), "{err}");
            let err = vol.read_meta(old).expect_err("a location from before the vacuum");
            assert!(matches!(err, Error::StaleLocation { .. }), "{err}");
        }
        if vol.locate(put.fid.key, put.fid.cookie).expect("locate").offset != old.offset {
            moved += 1;
        }
    }
    assert!(moved > 0, "no needle moved, so the vacuum test proved nothing");
    // Compaction drops deleted needles from the index altogether.
    for put in &gone {
        let vol = volume(&volumes, put.fid);
        assert!(matches!(vol.locate(put.fid.key, put.fid.cookie), Err(Error::NotFound { .. })));
    }

    // The re-opened volume keeps following new writes.
    let data = rng.bytes(1234);
    let late = Put { fid: cluster.put(None, &data, plain), stored: data, how: plain };
    let vol = volumes.get_mut(&late.fid.volume).expect("opened");
    assert!(matches!(vol.refresh(), Ok(RefreshOutcome::Appended { entries: 1 })));
    check_reads(vol, &late, &mut rng);
}

#[test]
fn volume_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Volume>();
    send_sync::<std::sync::RwLock<Volume>>();
}

#[test]
fn page_cache_reads_take_cached_pages_and_refuse_to_wait_for_the_disk() {
    let cluster = Cluster::start();
    let mut rng = Rng::new(0x5eed_0003);
    let data = rng.bytes(300 * 1024);
    let fid = cluster.put(None, &data, Upload::default());
    let volumes = open_all(&cluster);
    let vol = volume(&volumes, fid);
    let read_all = || -> Result<Vec<u8>> {
        let loc = vol.locate(fid.key, fid.cookie)?;
        let mut buf = vec![0u8; data.len()];
        vol.read_data(&loc, 0, &mut buf)?;
        Ok(buf)
    };
    assert_eq!(read_all().expect("a plain read"), data);
    // Just read, so cached: served without waiting.
    assert_eq!(from_page_cache(read_all).expect("cached pages"), data);

    // Written back and dropped from the page cache: a page-cache read must not wait.
    let dat = File::open(&vol.files().dat).expect("open .dat");
    dat.sync_all().expect("fsync .dat");
    // SAFETY: fadvise only takes the descriptor, owned by `dat` for the call's duration.
    let rc = unsafe { libc::posix_fadvise(dat.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    match from_page_cache(read_all) {
        Err(e) => assert!(would_block(&e), "{e}"),
        // tmpfs keeps its pages whatever the advice: nothing to refuse there.
        Ok(got) => {
            assert_eq!(got, data);
            eprintln!("the page cache kept the pages (tmpfs?): the refusal is not exercised");
        }
    }
    // Outside `from_page_cache` the same read waits for the disk as usual.
    assert_eq!(read_all().expect("a plain read after eviction"), data);
}
