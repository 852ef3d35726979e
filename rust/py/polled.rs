//! `PolledRead`: a small batch an event loop drives itself (`Engine.start_polled`).

use std::time::Instant;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::buffer::PyDest;
use super::failure::PyOpFailure;
use crate::engine::Polled;

/// A small batch in flight on one sidecar connection. Wait until `fileno()` is readable
/// (`trio.lowlevel.wait_readable`), then call `poll()`: per op None (delivered) or an
/// `OpFailure` once every answer is in (or `remaining()` has run out), else None. Dropping
/// it early gives the batch up: nothing is written into the buffer after that.
#[pyclass(name = "PolledRead", module = "seaweed_rdma._core")]
pub(super) struct PyPolled {
    inner: Polled<PyDest>,
}

impl PyPolled {
    pub(super) fn new(inner: Polled<PyDest>) -> Self {
        PyPolled { inner }
    }
}

#[pymethods]
impl PyPolled {
    /// The socket to wait on; -1 once the outcomes were given.
    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    /// Seconds until the batch's deadline (0 once passed): wait no longer than this.
    fn remaining(&self) -> f64 {
        self.inner.deadline().saturating_duration_since(Instant::now()).as_secs_f64()
    }

    /// Takes what has arrived, without blocking; the outcomes once the batch is over, else
    /// None. Raises `RuntimeError` when called again after the outcomes.
    fn poll(&mut self) -> PyResult<Option<Vec<Option<PyOpFailure>>>> {
        if self.inner.finished() {
            return Err(PyRuntimeError::new_err("this PolledRead has already finished"));
        }
        Ok(self.inner.poll().map(|out| {
            out.iter().map(|r| r.as_ref().err().map(PyOpFailure::from_failure)).collect()
        }))
    }
}
