use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::to_py_err;

/// Decodes a `FileChunkManifest` blob into chunk dicts shaped like the filer's JSON
/// (`file_id, offset, size, modified_ts_ns, e_tag, cipher_key, is_compressed,
/// is_chunk_manifest`), so one code path handles both.
#[pyfunction]
fn decode_manifest<'py>(py: Python<'py>, blob: &[u8]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let manifest = crate::manifest::decode(blob).map_err(to_py_err)?;
    manifest
        .chunks
        .iter()
        .map(|c| {
            let d = PyDict::new(py);
            d.set_item("file_id", c.file_id_text())?;
            d.set_item("offset", c.offset)?;
            d.set_item("size", c.size)?;
            d.set_item("modified_ts_ns", c.modified_ts_ns)?;
            d.set_item("e_tag", &c.e_tag)?;
            d.set_item("cipher_key", pyo3::types::PyBytes::new(py, &c.cipher_key))?;
            d.set_item("is_compressed", c.is_compressed)?;
            d.set_item("is_chunk_manifest", c.is_chunk_manifest)?;
            Ok(d)
        })
        .collect()
}

/// Master addresses from a filer's `GetFilerConfigurationResponse`.
#[pyfunction]
fn decode_filer_masters(blob: &[u8]) -> PyResult<Vec<String>> {
    Ok(crate::manifest::decode_filer_configuration(blob).map_err(to_py_err)?.masters)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(decode_filer_masters, m)?)?;
    Ok(())
}
