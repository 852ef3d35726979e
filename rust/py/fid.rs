use pyo3::prelude::*;

use super::to_py_err;
use crate::fid::FileId;

/// Parses a file id into `(volume, key, cookie)`.
#[pyfunction]
fn parse_fid(text: &str) -> PyResult<(u32, u64, u32)> {
    let f = FileId::parse(text).map_err(to_py_err)?;
    Ok((f.volume, f.key, f.cookie))
}

/// Formats `(volume, key, cookie)` as SeaweedFS does.
#[pyfunction]
fn format_fid(volume: u32, key: u64, cookie: u32) -> String {
    FileId::new(volume, key, cookie).to_string()
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_fid, m)?)?;
    m.add_function(wrap_pyfunction!(format_fid, m)?)?;
    Ok(())
}
