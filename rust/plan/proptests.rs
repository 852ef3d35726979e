//! The planner against a byte-by-byte model of the visibility rule.

use proptest::prelude::*;

use super::*;

/// What a reader sees at one file byte: `(chunk, offset_in_chunk)`, or `None` for a hole.
type Byte = Option<(usize, u64)>;

/// The rule, spelled out one byte at a time: among the chunks covering a byte, the one with
/// the largest `(modified_ts_ns, index)` wins.
fn model(chunks: &[ChunkSpec], attr_size: u64) -> Vec<Byte> {
    let size = chunks.iter().map(|c| c.offset + c.size).fold(attr_size, u64::max);
    (0..size)
        .map(|pos| {
            chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| c.offset <= pos && pos < c.offset + c.size)
                .max_by_key(|(i, c)| (c.modified_ts_ns, *i))
                .map(|(i, c)| (i, pos - c.offset))
        })
        .collect()
}

fn chunk_strategy() -> impl Strategy<Value = ChunkSpec> {
    // Few timestamps so that ties are common; small numbers so that overlaps are.
    (0u64..64, 0u64..32, -2i64..3, any::<bool>()).prop_map(|(offset, size, ts, whole)| ChunkSpec {
        offset,
        size,
        modified_ts_ns: ts,
        whole,
    })
}

fn input_strategy() -> impl Strategy<Value = (Vec<ChunkSpec>, u64)> {
    (prop::collection::vec(chunk_strategy(), 0..24), 0u64..120)
}

fn build(chunks: &[ChunkSpec], attr_size: u64) -> Result<Plan, TestCaseError> {
    Plan::new(chunks.to_vec(), attr_size).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Sorted runs with gaps (often none) and the odd zero-size or overlapping chunk: the
/// shape of files written front to back, which the planner has a shortcut for.
fn sequential_strategy() -> impl Strategy<Value = (Vec<ChunkSpec>, u64)> {
    let step = (0u64..4, 0u64..12, -1i64..2, any::<bool>(), 0u8..40);
    (prop::collection::vec(step, 0..24), 0u64..200).prop_map(|(steps, attr_size)| {
        let mut at: u64 = 0;
        let chunks = steps
            .into_iter()
            .map(|(gap, size, ts, whole, back)| {
                // One step in forty starts a little before the previous chunk's end.
                let offset = if back == 0 { at.saturating_sub(2) } else { at + gap };
                at = offset + size;
                ChunkSpec { offset, size, modified_ts_ns: ts, whole }
            })
            .collect();
        (chunks, attr_size)
    })
}

fn check_intervals(chunks: &[ChunkSpec], attr_size: u64) -> Result<(), TestCaseError> {
    let want = model(chunks, attr_size);
    let plan = build(chunks, attr_size)?;
    prop_assert_eq!(plan.file_size(), want.len() as u64);

    let mut got: Vec<Byte> = vec![None; want.len()];
    let mut prev: Option<VisibleInterval> = None;
    for iv in plan.intervals() {
        prop_assert!(iv.start < iv.stop);
        if let Some(p) = prev {
            prop_assert!(p.stop <= iv.start, "unsorted or overlapping: {:?} {:?}", p, iv);
            prop_assert!(
                !(p.chunk == iv.chunk && p.stop == iv.start),
                "joinable neighbours left apart: {:?} {:?}",
                p,
                iv
            );
        }
        for pos in iv.start..iv.stop {
            got[pos as usize] = Some((iv.chunk, iv.offset_in_chunk + (pos - iv.start)));
        }
        prev = Some(*iv);
    }
    prop_assert_eq!(got, want);
    Ok(())
}

fn check_extents(
    chunks: &[ChunkSpec],
    attr_size: u64,
    ranges: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let want = model(chunks, attr_size);
    let plan = build(chunks, attr_size)?;
    for &(offset, len) in ranges {
        let read_len = plan.read_len(offset, len);
        let lo = (offset as usize).min(want.len());
        let hi = ((offset + len) as usize).min(want.len());
        prop_assert_eq!(read_len, (hi - lo) as u64);

        let mut buf: Vec<Byte> = vec![None; read_len as usize];
        let extents = plan.extents(offset, len);
        for (k, e) in extents.iter().enumerate() {
            prop_assert!(e.len > 0);
            prop_assert!(e.buf_offset + e.len <= read_len, "extent past the read: {:?}", e);
            prop_assert!(e.offset_in_chunk + e.len <= chunks[e.chunk].size);
            prop_assert_eq!(e.whole, chunks[e.chunk].whole);
            if k > 0 {
                let p = extents[k - 1];
                prop_assert!(p.buf_offset + p.len <= e.buf_offset, "out of order: {:?} {:?}", p, e);
                prop_assert!(
                    !(p.chunk == e.chunk
                        && p.offset_in_chunk + p.len == e.offset_in_chunk
                        && p.buf_offset + p.len == e.buf_offset),
                    "mergeable extents left apart: {:?} {:?}",
                    p,
                    e
                );
            }
            for i in 0..e.len {
                let slot = &mut buf[(e.buf_offset + i) as usize];
                prop_assert!(
                    slot.is_none(),
                    "extents overlap in the buffer at {}",
                    e.buf_offset + i
                );
                *slot = Some((e.chunk, e.offset_in_chunk + i));
            }
        }
        prop_assert_eq!(&buf[..], &want[lo..hi]);
    }
    Ok(())
}

fn ranges_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..220, 0u64..220), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn intervals_match_model((chunks, attr_size) in input_strategy()) {
        check_intervals(&chunks, attr_size)?;
    }

    #[test]
    fn extents_match_model((chunks, attr_size) in input_strategy(), ranges in ranges_strategy()) {
        check_extents(&chunks, attr_size, &ranges)?;
    }

    #[test]
    fn sequential_intervals_match_model((chunks, attr_size) in sequential_strategy()) {
        check_intervals(&chunks, attr_size)?;
    }

    #[test]
    fn sequential_extents_match_model(
        (chunks, attr_size) in sequential_strategy(),
        ranges in ranges_strategy(),
    ) {
        check_extents(&chunks, attr_size, &ranges)?;
    }
}
