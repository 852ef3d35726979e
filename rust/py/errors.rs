//! One conversion from [`crate::Error`] into the Python hierarchy that
//! `seaweed_rdma.errors` defines (so Python owns the classes and their errno).

use pyo3::prelude::*;

use crate::error::Error;

fn class_name(err: &Error) -> &'static str {
    match err {
        Error::BadFid { .. } => "InvalidFileId",
        Error::CorruptNeedle(_) => "CorruptNeedleError",
        Error::CrcMismatch { .. } => "ChecksumError",
        Error::NotFound { .. } => "NeedleNotFound",
        Error::Deleted { .. } => "NeedleDeleted",
        Error::Unsupported { .. } => "UnsupportedVolume",
        Error::OutOfBounds { .. } | Error::BadPlan(_) => "InvalidRange",
        Error::BadManifest(_) => "CorruptManifestError",
        Error::Sidecar { .. } => "Unreachable",
        Error::Runtime(_) => "SeaweedRdmaError",
        Error::Io { .. } | Error::StaleLocation { .. } | Error::Protocol(_) => "SeaweedRdmaError",
        Error::Config(_) => "SeaweedRdmaError",
        Error::Network { .. } => "Unreachable",
        Error::Verbs(_) => "SeaweedRdmaError",
    }
}

/// Turns a crate error into an instance of the matching `seaweed_rdma.errors` class.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    let message = err.to_string();
    Python::attach(|py| {
        let made = py
            .import("seaweed_rdma.errors")
            .and_then(|m| m.getattr(class_name(&err)))
            .and_then(|cls| cls.call1((message.clone(),)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(import_failed) => import_failed,
        }
    })
}
