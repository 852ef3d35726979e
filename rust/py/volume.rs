//! `Volume`: a read-only view of one volume's `.dat`/`.idx`, and `needle_crc_matches`.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::to_py_err;
use crate::needle;
use crate::volume::{RefreshOutcome, Volume};

/// A volume opened from its `.dat` path; reads release the GIL and may run from many
/// threads at once, `refresh` waits for them.
#[pyclass(frozen, name = "Volume", module = "seaweed_rdma._core")]
struct PyVolume {
    // A panic inside a lock cannot leave the volume half-updated (refresh builds the new
    // state before swapping it in), so a poisoned lock is still safe to use.
    inner: RwLock<Volume>,
}

impl PyVolume {
    fn read_lock(&self) -> RwLockReadGuard<'_, Volume> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyVolume {
    /// `Volume(dat_path)`: opens the volume and builds its needle map from the `.idx`.
    #[new]
    fn new(py: Python<'_>, dat_path: &str) -> PyResult<Self> {
        let path = dat_path.to_owned();
        let volume = py.detach(move || Volume::open(path)).map_err(to_py_err)?;
        Ok(Self { inner: RwLock::new(volume) })
    }

    /// Catches up with the `.idx`; True when the files were replaced (a vacuum) and re-opened.
    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        let outcome = py
            .detach(|| self.inner.write().unwrap_or_else(PoisonError::into_inner).refresh())
            .map_err(to_py_err)?;
        Ok(outcome == RefreshOutcome::Reopened)
    }

    /// `size` bytes of the needle's data from `offset`; the range must lie inside the data.
    fn read<'py>(
        &self,
        py: Python<'py>,
        key: u64,
        cookie: u32,
        offset: u64,
        size: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = py
            .detach(|| self.read_lock().read_range(key, cookie, offset, size))
            .map_err(to_py_err)?;
        Ok(PyBytes::new(py, &data))
    }

    /// The needle's whole data, CRC-checked (compressed data is returned as stored).
    fn read_needle_data<'py>(
        &self,
        py: Python<'py>,
        key: u64,
        cookie: u32,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data =
            py.detach(|| self.read_lock().read_verified_data(key, cookie)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &data))
    }

    /// Volume id.
    #[getter]
    fn volume_id(&self) -> u32 {
        self.read_lock().id()
    }

    /// Collection name, empty for the default collection.
    #[getter]
    fn collection(&self) -> String {
        self.read_lock().collection().to_owned()
    }

    /// Needle format version from the superblock.
    #[getter]
    fn version(&self) -> u8 {
        self.read_lock().super_block().version
    }

    /// Compaction revision from the superblock (bumped by every vacuum).
    #[getter]
    fn compaction_revision(&self) -> u16 {
        self.read_lock().super_block().compaction_revision
    }

    /// Needles that are not deleted.
    #[getter]
    fn needle_count(&self) -> usize {
        self.read_lock().needle_count()
    }

    fn __repr__(&self) -> String {
        let v = self.read_lock();
        format!(
            "Volume(dat_path={:?}, needles={})",
            v.files().dat.display().to_string(),
            v.needle_count()
        )
    }
}

/// Whether `stored` is the CRC32-C of `data`, plain or in SeaweedFS's legacy stored form.
#[pyfunction]
fn needle_crc_matches(py: Python<'_>, data: &[u8], stored: u32) -> bool {
    py.detach(|| needle::crc_matches(data, stored))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVolume>()?;
    m.add_function(wrap_pyfunction!(needle_crc_matches, m)?)?;
    Ok(())
}
