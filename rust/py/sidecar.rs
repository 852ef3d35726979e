//! `sidecar_main`: the sidecar run from Python (`seaweed-rdma sidecar ...`).

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

/// Runs the sidecar with `argv` (its arguments, without a program name) until SIGINT or
/// SIGTERM and returns the exit code. The GIL is released for the whole run.
#[pyfunction]
fn sidecar_main(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
    let code = py.detach(move || crate::sidecar::run(argv));
    // The sidecar's own handler shuts it down on SIGINT, but Python's handler saw the signal
    // too; the KeyboardInterrupt it left pending is that same, already handled, request.
    match py.check_signals() {
        Err(e) if !e.is_instance_of::<PyKeyboardInterrupt>(py) => Err(e),
        _ => Ok(code),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sidecar_main, m)?)
}
