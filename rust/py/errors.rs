//! One conversion from [`crate::Error`] into the Python hierarchy that
//! `seaweed_rdma.errors` defines (Python owns the classes and their errno).
//!
//! The classes are imported once each, through `import_exception!`; the match below is
//! exhaustive, so a new variant does not compile until it has a class.

use std::io;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};
use pyo3::PyTypeInfo;

use crate::error::Error;

mod classes {
    pyo3::import_exception!(seaweed_rdma.errors, InvalidFileId);
    pyo3::import_exception!(seaweed_rdma.errors, InvalidRange);
    pyo3::import_exception!(seaweed_rdma.errors, CorruptNeedleError);
    pyo3::import_exception!(seaweed_rdma.errors, ChecksumError);
    pyo3::import_exception!(seaweed_rdma.errors, NeedleNotFound);
    pyo3::import_exception!(seaweed_rdma.errors, NeedleDeleted);
    pyo3::import_exception!(seaweed_rdma.errors, UnsupportedVolume);
    pyo3::import_exception!(seaweed_rdma.errors, StaleLocation);
    pyo3::import_exception!(seaweed_rdma.errors, CorruptManifestError);
    pyo3::import_exception!(seaweed_rdma.errors, ProtocolError);
    pyo3::import_exception!(seaweed_rdma.errors, ConfigError);
    pyo3::import_exception!(seaweed_rdma.errors, Unreachable);
    pyo3::import_exception!(seaweed_rdma.errors, EngineUnavailable);
    pyo3::import_exception!(seaweed_rdma.errors, VerbsError);
    pyo3::import_exception!(seaweed_rdma.errors, VolumeFileNotFound);
    pyo3::import_exception!(seaweed_rdma.errors, VolumeFileDenied);
    pyo3::import_exception!(seaweed_rdma.errors, VolumeIoError);
}

/// The Python class for `err`, and the errno to set when the class's own does not fit
/// (an I/O error keeps the one the OS gave).
fn class_of<'py>(py: Python<'py>, err: &Error) -> (Bound<'py, PyType>, Option<i32>) {
    use classes::*;
    let io_kind = |source: &io::Error| match source.kind() {
        io::ErrorKind::NotFound => VolumeFileNotFound::type_object(py),
        io::ErrorKind::PermissionDenied => VolumeFileDenied::type_object(py),
        _ => VolumeIoError::type_object(py),
    };
    let class = match err {
        Error::BadFid { .. } => InvalidFileId::type_object(py),
        Error::CorruptNeedle(_) => CorruptNeedleError::type_object(py),
        Error::CrcMismatch { .. } => ChecksumError::type_object(py),
        Error::NotFound { .. } => NeedleNotFound::type_object(py),
        Error::Deleted { .. } => NeedleDeleted::type_object(py),
        Error::Unsupported { .. } => UnsupportedVolume::type_object(py),
        Error::StaleLocation { .. } => StaleLocation::type_object(py),
        Error::OutOfBounds { .. } | Error::BadPlan(_) => InvalidRange::type_object(py),
        Error::BadManifest(_) => CorruptManifestError::type_object(py),
        Error::Protocol(_) => ProtocolError::type_object(py),
        Error::Config(_) => ConfigError::type_object(py),
        Error::Network { .. } | Error::Sidecar { .. } => Unreachable::type_object(py),
        Error::Runtime(_) => EngineUnavailable::type_object(py),
        Error::Verbs(_) => VerbsError::type_object(py),
        Error::Io { source, .. } => io_kind(source),
    };
    let os_errno = match err {
        Error::Io { source, .. } | Error::Network { source, .. } | Error::Runtime(source) => {
            source.raw_os_error()
        }
        _ => None,
    };
    (class, os_errno)
}

/// Turns a crate error into an instance of the matching `seaweed_rdma.errors` class, with
/// `reason` set to the variant's stable name.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    Python::attach(|py| {
        let (class, os_errno) = class_of(py, &err);
        let made = class.call1((err.to_string(),)).and_then(|instance| {
            instance.setattr("reason", err.reason())?;
            if let Some(code) = os_errno {
                instance.setattr("errno", code)?;
            }
            Ok(instance)
        });
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(failed) => failed,
        }
    })
}

/// One sample error of every variant as `(reason, exception)`, so tests can check that each
/// maps to its own class with an errno.
#[pyfunction]
fn _error_samples(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for err in Error::samples() {
        let reason = err.reason();
        out.append((reason, to_py_err(err).into_value(py)))?;
    }
    Ok(out)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_error_samples, m)?)
}
