//! `Plan`: the chunk planner, with tuples in place of the Rust structs.

use pyo3::prelude::*;

use super::to_py_err;
use crate::error::Result;
use crate::plan::{ChunkSpec, Plan};

/// A chunk as Python passes it: `(offset, size, modified_ts_ns, whole)`. The offset is
/// signed, as in the filer's metadata, so that a negative one is rejected as a bad plan
/// rather than as an integer conversion error.
type ChunkTuple = (i64, u64, i64, bool);

/// Plans of more chunks than this are made without the GIL.
pub(super) const PLAN_WITHOUT_GIL: usize = 64;

/// A file's chunk list with overlaps resolved: which chunk holds which bytes.
#[pyclass(frozen, name = "Plan", module = "seaweed_rdma._core")]
struct PyPlan {
    inner: Plan,
}

#[pymethods]
impl PyPlan {
    /// `Plan(chunks, attr_size)`, each chunk `(offset, size, modified_ts_ns, whole)`.
    #[new]
    fn new(py: Python<'_>, chunks: Vec<ChunkTuple>, attr_size: u64) -> PyResult<Self> {
        // The arguments are owned Rust values by now, so the sort and sweep (which take
        // milliseconds for large files) can run without the GIL. A small file's take
        // microseconds, less than taking the GIL back can cost while another thread runs
        // Python (up to the 5 ms switch interval): those keep it.
        let many = chunks.len() > PLAN_WITHOUT_GIL;
        let plan = move || -> Result<Plan> {
            let specs = chunks
                .into_iter()
                .map(|(offset, size, ts, whole)| ChunkSpec::from_filer(offset, size, ts, whole))
                .collect::<Result<Vec<_>>>()?;
            Plan::new(specs, attr_size)
        };
        let inner = if many { py.detach(plan) } else { plan() }.map_err(to_py_err)?;
        Ok(Self { inner })
    }

    /// The file's size: the larger of `attr_size` and the end of the furthest chunk.
    #[getter]
    fn file_size(&self) -> u64 {
        self.inner.file_size()
    }

    /// `[(start, stop, chunk_index, offset_in_chunk)]`, sorted, holes omitted.
    fn intervals(&self) -> Vec<(u64, u64, usize, u64)> {
        self.inner
            .intervals()
            .iter()
            .map(|iv| (iv.start, iv.stop, iv.chunk, iv.offset_in_chunk))
            .collect()
    }

    /// `[(chunk_index, offset_in_chunk, length, buf_offset, whole)]` for the file range
    /// `[offset, offset + size)` clipped to the file size; holes are left to the caller.
    fn extents(&self, offset: u64, size: u64) -> Vec<(usize, u64, u64, u64, bool)> {
        self.inner
            .extents(offset, size)
            .into_iter()
            .map(|e| (e.chunk, e.offset_in_chunk, e.len, e.buf_offset, e.whole))
            .collect()
    }

    /// How many bytes a read of `[offset, offset + size)` returns (short at EOF, 0 past it).
    fn read_len(&self, offset: u64, size: u64) -> u64 {
        self.inner.read_len(offset, size)
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan(chunks={}, intervals={}, file_size={})",
            self.inner.chunks().len(),
            self.inner.intervals().len(),
            self.inner.file_size()
        )
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPlan>()
}
