//! The communicator on Python buffers (numpy arrays, `array.array`,
//! `bytearray`, ...): each operation reads the buffers' element type from
//! their format, views them in place (no copies beyond the transport's)
//! and runs with the GIL released. `rfx.collectives` gives it mpi4py's
//! names.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rfx::collectives::{ReduceOp, Source, TagMatch};

use crate::buffer::Held;
use crate::errors::{self, RfxError};

/// Runs `$body` with `$t` the Rust element type of type code `$code` (a
/// `struct` format character: `d` f64, `f` f32, `q`/`l` i64, `i` i32, `h`
/// i16, `b` i8, `Q`/`L` u64, `I` u32, `H` u16, `B`/`c` u8).
macro_rules! typed {
    ($code:expr, |$t:ident| $body:expr) => {{
        match $code {
            'd' => {
                type $t = f64;
                $body
            }
            'f' => {
                type $t = f32;
                $body
            }
            'q' | 'l' | 'n' => {
                type $t = i64;
                $body
            }
            'i' => {
                type $t = i32;
                $body
            }
            'h' => {
                type $t = i16;
                $body
            }
            'b' => {
                type $t = i8;
                $body
            }
            'Q' | 'L' | 'N' => {
                type $t = u64;
                $body
            }
            'I' => {
                type $t = u32;
                $body
            }
            'H' => {
                type $t = u16;
                $body
            }
            'B' | 'c' => {
                type $t = u8;
                $body
            }
            other => Err(PyValueError::new_err(format!(
                "no rfx element type for buffer format {other:?}"
            ))),
        }
    }};
}

/// The reduction of a name: the names are rfx-abi's, shared with the
/// Python host's `ctx.comm`.
fn op(name: &str) -> PyResult<ReduceOp> {
    use rfx::executors::comm::CommOp;
    let op = CommOp::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("no reduction named {name:?}")))?;
    Ok(match op {
        CommOp::Sum => ReduceOp::Sum,
        CommOp::Prod => ReduceOp::Prod,
        CommOp::Min => ReduceOp::Min,
        CommOp::Max => ReduceOp::Max,
        CommOp::BitAnd => ReduceOp::BitAnd,
        CommOp::BitOr => ReduceOp::BitOr,
        CommOp::BitXor => ReduceOp::BitXor,
    })
}

/// The communicator of this rank.
#[pyclass(module = "rfx._native")]
pub(crate) struct Communicator {
    inner: Mutex<rfx::collectives::Communicator>,
    rank: usize,
    size: usize,
}

impl Communicator {
    fn new(c: rfx::collectives::Communicator) -> Communicator {
        Communicator {
            rank: c.rank(),
            size: c.size(),
            inner: Mutex::new(c),
        }
    }
}

/// Runs `f` on the communicator with the GIL released.
fn run<R: Send>(
    py: Python<'_>,
    c: &Mutex<rfx::collectives::Communicator>,
    f: impl FnOnce(&mut rfx::collectives::Communicator) -> Result<R, rfx::collectives::CollError> + Send,
) -> PyResult<R> {
    py.allow_threads(|| {
        let mut g = c
            .lock()
            .map_err(|_| RfxError::new_err("the communicator's lock is poisoned"))?;
        f(&mut g).map_err(errors::coll)
    })
}

/// `rfx.collectives.IN_PLACE`, registered by that module at import.
static IN_PLACE: pyo3::sync::GILOnceCell<Py<PyAny>> = pyo3::sync::GILOnceCell::new();

/// Registers the `IN_PLACE` marker (called once by `rfx.collectives`).
#[pyfunction]
pub(crate) fn set_in_place(py: Python<'_>, marker: Py<PyAny>) {
    let _ = IN_PLACE.set(py, marker);
}

#[pymethods]
impl Communicator {
    /// `Communicator.Allreduce` itself, mpi4py's signature, bound by
    /// `rfx.collectives` as the instance's method: one call, no Python
    /// frame in between (the smallest allreduces are mostly call cost).
    #[pyo3(name = "Allreduce", signature = (sendbuf, recvbuf, op = "sum"))]
    fn allreduce_mpi(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: &str,
    ) -> PyResult<()> {
        let in_place = IN_PLACE.get(py).is_some_and(|m| sendbuf.is(m));
        self.allreduce(py, (!in_place).then_some(sendbuf), recvbuf, op)
    }

    /// Joins the job described by the environment (`rfx run`, srun,
    /// mpirun: see the collectives docs).
    #[staticmethod]
    fn from_env(py: Python<'_>) -> PyResult<Communicator> {
        let c = py
            .allow_threads(rfx::collectives::Communicator::from_env)
            .map_err(errors::coll)?;
        Ok(Communicator::new(c))
    }

    #[getter]
    fn rank(&self) -> usize {
        self.rank
    }

    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        run(py, &self.inner, |c| c.barrier())
    }

    fn send(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: usize, tag: u32) -> PyResult<()> {
        let b = Held::get(buf, false)?;
        typed!(b.code()?, |T| {
            let s = b.slice::<T>()?;
            run(py, &self.inner, |c| c.send(s, dest, tag))
        })
    }

    /// Receives into `buf`; returns (source, tag, items received).
    #[pyo3(signature = (buf, source = None, tag = None))]
    fn recv(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        source: Option<usize>,
        tag: Option<u32>,
    ) -> PyResult<(usize, u32, usize)> {
        let src = source.map_or(Source::Any, Source::Rank);
        let tm = tag.map_or(TagMatch::Any, TagMatch::Tag);
        let mut b = Held::get(buf, true)?;
        typed!(b.code()?, |T| {
            let s = b.slice_mut::<T>()?;
            let st = run(py, &self.inner, |c| c.recv(s, src, tm))?;
            Ok((st.source, st.tag, st.len))
        })
    }

    fn bcast(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: usize) -> PyResult<()> {
        let mut b = Held::get(buf, true)?;
        typed!(b.code()?, |T| {
            let s = b.slice_mut::<T>()?;
            run(py, &self.inner, |c| c.bcast(s, root))
        })
    }

    /// Reduces `buf` in place: the result lands in `root`'s.
    fn reduce(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        op_name: &str,
        root: usize,
    ) -> PyResult<()> {
        let o = op(op_name)?;
        let mut b = Held::get(buf, true)?;
        typed!(b.code()?, |T| {
            let s = b.slice_mut::<T>()?;
            run(py, &self.inner, |c| c.reduce(s, root, o))
        })
    }

    /// Reduces on every rank into `buf`: its own contents (`send` None,
    /// in place) or `send`'s, read where it lies (never copied whole first).
    #[pyo3(signature = (send, buf, op_name))]
    fn allreduce(
        &self,
        py: Python<'_>,
        send: Option<&Bound<'_, PyAny>>,
        buf: &Bound<'_, PyAny>,
        op_name: &str,
    ) -> PyResult<()> {
        let o = op(op_name)?;
        let mut b = Held::get(buf, true)?;
        let sb = send.map(|s| Held::get(s, false)).transpose()?;
        if let Some(sb) = &sb {
            sb.same_type(&b)?;
            sb.disjoint(&b)?;
        }
        typed!(b.code()?, |T| {
            let dst = b.slice_mut::<T>()?;
            if let Some(sb) = &sb {
                let src = sb.slice::<T>()?;
                if src.len() != dst.len() {
                    return Err(PyValueError::new_err(format!(
                        "send buffer of {} items, receive buffer of {}",
                        src.len(),
                        dst.len()
                    )));
                }
                // No copy of the input first (see `allreduce_to`).
                return run(py, &self.inner, |c| c.allreduce_to(src, dst, o));
            }
            run(py, &self.inner, |c| c.allreduce(dst, o))
        })
    }

    /// Gathers `send` into `recv` at `root` (`recv` may be None elsewhere).
    #[pyo3(signature = (send, recv, root))]
    fn gather(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        root: usize,
    ) -> PyResult<()> {
        let sb = Held::get(send, false)?;
        let mut rb = recv.map(|r| Held::get(r, true)).transpose()?;
        if let Some(rb) = &rb {
            sb.same_type(rb)?;
            sb.disjoint(rb)?;
        }
        typed!(sb.code()?, |T| {
            let s = sb.slice::<T>()?;
            let r = match &mut rb {
                Some(rb) => rb.slice_mut::<T>()?,
                None => &mut [],
            };
            run(py, &self.inner, |c| c.gather(s, r, root))
        })
    }

    /// Scatters `root`'s `send` (None elsewhere) into every `recv`.
    #[pyo3(signature = (send, recv, root))]
    fn scatter(
        &self,
        py: Python<'_>,
        send: Option<&Bound<'_, PyAny>>,
        recv: &Bound<'_, PyAny>,
        root: usize,
    ) -> PyResult<()> {
        let mut rb = Held::get(recv, true)?;
        let sb = send.map(|s| Held::get(s, false)).transpose()?;
        if let Some(sb) = &sb {
            sb.same_type(&rb)?;
            sb.disjoint(&rb)?;
        }
        typed!(rb.code()?, |T| {
            let s = match &sb {
                Some(sb) => sb.slice::<T>()?,
                None => &[],
            };
            let r = rb.slice_mut::<T>()?;
            run(py, &self.inner, |c| c.scatter(s, r, root))
        })
    }

    fn allgather(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (sb, mut rb) = pair(send, recv)?;
        typed!(sb.code()?, |T| {
            let (s, r) = (sb.slice::<T>()?, rb.slice_mut::<T>()?);
            run(py, &self.inner, |c| c.allgather(s, r))
        })
    }

    fn alltoall(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (sb, mut rb) = pair(send, recv)?;
        typed!(sb.code()?, |T| {
            let (s, r) = (sb.slice::<T>()?, rb.slice_mut::<T>()?);
            run(py, &self.inner, |c| c.alltoall(s, r))
        })
    }

    /// The ranks of equal `color` in a new communicator, ordered by `key`
    /// (then rank); `None` for a rank that passed `color=None`.
    #[pyo3(signature = (color, key = 0))]
    fn split(
        &self,
        py: Python<'_>,
        color: Option<u32>,
        key: i32,
    ) -> PyResult<Option<Communicator>> {
        Ok(run(py, &self.inner, |c| c.split(color, key))?.map(Communicator::new))
    }

    /// A communicator of the same ranks whose traffic never mixes with
    /// this one's.
    fn dup(&self, py: Python<'_>) -> PyResult<Communicator> {
        Ok(Communicator::new(run(py, &self.inner, |c| c.dup())?))
    }
}

/// A send and a receive buffer of one element type that do not overlap.
fn pair(send: &Bound<'_, PyAny>, recv: &Bound<'_, PyAny>) -> PyResult<(Held, Held)> {
    let sb = Held::get(send, false)?;
    let rb = Held::get(recv, true)?;
    sb.same_type(&rb)?;
    sb.disjoint(&rb)?;
    Ok((sb, rb))
}
