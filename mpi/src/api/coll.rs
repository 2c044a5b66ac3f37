//! Blocking collectives, with `MPI_IN_PLACE`. Reductions run over the
//! element type of the datatype ([`Plan`]); everything else moves bytes.

use std::ffi::{c_int, c_void};

use bytemuck::Pod;
use rfx_collectives::{CollError, Communicator, Element, Op};

use super::ordered::{non_commutative, Ordered};
use super::p2p::span;
use super::{entry, root};
use crate::abi::{self, Handle};
use crate::datatype::Datatype;
use crate::error::Failure;
use crate::group::Table;
use crate::op::{self, Plan};
use crate::raw;
use crate::state::{self, Backend, State};

/// Runs `f` on `bytes` as a slice of `T`: in place when aligned, else on
/// an aligned copy written back after.
pub(crate) fn with_typed<T: Pod, R>(bytes: &mut [u8], f: impl FnOnce(&mut [T]) -> R) -> R {
    match bytemuck::try_cast_slice_mut::<u8, T>(bytes) {
        Ok(t) => f(t),
        Err(_) => {
            let mut v: Vec<T> = typed_vec(bytes);
            let r = f(&mut v);
            bytes.copy_from_slice(bytemuck::cast_slice(&v));
            r
        }
    }
}

/// A copy of `bytes` as `T`s (whole ones: a tail shorter than a `T` is
/// left out).
pub(crate) fn typed_vec<T: Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>().max(1)];
    let n = std::mem::size_of_val(&v[..]);
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&bytes[..n]);
    v
}

/// `bytes` as `T`s, copied only when misaligned.
pub(crate) fn as_typed<T: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => std::borrow::Cow::Owned(typed_vec(bytes)),
    }
}

/// Runs `$body` with `$op` the plan's rfx op over its element type `$T`.
macro_rules! with_plan {
    ($plan:expr, |$op:ident : $T:ident| $body:expr) => {
        match $plan {
            Plan::I8($op) => {
                type $T = i8;
                $body
            }
            Plan::U8($op) => {
                type $T = u8;
                $body
            }
            Plan::I16($op) => {
                type $T = i16;
                $body
            }
            Plan::U16($op) => {
                type $T = u16;
                $body
            }
            Plan::I32($op) => {
                type $T = i32;
                $body
            }
            Plan::U32($op) => {
                type $T = u32;
                $body
            }
            Plan::I64($op) => {
                type $T = i64;
                $body
            }
            Plan::U64($op) => {
                type $T = u64;
                $body
            }
            Plan::F32($op) => {
                type $T = f32;
                $body
            }
            Plan::F64($op) => {
                type $T = f64;
                $body
            }
            Plan::Bytes($op) => {
                type $T = u8;
                $body
            }
        }
    };
}
pub(crate) use with_plan;

/// The plan for `op` on `ty`, and the bytes `n` items span.
pub(crate) fn reduction(
    st: &State,
    n: c_int,
    ty: Handle,
    op: Handle,
) -> Result<(Plan, usize, Datatype), Failure> {
    let t = st.datatype(ty)?;
    let len = span(st, ty, n)?;
    let plan = op::plan(st.op(op)?, t, ty)?;
    Ok((plan, len, t.clone()))
}

/// The input of a reduction: `send`, or the receive buffer in place
/// (where `in_place_allowed`: the root of a reduce, everyone otherwise).
pub(crate) fn input_of(
    send: *const c_void,
    recv: *mut c_void,
    len: usize,
    in_place_allowed: bool,
) -> Result<Vec<u8>, Failure> {
    if in_place_allowed && in_place(send) {
        Ok(raw::bytes(recv, len)?.to_vec())
    } else {
        Ok(raw::bytes(send, len)?.to_vec())
    }
}

pub(crate) fn in_place(p: *const c_void) -> bool {
    p as usize == abi::MPI_IN_PLACE
}

/// A reduction's input and output, both the caller's.
type TwoBuffers<'a> = (&'a [u8], &'a mut [u8]);

/// The input and the output of a reduction that has both (not
/// `MPI_IN_PLACE`, buffers apart, a datatype without gaps); `None` where
/// it must work in place in `recv` ([`load`]).
fn two_buffers<'a>(
    send: *const c_void,
    recv: *mut c_void,
    len: usize,
    dt: &crate::datatype::Datatype,
) -> Result<Option<TwoBuffers<'a>>, Failure> {
    let (s, r) = (send as usize, recv as usize);
    let apart = s.saturating_add(len) <= r || r.saturating_add(len) <= s;
    if in_place(send) || !apart || !dt.segments.is_empty() {
        return Ok(None);
    }
    Ok(Some((raw::bytes(send, len)?, raw::bytes_mut(recv, len)?)))
}

/// `recv` holds the input: `send` copied in unless it is `MPI_IN_PLACE`.
fn load<'a>(send: *const c_void, recv: *mut c_void, len: usize) -> Result<&'a mut [u8], Failure> {
    let r = raw::bytes_mut(recv, len)?;
    if !in_place(send) {
        r.copy_from_slice(raw::bytes(send, len)?);
    }
    Ok(r)
}

/// A per-rank block of `block` bytes checked against the other side's.
fn blocks(a: usize, b: usize, what: &str) -> Result<usize, Failure> {
    if a != b {
        return Err(Failure::new(
            abi::MPI_ERR_TRUNCATE,
            format!("{what}: {a} bytes sent per rank, {b} expected"),
        ));
    }
    Ok(a)
}

/// A reduction of a communicator over a buffer of `T` (allreduce, scan...).
type Reduction<T> = fn(&mut Communicator, &mut [T], Op<T>) -> Result<(), CollError>;

fn reduce_in<T: Element + Pod>(
    c: &mut Communicator,
    buf: &mut [u8],
    op: Op<T>,
    f: Reduction<T>,
) -> Result<(), Failure> {
    with_typed::<T, _>(buf, |b| f(c, b, op)).map_err(Failure::from)
}

/// A reduction of `input` into `out`, both bytes of `T`s, with the
/// communicator's two-buffer call `f` (no copy of the input first).
fn reduce_to_in<T: Element + Pod>(
    c: &mut Communicator,
    input: &[u8],
    out: &mut [u8],
    op: Op<T>,
    f: impl FnOnce(&mut Communicator, &[T], &mut [T], Op<T>) -> Result<(), CollError>,
) -> Result<(), Failure> {
    let typed = as_typed::<T>(input);
    with_typed::<T, _>(out, |b| f(c, &typed, b, op)).map_err(Failure::from)
}

/// The group table of `comm`, when it is a function's group.
fn group_of(st: &mut State, comm: Handle) -> Option<Table> {
    match st.comm(comm).ok()?.ep {
        Backend::Group(t) => Some(t),
        Backend::Own(_) => None,
    }
}

/// Reduce (to `root`) or allreduce over a function's group.
#[allow(clippy::too_many_arguments)]
fn group_reduce(
    st: &State,
    t: Table,
    send: *const c_void,
    recv: *mut c_void,
    n: c_int,
    ty: Handle,
    op: Handle,
    root: Option<usize>,
) -> Result<(), Failure> {
    let dt = st.datatype(ty)?;
    let o = st.op(op)?;
    let len = span(st, ty, n)?;
    let items = super::count(n)?;
    let on_root = root.is_none_or(|r| r == t.rank());
    let out_len = if on_root { len } else { 0 };
    let input = if in_place(send) {
        raw::bytes(recv, len)?.to_vec()
    } else {
        raw::bytes(send, len)?.to_vec()
    };
    let mut sink = [0u8; 0];
    let out = if on_root {
        raw::bytes_mut(recv, out_len)?
    } else {
        &mut sink[..]
    };
    t.reduce(&input, out, items, dt, o, root)
}

entry! {
    fn MPI_Barrier / PMPI_Barrier(comm: Handle) -> c_int {
        state::call("MPI_Barrier", comm, |st| match &mut st.comm(comm)?.ep {
            Backend::Own(c) => Ok(c.barrier()?),
            Backend::Group(t) => t.barrier(),
        })
    }

    fn MPI_Bcast / PMPI_Bcast(buf: *mut c_void, n: c_int, ty: Handle, root_: c_int, comm: Handle) -> c_int {
        state::call("MPI_Bcast", comm, |st| {
            let len = span(st, ty, n)?;
            let dt = st.datatype(ty)?.clone();
            let c = st.comm(comm)?;
            let r = root(root_, c.size())?;
            let data = raw::bytes_mut(buf, len)?;
            dt.receive(data, |data| match &mut c.ep {
                Backend::Own(c) => Ok(c.bcast::<u8>(data, r)?),
                Backend::Group(t) => t.bcast(data, r),
            })
        })
    }

    fn MPI_Reduce / PMPI_Reduce(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle,
        root_: c_int, comm: Handle,
    ) -> c_int {
        state::call("MPI_Reduce", comm, |st| {
            if let Some(t) = group_of(st, comm) {
                let r = root(root_, t.size())?;
                return group_reduce(st, t, send, recv, n, ty, op, Some(r));
            }
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let c = st.rfx(comm)?;
                let r = root(root_, c.size())?;
                let at_root = c.rank() == r;
                let input = input_of(send, recv, len, at_root)?;
                let out = if at_root { raw::bytes_mut(recv, len)? } else { &mut [] };
                return Ordered { f, ty, dt: &dt, len }.reduce(c, &input, out, r);
            }
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            let r = root(root_, c.size())?;
            if c.rank() == r {
                if let Some((input, out)) = two_buffers(send, recv, len, &dt)? {
                    // No copy of the input first (see `reduce_to`).
                    return with_plan!(plan, |o: T| {
                        reduce_to_in::<T>(c, input, out, o, |c, s, b, o| c.reduce_to(s, b, r, o))
                    });
                }
            }
            if c.rank() != r {
                // Off the root the input is only read: a leaf of the tree
                // sends straight from it (no copy first), as MPI does.
                let input = raw::bytes(send, len)?;
                return with_plan!(plan, |o: T| {
                    let typed = as_typed::<T>(input);
                    Ok(c.reduce_to(&typed, &mut [], r, o)?)
                });
            }
            let buf = load(send, recv, len)?;
            dt.receive(buf, |buf| {
                with_plan!(plan, |o: T| with_typed::<T, _>(buf, |b| c.reduce(b, r, o)))
            })?;
            Ok(())
        })
    }

    fn MPI_Allreduce / PMPI_Allreduce(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Allreduce", comm, |st| {
            if let Some(t) = group_of(st, comm) {
                return group_reduce(st, t, send, recv, n, ty, op, None);
            }
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let input = input_of(send, recv, len, true)?;
                let c = st.rfx(comm)?;
                let out = raw::bytes_mut(recv, len)?;
                return Ordered { f, ty, dt: &dt, len }.allreduce(c, &input, out);
            }
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            if let Some((input, out)) = two_buffers(send, recv, len, &dt)? {
                // No copy of the input first (see `allreduce_to`).
                return with_plan!(plan, |o: T| {
                    reduce_to_in::<T>(c, input, out, o, |c, s, b, o| c.allreduce_to(s, b, o))
                });
            }
            let buf = load(send, recv, len)?;
            dt.receive(buf, |buf| {
                with_plan!(plan, |o: T| reduce_in::<T>(c, buf, o, |c, b, o| c.allreduce(b, o)))
            })
        })
    }

    fn MPI_Scan / PMPI_Scan(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Scan", comm, |st| {
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            if let Some((input, out)) = two_buffers(send, recv, len, &dt)? {
                // No copy of the input first (see `scan_to`).
                return with_plan!(plan, |o: T| {
                    reduce_to_in::<T>(c, input, out, o, |c, s, b, o| c.scan_to(s, b, o))
                });
            }
            let buf = load(send, recv, len)?;
            dt.receive(buf, |buf| {
                with_plan!(plan, |o: T| reduce_in::<T>(c, buf, o, |c, b, o| c.scan(b, o)))
            })
        })
    }

    fn MPI_Exscan / PMPI_Exscan(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Exscan", comm, |st| {
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            if let Some((input, out)) = two_buffers(send, recv, len, &dt)? {
                // No copy of the input first (see `exscan_to`).
                return with_plan!(plan, |o: T| {
                    reduce_to_in::<T>(c, input, out, o, |c, s, b, o| c.exscan_to(s, b, o))
                });
            }
            let buf = load(send, recv, len)?;
            dt.receive(buf, |buf| {
                with_plan!(plan, |o: T| reduce_in::<T>(c, buf, o, |c, b, o| c.exscan(b, o)))
            })
        })
    }

    fn MPI_Reduce_scatter_block / PMPI_Reduce_scatter_block(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Reduce_scatter_block", comm, |st| {
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let c = st.rfx(comm)?;
                let input = input_of(send, recv, len * c.size(), true)?;
                let out = raw::bytes_mut(recv, len)?;
                return Ordered { f, ty, dt: &dt, len }.reduce_scatter(c, &input, out);
            }
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            let all = len * c.size();
            // In place, the input is the whole receive buffer.
            let input = if in_place(send) {
                raw::bytes(recv, all)?.to_vec()
            } else {
                raw::bytes(send, all)?.to_vec()
            };
            let out = raw::bytes_mut(recv, len)?;
            dt.receive(out, |out| {
                with_plan!(plan, |o: T| {
                    let input = as_typed::<T>(&input);
                    with_typed::<T, _>(out, |b| c.reduce_scatter(&input, b, o))
                })
            })?;
            Ok(())
        })
    }

    fn MPI_Gather / PMPI_Gather(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, root_: c_int, comm: Handle,
    ) -> c_int {
        state::call("MPI_Gather", comm, |st| {
            let c_ = st.comm(comm)?;
            let (me, size) = (c_.rank(), c_.size());
            let r = root(root_, size)?;
            if me == r {
                let block = span(st, rty, rcount)?;
                let copy;
                let (own, out) = if in_place(send) {
                    let out = raw::bytes_mut(recv, block * size)?;
                    copy = out[me * block..(me + 1) * block].to_vec();
                    (&copy[..], out)
                } else {
                    let b = blocks(span(st, sty, scount)?, block, "MPI_Gather")?;
                    raw::send_recv(send, b, recv, block * size)?
                };
                let dt = st.datatype(rty)?.clone();
                let c = st.rfx(comm)?;
                dt.receive(out, |out| c.gather::<u8>(own, out, r))?;
            } else {
                let len = span(st, sty, scount)?;
                st.rfx(comm)?.gather::<u8>(raw::bytes(send, len)?, &mut [], r)?;
            }
            Ok(())
        })
    }

    fn MPI_Scatter / PMPI_Scatter(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, root_: c_int, comm: Handle,
    ) -> c_int {
        state::call("MPI_Scatter", comm, |st| {
            let c_ = st.comm(comm)?;
            let (me, size) = (c_.rank(), c_.size());
            let r = root(root_, size)?;
            if me == r {
                let block = span(st, sty, scount)?;
                let input = raw::bytes(send, block * size)?;
                if in_place(recv) {
                    let mut own = vec![0u8; block];
                    st.rfx(comm)?.scatter::<u8>(input, &mut own, r)?;
                } else {
                    let b = blocks(block, span(st, rty, rcount)?, "MPI_Scatter")?;
                    let out = raw::bytes_mut(recv, b)?;
                    let dt = st.datatype(rty)?.clone();
                    let c = st.rfx(comm)?;
                    dt.receive(out, |out| c.scatter::<u8>(input, out, r))?;
                }
            } else {
                let len = span(st, rty, rcount)?;
                let dt = st.datatype(rty)?.clone();
                let c = st.rfx(comm)?;
                dt.receive(raw::bytes_mut(recv, len)?, |out| c.scatter::<u8>(&[], out, r))?;
            }
            Ok(())
        })
    }

    fn MPI_Allgather / PMPI_Allgather(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Allgather", comm, |st| {
            let block = span(st, rty, rcount)?;
            let c_ = st.comm(comm)?;
            let (me, size) = (c_.rank(), c_.size());
            let copy;
            let (own, out) = if in_place(send) {
                let out = raw::bytes_mut(recv, block * size)?;
                copy = out[me * block..(me + 1) * block].to_vec();
                (&copy[..], out)
            } else {
                let b = blocks(span(st, sty, scount)?, block, "MPI_Allgather")?;
                raw::send_recv(send, b, recv, block * size)?
            };
            let dt = st.datatype(rty)?.clone();
            dt.receive(out, |out| match &mut st.comm(comm)?.ep {
                Backend::Own(c) => Ok(c.allgather::<u8>(own, out)?),
                Backend::Group(t) => t.allgather(own, out),
            })
        })
    }

    fn MPI_Alltoall / PMPI_Alltoall(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, comm: Handle,
    ) -> c_int {
        state::call("MPI_Alltoall", comm, |st| {
            let block = span(st, rty, rcount)?;
            let size = st.rfx(comm)?.size();
            let copy;
            let (input, out) = if in_place(send) {
                let out = raw::bytes_mut(recv, block * size)?;
                copy = out.to_vec();
                (&copy[..], out)
            } else {
                let b = blocks(span(st, sty, scount)?, block, "MPI_Alltoall")?;
                raw::send_recv(send, b * size, recv, block * size)?
            };
            let dt = st.datatype(rty)?.clone();
            let c = st.rfx(comm)?;
            dt.receive(out, |out| c.alltoall::<u8>(input, out))?;
            Ok(())
        })
    }

    fn MPI_Reduce_local / PMPI_Reduce_local(
        input: *const c_void, inout: *mut c_void, n: c_int, ty: Handle, op: Handle,
    ) -> c_int {
        state::call("MPI_Reduce_local", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            let len = span(st, ty, n)?;
            let acc = raw::bytes_mut(inout, len)?;
            let x = raw::bytes(input, len)?;
            match st.op(op)? {
                // inout = in op inout, in that order (a user op may not commute).
                op::MpiOp::User { f, .. } => {
                    let mut copy = x.to_vec();
                    raw::call_user(f, &mut copy, acc, len / t.extent.max(1), ty);
                    Ok(())
                }
                o => {
                    let plan = op::plan(o, t, ty)?;
                    with_plan!(plan, |o: T| {
                        let x = as_typed::<T>(x);
                        with_typed::<T, _>(acc, |a| o.apply(a, &x))
                    })?;
                    Ok(())
                }
            }
        })
    }
}
