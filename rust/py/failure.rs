//! `OpFailure`: why one op was not delivered, as every engine binding returns it (the
//! blocking calls, tickets, polled batches).

use pyo3::prelude::*;

use crate::engine::Failure;

/// Why one op was not delivered: `reason` is a stable short name for counters
/// (`"timeout"`, `"not_found"`, `"down"`...), `message` says it for people.
#[pyclass(frozen, name = "OpFailure", module = "seaweed_rdma._core")]
pub(super) struct PyOpFailure {
    #[pyo3(get)]
    reason: &'static str,
    #[pyo3(get)]
    message: String,
}

#[pymethods]
impl PyOpFailure {
    fn __str__(&self) -> &str {
        &self.message
    }

    fn __repr__(&self) -> String {
        format!("OpFailure({:?}, {:?})", self.reason, self.message)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        // Compares equal to its reason, so `result == "not_found"` reads naturally.
        match other.extract::<String>() {
            Ok(text) => text == self.reason,
            Err(_) => other
                .cast::<PyOpFailure>()
                .is_ok_and(|f| f.get().reason == self.reason && f.get().message == self.message),
        }
    }
}

impl PyOpFailure {
    pub(super) fn from_failure(why: &Failure) -> Self {
        Self { reason: why.reason(), message: why.to_string() }
    }
}
