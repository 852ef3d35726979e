//! The PyO3 layer: argument conversion and error mapping only; logic lives in the
//! plain modules. Each submodule has a `register` function that adds its items.

mod buffer;
mod engine;
mod errors;
mod failure;
mod fid;
mod manifest;
mod native;
mod plan;
mod polled;
mod sidecar;
mod verbs;
mod volume;

use pyo3::prelude::*;

pub(crate) use errors::to_py_err;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The engine's tracing events become `log` records when no tracing subscriber is set
    // (tracing's "log" feature); this hands them to Python's logging, under loggers named
    // after the Rust module (seaweed_rdma::engine...).
    let _ = pyo3_log::try_init();
    engine::register(m)?;
    errors::register(m)?;
    fid::register(m)?;
    manifest::register(m)?;
    native::register(m)?;
    plan::register(m)?;
    sidecar::register(m)?;
    verbs::register(m)?;
    volume::register(m)?;
    Ok(())
}
