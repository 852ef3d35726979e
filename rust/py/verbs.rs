//! `verbs_probe`: what this host can do for the verbs transport, as JSON (for `doctor`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Probes the host (libibverbs, devices, ports, GIDs, memlock, soft-RoCE, FUSE) and returns
/// the report as a JSON object string. Never raises for a missing library or device: those
/// are what the report is for. The GIL is released while it looks.
#[pyfunction]
fn verbs_probe(py: Python<'_>) -> PyResult<String> {
    let report = py.detach(crate::verbs::probe);
    serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(verbs_probe, m)?)
}
