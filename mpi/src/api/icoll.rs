//! Non-blocking collectives: rfx's requests over owned buffers, the result
//! copied into the caller's buffer when the MPI request completes.

use std::ffi::{c_int, c_void};

use bytemuck::Pod;
use rfx_collectives::Request;

use super::coll::{in_place, input_of, reduction, typed_vec, with_plan};
use super::ordered::{non_commutative, Ordered};
use super::p2p::span;
use super::{entry, root};
use crate::abi::{Handle, Status};
use crate::datatype::Datatype;
use crate::error::Failure;
use crate::op::Plan;
use crate::raw;
use crate::request::{Pending, Then};
use crate::state::{self, State};

/// A request whose result's first `len` bytes go to `out` (none if 0).
/// (The holes of a type with padding are left as they were.)
fn into<T: Pod + Send>(
    req: Request<Vec<T>>,
    out: *mut c_void,
    len: usize,
    ty: &Datatype,
) -> Box<dyn Pending> {
    let out = out as usize;
    let ty = ty.clone();
    Then::new(req, move |v: Vec<T>| {
        let bytes: &[u8] = bytemuck::cast_slice(&v);
        let n = len.min(bytes.len());
        ty.deliver(raw::bytes_mut(out as *mut c_void, n)?, &bytes[..n]);
        Ok(Status::empty())
    })
}

/// The type of a result nobody receives.
fn nothing() -> &'static Datatype {
    crate::datatype::predefined_ref(0x247).expect("MPI_BYTE is predefined")
}

fn post(st: &mut State, req: *mut Handle, p: Box<dyn Pending>) -> Result<(), Failure> {
    let h = st.requests.insert(p);
    raw::write(req, h)
}

/// A non-blocking reduction of the whole buffer (allreduce, scan,
/// exscan): the input copied, the result into `recv` at completion (on
/// rank 0 too unless `rank0 = false`).
macro_rules! reduce_into {
    ($st:ident, $comm:ident, $req:ident, $send:ident, $recv:ident, $n:ident, $ty:ident, $op:ident,
     |$c:ident, $v:ident, $o:ident| $call:expr, rank0 = $rank0:expr) => {{
        let (plan, len, dt) = reduction($st, $n, $ty, $op)?;
        let $c = $st.rfx($comm)?;
        let data = input_of($send, $recv, len, true)?;
        let keep = if !$rank0 && $c.rank() == 0 { 0 } else { len };
        let p = with_plan!(plan, |$o: T| {
            let $v: Vec<T> = typed_vec(&data);
            into($call?, $recv, keep, &dt)
        });
        post($st, $req, p)
    }};
}

entry! {
    fn MPI_Ibarrier / PMPI_Ibarrier(comm: Handle, req: *mut Handle) -> c_int {
        state::call("MPI_Ibarrier", comm, |st| {
            let r = st.rfx(comm)?.ibarrier();
            post(st, req, Then::new(r, |()| Ok(Status::empty())))
        })
    }

    fn MPI_Ibcast / PMPI_Ibcast(
        buf: *mut c_void, n: c_int, ty: Handle, root_: c_int, comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Ibcast", comm, |st| {
            let len = span(st, ty, n)?;
            let dt = st.datatype(ty)?.clone();
            let c = st.rfx(comm)?;
            let r = root(root_, c.size())?;
            let data = raw::bytes_mut(buf, len)?.to_vec();
            let p = into(c.ibcast::<u8>(data, r)?, buf, len, &dt);
            post(st, req, p)
        })
    }

    fn MPI_Ireduce / PMPI_Ireduce(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, root_: c_int,
        comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Ireduce", comm, |st| {
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let c = st.rfx(comm)?;
                let r = root(root_, c.size())?;
                let at_root = c.rank() == r;
                let input = input_of(send, recv, len, at_root)?;
                let n = c.size();
                let gathered = c.igather::<u8>(input, r)?;
                let keep = if at_root { len } else { 0 };
                let p = Ordered { f, ty, dt: &dt, len }.pending(gathered, n, recv, keep);
                return post(st, req, p);
            }
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            let r = root(root_, c.size())?;
            let mine = c.rank() == r;
            let data = input_of(send, recv, len, mine)?;
            let keep = if mine { len } else { 0 };
            let p = with_plan!(plan, |o: T| {
                let v: Vec<T> = typed_vec(&data);
                into(c.ireduce(v, r, o)?, recv, keep, &dt)
            });
            post(st, req, p)
        })
    }

    fn MPI_Iallreduce / PMPI_Iallreduce(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Iallreduce", comm, |st| {
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let input = input_of(send, recv, len, true)?;
                let c = st.rfx(comm)?;
                let n = c.size();
                let gathered = c.iallgather::<u8>(input);
                let p = Ordered { f, ty, dt: &dt, len }.pending(gathered, n, recv, len);
                return post(st, req, p);
            }
            reduce_into!(st, comm, req, send, recv, n, ty, op, |c, v, o| c.iallreduce(v, o), rank0 = true)
        })
    }

    fn MPI_Iscan / PMPI_Iscan(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Iscan", comm, |st| {
            reduce_into!(st, comm, req, send, recv, n, ty, op, |c, v, o| c.iscan(v, o), rank0 = true)
        })
    }

    fn MPI_Iexscan / PMPI_Iexscan(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Iexscan", comm, |st| {
            // Rank 0's receive buffer is undefined after an exscan: leave it.
            reduce_into!(st, comm, req, send, recv, n, ty, op, |c, v, o| c.iexscan(v, o), rank0 = false)
        })
    }

    fn MPI_Ireduce_scatter_block / PMPI_Ireduce_scatter_block(
        send: *const c_void, recv: *mut c_void, n: c_int, ty: Handle, op: Handle, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Ireduce_scatter_block", comm, |st| {
            if let Some(f) = non_commutative(st.op(op)?) {
                let (dt, len) = (st.datatype(ty)?.clone(), span(st, ty, n)?);
                let c = st.rfx(comm)?;
                let n = c.size();
                let input = input_of(send, recv, len * n, true)?;
                let gathered = c.ialltoall::<u8>(input)?;
                let p = Ordered { f, ty, dt: &dt, len }.pending(gathered, n, recv, len);
                return post(st, req, p);
            }
            let (plan, len, dt) = reduction(st, n, ty, op)?;
            let c = st.rfx(comm)?;
            let data = input_of(send, recv, len * c.size(), true)?;
            let p = with_plan!(plan, |o: T| {
                let v: Vec<T> = typed_vec(&data);
                into(c.ireduce_scatter(v, o)?, recv, len, &dt)
            });
            post(st, req, p)
        })
    }

    fn MPI_Igather / PMPI_Igather(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, root_: c_int, comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Igather", comm, |st| {
            // Arguments the standard says to ignore are not looked at.
            let c = st.comm(comm)?;
            let (me, size) = (c.rank(), c.size());
            let r = root(root_, size)?;
            let p = if me == r {
                let rlen = span(st, rty, rcount)?;
                let dt = st.datatype(rty)?.clone();
                let own = if in_place(send) {
                    raw::bytes(recv, rlen * size)?[me * rlen..(me + 1) * rlen].to_vec()
                } else {
                    raw::bytes(send, span(st, sty, scount)?)?.to_vec()
                };
                into(st.rfx(comm)?.igather::<u8>(own, r)?, recv, rlen * size, &dt)
            } else {
                let own = raw::bytes(send, span(st, sty, scount)?)?.to_vec();
                into(st.rfx(comm)?.igather::<u8>(own, r)?, recv, 0, nothing())
            };
            post(st, req, p)
        })
    }

    fn MPI_Iscatter / PMPI_Iscatter(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, root_: c_int, comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Iscatter", comm, |st| {
            let c = st.comm(comm)?;
            let (me, size) = (c.rank(), c.size());
            let r = root(root_, size)?;
            let p = if me == r {
                let slen = span(st, sty, scount)?;
                let all = raw::bytes(send, slen * size)?.to_vec();
                let (keep, dt) = if in_place(recv) {
                    (0, nothing().clone())
                } else {
                    (slen, st.datatype(rty)?.clone())
                };
                into(st.rfx(comm)?.iscatter::<u8>(all, slen, r)?, recv, keep, &dt)
            } else {
                let rlen = span(st, rty, rcount)?;
                let dt = st.datatype(rty)?.clone();
                into(st.rfx(comm)?.iscatter::<u8>(Vec::new(), rlen, r)?, recv, rlen, &dt)
            };
            post(st, req, p)
        })
    }

    fn MPI_Iallgather / PMPI_Iallgather(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Iallgather", comm, |st| {
            let rlen = span(st, rty, rcount)?;
            let dt = st.datatype(rty)?.clone();
            let c = st.comm(comm)?;
            let (me, size) = (c.rank(), c.size());
            let own = if in_place(send) {
                raw::bytes(recv, rlen * size)?[me * rlen..(me + 1) * rlen].to_vec()
            } else {
                raw::bytes(send, span(st, sty, scount)?)?.to_vec()
            };
            let p = into(st.rfx(comm)?.iallgather::<u8>(own), recv, rlen * size, &dt);
            post(st, req, p)
        })
    }

    fn MPI_Ialltoall / PMPI_Ialltoall(
        send: *const c_void, scount: c_int, sty: Handle, recv: *mut c_void, rcount: c_int,
        rty: Handle, comm: Handle, req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Ialltoall", comm, |st| {
            let rlen = span(st, rty, rcount)?;
            let dt = st.datatype(rty)?.clone();
            let size = st.comm(comm)?.size();
            let all = if in_place(send) {
                raw::bytes(recv, rlen * size)?.to_vec()
            } else {
                raw::bytes(send, span(st, sty, scount)? * size)?.to_vec()
            };
            let p = into(st.rfx(comm)?.ialltoall::<u8>(all)?, recv, rlen * size, &dt);
            post(st, req, p)
        })
    }
}
