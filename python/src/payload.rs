//! Borrowing a payload's bytes from any Python object that exports a contiguous buffer
//! (`bytes`, `bytearray`, `memoryview`, `array.array`, numpy arrays, `mmap`, ...), without
//! copying them into a Python object.

use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A buffer exported by a Python object (`PyObject_GetBuffer`), released on drop. While it
/// is held, the exporter keeps the memory in place: a `bytearray` cannot be resized, an
/// `mmap` cannot be closed.
struct BufferExport {
    view: ffi::Py_buffer,
}

impl BufferExport {
    /// Asks `obj` for its bytes as one contiguous, unformatted run (`PyBUF_SIMPLE`). Fails
    /// with `TypeError` for an object without the buffer protocol (a `str`, say) and with
    /// `BufferError` for a non-contiguous one (a strided numpy slice).
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<BufferExport> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: `obj` is a live object (we hold a reference and the interpreter is
        // attached); `view` is writable memory of the right type, which PyObject_GetBuffer
        // fills completely when it returns 0 and leaves alone otherwise.
        let (object, buffer) = (obj.as_ptr(), view.as_mut_ptr());
        // SAFETY: as above: `object` is live and `buffer` points at writable memory.
        let rc: c_int = unsafe { ffi::PyObject_GetBuffer(object, buffer, ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufferExport {
            // SAFETY: PyObject_GetBuffer returned 0, so it initialised the view.
            view: unsafe { view.assume_init() },
        })
    }

    fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE export is `len` contiguous bytes at `buf`, valid until
        // PyBuffer_Release, which only our Drop calls, after every borrow of self ended.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) }
    }
}

impl Drop for BufferExport {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released
        // exactly once. Drop runs where the export was made: with the interpreter attached
        // (the export never crosses `Python::detach`, only the slice borrowed from it does).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}

/// Calls `f` with the bytes of `obj`, borrowed in place. `bytes` takes a fast path (no
/// buffer export); every other object goes through the buffer protocol.
///
/// Other Python threads cannot change the bytes during `f` while the interpreter stays
/// attached; `f` may detach for a long copy, as a C extension would (an immutable `bytes`
/// cannot change, and a concurrent write into a mutable buffer is the writer's race, which
/// at worst makes the frame fail its payload check at the reader).
pub fn with_payload<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let export = BufferExport::get(obj)?;
    Ok(f(export.as_slice()))
}
