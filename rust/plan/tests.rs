use super::*;
use crate::Error;

fn chunk(offset: u64, size: u64, ts: i64) -> ChunkSpec {
    ChunkSpec { offset, size, modified_ts_ns: ts, whole: false }
}

fn iv(start: u64, stop: u64, chunk: usize, offset_in_chunk: u64) -> VisibleInterval {
    VisibleInterval { start, stop, chunk, offset_in_chunk }
}

fn ext(chunk: usize, offset_in_chunk: u64, len: u64, buf_offset: u64) -> Extent {
    Extent { chunk, offset_in_chunk, len, buf_offset, whole: false }
}

fn plan(chunks: &[ChunkSpec], attr_size: u64) -> Plan {
    match Plan::new(chunks.to_vec(), attr_size) {
        Ok(p) => p,
        Err(e) => panic!("plan rejected: {e}"),
    }
}

#[test]
fn no_chunks() {
    let p = plan(&[], 0);
    assert_eq!(p.file_size(), 0);
    assert!(p.intervals().is_empty());
    assert!(p.extents(0, 100).is_empty());
    assert_eq!(p.read_len(0, 100), 0);
}

#[test]
fn no_chunks_with_attr_size_is_all_hole() {
    let p = plan(&[], 50);
    assert_eq!(p.file_size(), 50);
    assert!(p.intervals().is_empty());
    assert!(p.extents(0, 100).is_empty());
    assert_eq!(p.read_len(0, 100), 50);
}

#[test]
fn one_chunk() {
    let p = plan(&[chunk(0, 10, 1)], 0);
    assert_eq!(p.file_size(), 10);
    assert_eq!(p.intervals(), &[iv(0, 10, 0, 0)]);
    assert_eq!(p.extents(0, 10), vec![ext(0, 0, 10, 0)]);
    assert_eq!(p.extents(3, 4), vec![ext(0, 3, 4, 0)]);
}

#[test]
fn sequential_chunks() {
    let p = plan(&[chunk(0, 10, 1), chunk(10, 10, 2), chunk(20, 5, 3)], 0);
    assert_eq!(p.file_size(), 25);
    assert_eq!(p.intervals(), &[iv(0, 10, 0, 0), iv(10, 20, 1, 0), iv(20, 25, 2, 0)]);
    assert_eq!(p.extents(5, 17), vec![ext(0, 5, 5, 0), ext(1, 0, 10, 5), ext(2, 0, 2, 15)]);
}

#[test]
fn sequential_chunks_out_of_list_order() {
    let p = plan(&[chunk(20, 5, 3), chunk(0, 10, 1), chunk(10, 10, 2)], 0);
    assert_eq!(p.intervals(), &[iv(0, 10, 1, 0), iv(10, 20, 2, 0), iv(20, 25, 0, 0)]);
}

#[test]
fn newer_chunk_inside_older() {
    let p = plan(&[chunk(0, 100, 1), chunk(40, 20, 2)], 0);
    assert_eq!(p.intervals(), &[iv(0, 40, 0, 0), iv(40, 60, 1, 0), iv(60, 100, 0, 60)]);
    assert_eq!(p.extents(50, 20), vec![ext(1, 10, 10, 0), ext(0, 60, 10, 10)]);
}

#[test]
fn newer_chunk_overlapping_the_ends() {
    let p = plan(&[chunk(10, 20, 1), chunk(0, 15, 2), chunk(25, 15, 3)], 0);
    assert_eq!(p.file_size(), 40);
    assert_eq!(p.intervals(), &[iv(0, 15, 1, 0), iv(15, 25, 0, 5), iv(25, 40, 2, 0)]);
}

#[test]
fn older_chunk_inside_newer_is_invisible() {
    let p = plan(&[chunk(0, 100, 5), chunk(10, 20, 1)], 0);
    assert_eq!(p.intervals(), &[iv(0, 100, 0, 0)]);
    assert_eq!(p.extents(0, 100), vec![ext(0, 0, 100, 0)]);
}

#[test]
fn equal_timestamps_later_in_list_wins() {
    let p = plan(&[chunk(0, 10, 7), chunk(5, 10, 7)], 0);
    assert_eq!(p.intervals(), &[iv(0, 5, 0, 0), iv(5, 15, 1, 0)]);
    let p = plan(&[chunk(5, 10, 7), chunk(0, 10, 7)], 0);
    assert_eq!(p.intervals(), &[iv(0, 10, 1, 0), iv(10, 15, 0, 5)]);
}

#[test]
fn exact_duplicates_later_in_list_wins() {
    let p = plan(&[chunk(0, 10, 7), chunk(0, 10, 7), chunk(0, 10, 6)], 0);
    assert_eq!(p.intervals(), &[iv(0, 10, 1, 0)]);
}

#[test]
fn negative_timestamps_order_normally() {
    let p = plan(&[chunk(0, 10, -1), chunk(0, 10, -5)], 0);
    assert_eq!(p.intervals(), &[iv(0, 10, 0, 0)]);
}

#[test]
fn holes_between_chunks_and_at_end() {
    let p = plan(&[chunk(10, 10, 1), chunk(30, 10, 1)], 60);
    assert_eq!(p.file_size(), 60);
    assert_eq!(p.intervals(), &[iv(10, 20, 0, 0), iv(30, 40, 1, 0)]);
    assert_eq!(p.extents(0, 100), vec![ext(0, 0, 10, 10), ext(1, 0, 10, 30)]);
    assert_eq!(p.read_len(0, 100), 60);
    assert!(p.extents(20, 10).is_empty());
    assert!(p.extents(45, 10).is_empty());
    assert_eq!(p.read_len(45, 10), 10);
    assert_eq!(p.read_len(55, 10), 5);
}

#[test]
fn attr_size_smaller_than_chunks_is_ignored() {
    let p = plan(&[chunk(0, 10, 1)], 4);
    assert_eq!(p.file_size(), 10);
}

#[test]
fn read_past_eof() {
    let p = plan(&[chunk(0, 10, 1)], 0);
    assert_eq!(p.read_len(5, 100), 5);
    assert_eq!(p.extents(5, 100), vec![ext(0, 5, 5, 0)]);
    assert_eq!(p.read_len(10, 100), 0);
    assert!(p.extents(10, 100).is_empty());
    assert_eq!(p.read_len(1000, 100), 0);
    assert!(p.extents(1000, 100).is_empty());
    assert_eq!(p.read_len(3, 0), 0);
    assert!(p.extents(3, 0).is_empty());
}

#[test]
fn huge_read_lengths_saturate() {
    let p = plan(&[chunk(0, 10, 1)], 0);
    assert_eq!(p.read_len(5, u64::MAX), 5);
    assert_eq!(p.extents(5, u64::MAX), vec![ext(0, 5, 5, 0)]);
    assert_eq!(p.read_len(u64::MAX, u64::MAX), 0);
}

#[test]
fn zero_size_chunks() {
    let p = plan(&[chunk(0, 0, 9), chunk(0, 10, 1), chunk(5, 0, 9), chunk(30, 0, 1)], 0);
    // Zero-size chunks cover nothing, but their offset still counts towards the size.
    assert_eq!(p.intervals(), &[iv(0, 10, 1, 0)]);
    assert_eq!(p.file_size(), 30);
    assert_eq!(p.read_len(0, 100), 30);
}

#[test]
fn extents_join_a_chunk_split_by_an_older_one() {
    // The older chunk starts and ends underneath the newer one; the sweep stops at both
    // points, but the reader must see one piece.
    let p = plan(&[chunk(0, 100, 2), chunk(20, 20, 1)], 0);
    assert_eq!(p.intervals(), &[iv(0, 100, 0, 0)]);
    assert_eq!(p.extents(10, 50), vec![ext(0, 10, 50, 0)]);
}

#[test]
fn extents_do_not_join_different_chunks_or_gaps() {
    // Same chunk twice, but not contiguous in the buffer (another chunk sits between).
    let p = plan(&[chunk(0, 30, 1), chunk(10, 10, 2)], 0);
    assert_eq!(p.extents(0, 30), vec![ext(0, 0, 10, 0), ext(1, 0, 10, 10), ext(0, 20, 10, 20)]);
    // Same chunk data in two list entries: different chunks, so not joined.
    let p = plan(&[chunk(0, 10, 1), chunk(10, 10, 1)], 0);
    assert_eq!(p.extents(0, 20).len(), 2);
}

#[test]
fn whole_flag_is_carried() {
    let p = plan(
        &[ChunkSpec { offset: 0, size: 10, modified_ts_ns: 1, whole: true }, chunk(10, 10, 1)],
        0,
    );
    let e = p.extents(5, 10);
    assert_eq!(e.iter().map(|x| x.whole).collect::<Vec<_>>(), vec![true, false]);
}

#[test]
fn chunk_reaching_u64_max_is_fine() {
    let p = plan(&[chunk(u64::MAX - 10, 10, 1)], 0);
    assert_eq!(p.file_size(), u64::MAX);
    assert_eq!(p.extents(u64::MAX - 5, 100), vec![ext(0, 5, 5, 0)]);
}

#[test]
fn overflowing_chunk_is_rejected() {
    let r = Plan::new(vec![chunk(0, 1, 1), chunk(u64::MAX - 10, 11, 1)], 0);
    assert!(matches!(r, Err(Error::BadPlan(msg)) if msg.contains("chunk 1")));
}

#[test]
fn negative_offset_is_rejected() {
    assert!(matches!(ChunkSpec::from_filer(-1, 10, 1, false), Err(Error::BadPlan(_))));
    assert!(matches!(
        ChunkSpec::from_filer(7, 10, 1, true),
        Ok(ChunkSpec { offset: 7, size: 10, modified_ts_ns: 1, whole: true })
    ));
}

#[test]
fn many_overlapping_chunks_stay_sorted_and_disjoint() {
    // A stack of ever-newer chunks each shifted by one: only the first byte of each survives,
    // except for the newest one, which is visible in full.
    let chunks: Vec<ChunkSpec> = (0..1000).map(|i| chunk(i, 100, i as i64)).collect();
    let p = plan(&chunks, 0);
    assert_eq!(p.intervals().len(), 1000);
    assert!(p.intervals().windows(2).all(|w| w[0].stop == w[1].start));
    assert_eq!(p.intervals()[999], iv(999, 1099, 999, 0));
}
