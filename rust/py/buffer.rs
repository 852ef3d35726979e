//! Writable Python buffers the engine fills: an export that keeps the memory alive and
//! unresizable, and the address and length of that memory.
//!
//! The crate is built against the stable ABI of Python 3.10, whose headers (and so
//! `pyo3::buffer`) leave out the C buffer protocol; it joined the stable ABI in 3.11 with
//! the same `Py_buffer` layout every CPython 3 has had. The two functions are declared here
//! and taken from the running interpreter, which exports them on every version this
//! package supports. The export held is a `memoryview` of the object (a plain Python
//! object, so it can be dropped on any thread); the `Py_buffer` is taken from that view
//! only to read where its memory is, and released at once.

use std::ffi::{c_char, c_int, c_void};
use std::mem::MaybeUninit;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi::{PyObject, Py_ssize_t};
use pyo3::prelude::*;

use crate::engine::DestBuffer;

/// CPython's `Py_buffer` (Include/pybuffer.h), unchanged since 3.3.
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut PyObject,
    len: Py_ssize_t,
    itemsize: Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut Py_ssize_t,
    strides: *mut Py_ssize_t,
    suboffsets: *mut Py_ssize_t,
    internal: *mut c_void,
}

const PYBUF_WRITABLE: c_int = 0x0001;
/// `PyBUF_C_CONTIGUOUS`: `PyBUF_STRIDES` (0x0010 | `PyBUF_ND` 0x0008) | 0x0020.
const PYBUF_C_CONTIGUOUS: c_int = 0x0038;

extern "C" {
    fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// A writable, C-contiguous export of a Python object, with its address.
pub(super) struct WritableView<'py> {
    /// Keeps the export (and so the memory) alive; `None` for an empty buffer.
    _export: Option<Bound<'py, PyAny>>,
    pub(super) addr: usize,
    pub(super) len: usize,
}

impl<'py> WritableView<'py> {
    /// Exports `obj`'s memory; a `TypeError` names what is wrong with a buffer that is
    /// read-only, not contiguous, or not a buffer at all.
    pub(super) fn new(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        // SAFETY: `obj` is a live object; the call returns a new reference or NULL with an
        // exception set, which `from_owned_ptr_or_err` turns into an owned `Bound` or that
        // error.
        let view = unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyMemoryView_FromObject(obj.as_ptr()))
        }
        .map_err(|e| PyTypeError::new_err(format!("read_into needs a writable buffer: {e}")))?;
        let mut raw = MaybeUninit::<RawBuffer>::zeroed();
        // SAFETY: `view` is a live memoryview and `raw` a writable `Py_buffer`; we hold the
        // GIL. On success the struct is filled and must be released (below); on failure
        // nothing is held and an exception is set.
        let rc = unsafe {
            PyObject_GetBuffer(view.as_ptr(), raw.as_mut_ptr(), PYBUF_WRITABLE | PYBUF_C_CONTIGUOUS)
        };
        if rc != 0 {
            let e = PyErr::fetch(py);
            return Err(PyTypeError::new_err(format!(
                "read_into needs a writable, C-contiguous buffer: {e}"
            )));
        }
        // SAFETY: `PyObject_GetBuffer` succeeded, so it filled the struct.
        let mut raw = unsafe { raw.assume_init() };
        let (addr, len) = (raw.buf as usize, usize::try_from(raw.len).unwrap_or(0));
        // SAFETY: `raw` came from a successful `PyObject_GetBuffer` and is released once.
        // The memory stays put: `view` holds its own export of `obj` until it is dropped.
        unsafe { PyBuffer_Release(&mut raw) };
        if len == 0 {
            return Ok(Self { _export: None, addr: 0, len });
        }
        Ok(Self { _export: Some(view), addr, len })
    }

    /// The same export, owned, for a submitted batch.
    pub(super) fn into_dest(self) -> PyDest {
        PyDest { _export: self._export.map(Bound::unbind), addr: self.addr, len: self.len }
    }
}

/// A Python buffer that a submitted batch fills: the export that keeps its memory alive,
/// and where that memory is.
pub(crate) struct PyDest {
    /// Dropped (the export released) by whoever drops the `PyDest` last: `PyTicket`, with the
    /// GIL; or the batch, on an engine thread, if the ticket was dropped first (pyo3 then
    /// queues the decref until a thread next holds the GIL).
    _export: Option<Py<PyAny>>,
    addr: usize,
    len: usize,
}

impl DestBuffer for PyDest {
    fn bytes(&mut self) -> &mut [u8] {
        match self.addr {
            0 => &mut [],
            addr => {
                // SAFETY: `_export` holds a writable, C-contiguous buffer export of `len`
                // bytes at `addr` for as long as this `PyDest` lives, which keeps the memory
                // alive and unresizable; the slice borrows `self` mutably, so it cannot
                // outlive the `PyDest` nor be taken twice at once. The batch that owns the
                // `PyDest` is the only Rust code that reaches it: the ticket hands out no view
                // of the buffer, and gives the `PyDest` back only after the batch is over. As
                // with `socket.recv_into`, Python code must leave the buffer alone meanwhile.
                unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, self.len) }
            }
        }
    }
}
