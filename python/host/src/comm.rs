//! `ctx.comm`'s engine: the executor's communicator table (`rfx_comm`)
//! behind the methods `rfx.collectives.Communicator` calls, on Python
//! buffers viewed in place, with the GIL released during each operation.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use rfx_abi::comm::{code, CommOp, Dtype, RfxComm, ANY_SOURCE};

/// The group's communicator as the executor's table offers it: send,
/// recv, barrier, bcast, reduce, allreduce, allgather, gather, scatter,
/// alltoall (not split or dup: a group function has one communicator).
#[pyclass(unsendable, module = "rfx_host", name = "ExecutorComm")]
pub(crate) struct ExecutorComm {
    /// The table's address; 0 once the invocation returned.
    table: usize,
    #[pyo3(get)]
    rank: u32,
    #[pyo3(get)]
    size: u32,
}

impl ExecutorComm {
    pub(crate) fn new(table: usize, rank: u32, size: u32) -> ExecutorComm {
        ExecutorComm { table, rank, size }
    }

    pub(crate) fn end(&mut self) {
        self.table = 0;
    }

    /// The table, if it has the entries of `version`.
    fn since(&self, version: u32, what: &str) -> PyResult<RfxComm> {
        let t = self.table()?;
        if t.abi_version < version {
            return Err(missing(what));
        }
        Ok(t)
    }

    /// The root's all-ranks buffer of a gather (`writable`) or a scatter,
    /// held and checked to be one `block` per rank; `None` elsewhere.
    fn rooted(
        &self,
        buf: Option<&Bound<'_, PyAny>>,
        root: u32,
        block: usize,
        writable: bool,
    ) -> PyResult<Option<PyBuffer<u8>>> {
        if self.rank != root {
            return Ok(None);
        }
        let buf =
            buf.ok_or_else(|| PyValueError::new_err("the root needs its all-ranks buffer"))?;
        let b = bytes(buf, writable)?;
        self.blocks(b.len_bytes(), block)?;
        Ok(Some(b))
    }

    /// Checks that `total` bytes are one block of `block` bytes per rank.
    fn blocks(&self, total: usize, block: usize) -> PyResult<()> {
        if total != block * self.size as usize {
            return Err(PyValueError::new_err(format!(
                "the buffer holds {total} bytes, not {} ranks of {block}",
                self.size
            )));
        }
        Ok(())
    }

    fn table(&self) -> PyResult<RfxComm> {
        if self.table == 0 {
            return Err(PyRuntimeError::new_err(
                "ctx.comm is used after its invocation returned",
            ));
        }
        // SAFETY: the address the executor passed in the call's context,
        // valid until the call returns (the extended ABI's contract);
        // `end` zeroes it when the call returns, before the table can go.
        let t = unsafe { *(self.table as *const RfxComm) };
        if t.abi_version < 1 {
            return Err(PyRuntimeError::new_err("an unknown communicator table"));
        }
        Ok(t)
    }
}

/// A buffer's bytes, in place: `memoryview(buf).cast("B")`, held.
fn bytes(buf: &Bound<'_, PyAny>, writable: bool) -> PyResult<PyBuffer<u8>> {
    Ok(typed(buf, writable)?.0)
}

/// A buffer's bytes, held, and its element's format character.
fn typed(buf: &Bound<'_, PyAny>, writable: bool) -> PyResult<(PyBuffer<u8>, char)> {
    let view = buf
        .py()
        .import("builtins")?
        .getattr("memoryview")?
        .call1((buf,))?;
    let format: String = view.getattr("format")?.extract()?;
    let code = match format.trim_start_matches(['@', '=', '<']).as_bytes() {
        [c] => *c as char,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unsupported buffer format {format:?}"
            )))
        }
    };
    let view = view.call_method1("cast", ("B",))?;
    let b = PyBuffer::<u8>::get(&view)?;
    if writable && b.readonly() {
        return Err(PyValueError::new_err("the buffer is read-only"));
    }
    Ok((b, code))
}

/// The table's element type for a buffer's type code.
fn dtype(code: char) -> PyResult<(Dtype, usize)> {
    Ok(match code {
        'd' => (Dtype::F64, 8),
        'f' => (Dtype::F32, 4),
        'q' | 'l' | 'n' => (Dtype::I64, 8),
        'Q' | 'L' | 'N' => (Dtype::U64, 8),
        'i' => (Dtype::I32, 4),
        'I' => (Dtype::U32, 4),
        'B' | 'c' => (Dtype::U8, 1),
        other => {
            return Err(PyValueError::new_err(format!(
                "the executor's communicator reduces no {other:?} elements"
            )))
        }
    })
}

fn op(name: &str) -> PyResult<CommOp> {
    CommOp::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("no reduction named {name:?}")))
}

fn check(rc: i32) -> PyResult<()> {
    match rc {
        code::OK => Ok(()),
        code::PEER_GONE => Err(PyRuntimeError::new_err("a peer of the group is gone")),
        code::TIMEOUT => Err(PyTimeoutError::new_err("the group operation timed out")),
        code::TRUNCATED => Err(PyValueError::new_err(
            "the message is longer than the buffer",
        )),
        code::INVALID => Err(PyValueError::new_err("invalid arguments")),
        other => Err(PyRuntimeError::new_err(format!(
            "the group operation failed ({other})"
        ))),
    }
}

fn missing(what: &str) -> PyErr {
    PyNotImplementedError::new_err(format!(
        "{what} is not in this executor's communicator table"
    ))
}

/// Runs a table call with the GIL released. Addresses cross as integers;
/// the buffers they point into are held by the caller for the call.
fn released(py: Python<'_>, f: impl FnOnce() -> i32 + Send) -> PyResult<()> {
    check(py.allow_threads(f))
}

#[pymethods]
impl ExecutorComm {
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        let t = self.table()?;
        let h = t.handle as usize;
        // SAFETY: the table's entry point on its own handle.
        released(py, move || unsafe { (t.barrier)(h as *mut _) })
    }

    fn send(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: u32, tag: u32) -> PyResult<()> {
        let t = self.table()?;
        let b = bytes(buf, false)?;
        let (h, p, n) = (
            t.handle as usize,
            b.buf_ptr() as usize,
            b.len_bytes() as u64,
        );
        // SAFETY: `b` holds the buffer (p, n) until after the call.
        released(py, move || unsafe {
            (t.send)(h as *mut _, p as *const _, n, dest, tag)
        })
    }

    /// Receives into `buf`; returns (source, tag, items received), the
    /// source -1 when any was accepted (the table does not say which).
    #[pyo3(signature = (buf, source = None, tag = None))]
    fn recv(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        source: Option<u32>,
        tag: Option<u32>,
    ) -> PyResult<(i64, u32, usize)> {
        let t = self.table()?;
        let tag = tag.ok_or_else(|| missing("a receive of any tag"))?;
        let (b, code) = typed(buf, true)?;
        let (h, p, n) = (
            t.handle as usize,
            b.buf_ptr() as usize,
            b.len_bytes() as u64,
        );
        let src = source.unwrap_or(ANY_SOURCE);
        let mut got = 0u64;
        let got_at = &mut got as *mut u64 as usize;
        // SAFETY: `b` holds the writable buffer (p, n) and `got` lives on
        // this frame until after the call.
        released(py, move || unsafe {
            (t.recv)(h as *mut _, p as *mut _, n, src, tag, got_at as *mut u64)
        })?;
        let item = dtype(code).map(|(_, s)| s).unwrap_or(1);
        Ok((source.map_or(-1, i64::from), tag, got as usize / item))
    }

    fn bcast(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: u32) -> PyResult<()> {
        let t = self.table()?;
        let b = bytes(buf, true)?;
        let (h, p, n) = (
            t.handle as usize,
            b.buf_ptr() as usize,
            b.len_bytes() as u64,
        );
        // SAFETY: `b` holds the writable buffer (p, n) until after the call.
        released(py, move || unsafe {
            (t.bcast)(h as *mut _, p as *mut _, n, root)
        })
    }

    /// Reduces `buf` in place: the result lands in `root`'s.
    fn reduce(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        op_name: &str,
        root: u32,
    ) -> PyResult<()> {
        let t = self.table()?;
        let (b, code) = typed(buf, true)?;
        let (dt, item) = dtype(code)?;
        let o = op(op_name)?;
        // The table's input and output are distinct buffers.
        let input = b.to_vec(py)?;
        let (h, p, count) = (
            t.handle as usize,
            b.buf_ptr() as usize,
            (b.len_bytes() / item) as u64,
        );
        let i = input.as_ptr() as usize;
        // SAFETY: `b` holds the output (p), `input` lives on this frame;
        // both `count` elements long.
        released(py, move || unsafe {
            (t.reduce)(
                h as *mut _,
                i as *const _,
                p as *mut _,
                count,
                dt as u32,
                o as u32,
                root,
            )
        })
    }

    /// Reduces on every rank into `buf`: from `send`, or in place.
    #[pyo3(signature = (send, buf, op_name))]
    fn allreduce(
        &self,
        py: Python<'_>,
        send: Option<&Bound<'_, PyAny>>,
        buf: &Bound<'_, PyAny>,
        op_name: &str,
    ) -> PyResult<()> {
        let t = self.table()?;
        let (b, code) = typed(buf, true)?;
        let (dt, item) = dtype(code)?;
        let o = op(op_name)?;
        let held;
        let copy;
        let i = match send {
            Some(s) => {
                held = bytes(s, false)?;
                if held.len_bytes() != b.len_bytes() {
                    return Err(PyValueError::new_err(format!(
                        "send buffer of {} bytes, receive buffer of {}",
                        held.len_bytes(),
                        b.len_bytes()
                    )));
                }
                held.buf_ptr() as usize
            }
            None => {
                copy = b.to_vec(py)?;
                copy.as_ptr() as usize
            }
        };
        let (h, p, count) = (
            t.handle as usize,
            b.buf_ptr() as usize,
            (b.len_bytes() / item) as u64,
        );
        // SAFETY: `b` holds the output, `held` or `copy` the input, each
        // `count` elements, alive on this frame until after the call.
        released(py, move || unsafe {
            (t.allreduce)(
                h as *mut _,
                i as *const _,
                p as *mut _,
                count,
                dt as u32,
                o as u32,
            )
        })
    }

    fn allgather(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let t = self.table()?;
        let s = bytes(send, false)?;
        let r = bytes(recv, true)?;
        let n = s.len_bytes();
        if r.len_bytes() != n * self.size as usize {
            return Err(PyValueError::new_err(format!(
                "the receive buffer holds {} bytes, not {} ranks of {n}",
                r.len_bytes(),
                self.size
            )));
        }
        let (h, sp, rp) = (
            t.handle as usize,
            s.buf_ptr() as usize,
            r.buf_ptr() as usize,
        );
        // SAFETY: `s` and `r` hold the buffers, of the checked lengths.
        released(py, move || unsafe {
            (t.allgather)(h as *mut _, sp as *const _, n as u64, rp as *mut _)
        })
    }

    /// Every rank's `send` into the root's `recv`, in rank order.
    #[pyo3(signature = (send, recv, root))]
    fn gather(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        root: u32,
    ) -> PyResult<()> {
        let t = self.since(2, "gather")?;
        let s = bytes(send, false)?;
        let n = s.len_bytes();
        let r = self.rooted(recv, root, n, true)?;
        let rp = r.as_ref().map_or(0, |r| r.buf_ptr() as usize);
        let (h, sp) = (t.handle as usize, s.buf_ptr() as usize);
        // SAFETY: `s` and (at the root) `r` hold the buffers, of the
        // checked lengths; elsewhere the table ignores `out`.
        released(py, move || unsafe {
            (t.gather)(h as *mut _, sp as *const _, n as u64, rp as *mut _, root)
        })
    }

    /// Block r of the root's `send` into rank r's `recv`.
    #[pyo3(signature = (send, recv, root))]
    fn scatter(
        &self,
        py: Python<'_>,
        send: Option<&Bound<'_, PyAny>>,
        recv: &Bound<'_, PyAny>,
        root: u32,
    ) -> PyResult<()> {
        let t = self.since(2, "scatter")?;
        let r = bytes(recv, true)?;
        let n = r.len_bytes();
        let s = self.rooted(send, root, n, false)?;
        let sp = s.as_ref().map_or(0, |s| s.buf_ptr() as usize);
        let (h, rp) = (t.handle as usize, r.buf_ptr() as usize);
        // SAFETY: `r` and (at the root) `s` hold the buffers, of the
        // checked lengths; elsewhere the table ignores `in`.
        released(py, move || unsafe {
            (t.scatter)(h as *mut _, sp as *const _, n as u64, rp as *mut _, root)
        })
    }

    /// Block r of every rank's `send` into block (sender) of rank r's `recv`.
    fn alltoall(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let t = self.since(2, "alltoall")?;
        let s = bytes(send, false)?;
        let r = bytes(recv, true)?;
        let total = s.len_bytes();
        let size = self.size.max(1) as usize;
        if total % size != 0 || r.len_bytes() != total {
            return Err(PyValueError::new_err(format!(
                "alltoall needs send and receive buffers of {size} equal blocks ({total} and {} bytes)",
                r.len_bytes()
            )));
        }
        let (h, sp, rp) = (
            t.handle as usize,
            s.buf_ptr() as usize,
            r.buf_ptr() as usize,
        );
        let n = (total / size) as u64;
        // SAFETY: `s` and `r` hold the buffers, of the checked lengths.
        released(py, move || unsafe {
            (t.alltoall)(h as *mut _, sp as *const _, n, rp as *mut _)
        })
    }

    #[pyo3(signature = (*_args))]
    fn split(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        Err(missing("split"))
    }

    fn dup(&self) -> PyResult<()> {
        Err(missing("dup"))
    }
}
