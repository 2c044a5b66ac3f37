//! Point to point: blocking and non-blocking sends and receives with
//! `MPI_ANY_SOURCE`, `MPI_ANY_TAG` and `MPI_PROC_NULL`, and the requests
//! that complete them.

use std::ffi::{c_int, c_void};

use rfx_collectives::{Source, Status as RfxStatus, TagMatch};

use super::{count, entry, int, rank, send_tag};
use crate::abi::{self, Handle, Status};
use crate::error::{self, Failure};
use crate::raw;
use crate::request::{Done, Pending, Then};
use crate::state::{self, Backend, State};

fn source(r: c_int, size: usize) -> Result<Source, Failure> {
    if r == abi::MPI_ANY_SOURCE {
        Ok(Source::Any)
    } else {
        rank(r, size).map(Source::Rank)
    }
}

fn recv_tag(t: c_int) -> Result<TagMatch, Failure> {
    if t == abi::MPI_ANY_TAG {
        Ok(TagMatch::Any)
    } else {
        send_tag(t).map(TagMatch::Tag)
    }
}

/// The status of an rfx receive of bytes.
fn status_of(st: RfxStatus) -> Status {
    Status::of(
        c_int::try_from(st.source).unwrap_or(abi::MPI_UNDEFINED),
        c_int::try_from(st.tag).unwrap_or(abi::TAG_UB),
        st.len,
    )
}

/// Bytes that `n` items of datatype `ty` span.
pub(crate) fn span(st: &State, ty: Handle, n: c_int) -> Result<usize, Failure> {
    let t = st.datatype(ty)?;
    t.span(count(n)?)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_COUNT, format!("{n} items overflow")))
}

fn send(
    st: &mut State,
    buf: *const c_void,
    n: c_int,
    ty: Handle,
    dest: c_int,
    tag: c_int,
    comm: Handle,
) -> Result<(), Failure> {
    let len = span(st, ty, n)?;
    let tag = send_tag(tag)?;
    let c = st.comm(comm)?;
    if dest == abi::MPI_PROC_NULL {
        return Ok(());
    }
    let dest = rank(dest, c.size())?;
    let data = raw::bytes(buf, len)?;
    match &mut c.ep {
        Backend::Own(c) => Ok(c.send::<u8>(data, dest, tag)?),
        Backend::Group(t) => t.send(data, dest, tag),
    }
}

#[allow(clippy::too_many_arguments)]
fn recv(
    st: &mut State,
    buf: *mut c_void,
    n: c_int,
    ty: Handle,
    src: c_int,
    tag: c_int,
    comm: Handle,
) -> Result<Status, Failure> {
    let len = span(st, ty, n)?;
    let tag = recv_tag(tag)?;
    let dt = st.datatype(ty)?.clone();
    let c = st.comm(comm)?;
    if src == abi::MPI_PROC_NULL {
        return Ok(Status::proc_null());
    }
    let src = source(src, c.size())?;
    let out = raw::bytes_mut(buf, len)?;
    dt.receive(out, |out| match &mut c.ep {
        Backend::Own(c) => Ok(status_of(c.recv::<u8>(out, src, tag)?)),
        Backend::Group(t) => {
            let TagMatch::Tag(tag) = tag else {
                return Err(Failure::new(
                    abi::MPI_ERR_UNSUPPORTED_OPERATION,
                    "MPI_ANY_TAG inside a function",
                ));
            };
            let from = match src {
                Source::Rank(r) => Some(r),
                Source::Any => None,
            };
            let got = t.recv(out, from, tag)?;
            let source = from.map_or(abi::MPI_UNDEFINED, |r| r as c_int);
            Ok(Status::of(source, tag as c_int, got))
        }
    })
}

/// Waits for the request at `*req` and frees it.
fn wait_one(st: &mut State, req: *mut Handle) -> Result<Status, Failure> {
    let h = raw::read(req)?;
    if h == abi::MPI_REQUEST_NULL {
        return Ok(Status::empty());
    }
    let p = st
        .requests
        .remove(h)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_REQUEST, format!("no request {h:#x}")))?;
    raw::write(req, abi::MPI_REQUEST_NULL)?;
    p.finish()
}

/// Completes the request at `*req` if it is done: `Some(status)`.
fn test_one(st: &mut State, req: *mut Handle) -> Result<Option<Status>, Failure> {
    let h = raw::read(req)?;
    if h == abi::MPI_REQUEST_NULL {
        return Ok(Some(Status::empty()));
    }
    let done = st
        .requests
        .get_mut(h)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_REQUEST, format!("no request {h:#x}")))?
        .test()?;
    if done {
        wait_one(st, req).map(Some)
    } else {
        Ok(None)
    }
}

entry! {
    fn MPI_Send / PMPI_Send(
        buf: *const c_void, n: c_int, ty: Handle, dest: c_int, tag: c_int, comm: Handle,
    ) -> c_int {
        state::call("MPI_Send", comm, |st| send(st, buf, n, ty, dest, tag, comm))
    }

    fn MPI_Recv / PMPI_Recv(
        buf: *mut c_void, n: c_int, ty: Handle, src: c_int, tag: c_int, comm: Handle,
        status: *mut Status,
    ) -> c_int {
        state::call("MPI_Recv", comm, |st| {
            let s = recv(st, buf, n, ty, src, tag, comm)?;
            raw::write_opt(status, s);
            Ok(())
        })
    }

    fn MPI_Sendrecv / PMPI_Sendrecv(
        sendbuf: *const c_void, scount: c_int, sty: Handle, dest: c_int, stag: c_int,
        recvbuf: *mut c_void, rcount: c_int, rty: Handle, src: c_int, rtag: c_int,
        comm: Handle, status: *mut Status,
    ) -> c_int {
        state::call("MPI_Sendrecv", comm, |st| {
            let s = if dest == abi::MPI_PROC_NULL || src == abi::MPI_PROC_NULL {
                send(st, sendbuf, scount, sty, dest, stag, comm)?;
                recv(st, recvbuf, rcount, rty, src, rtag, comm)?
            } else {
                let (slen, rlen) = (span(st, sty, scount)?, span(st, rty, rcount)?);
                let (stag, rtag) = (send_tag(stag)?, recv_tag(rtag)?);
                let dt = st.datatype(rty)?.clone();
                let c = st.rfx(comm)?;
                let (dest, src) = (rank(dest, c.size())?, source(src, c.size())?);
                let data = raw::bytes(sendbuf, slen)?;
                let got = dt.receive(raw::bytes_mut(recvbuf, rlen)?, |out| {
                    c.sendrecv::<u8>(data, dest, stag, out, src, rtag)
                })?;
                status_of(got)
            };
            raw::write_opt(status, s);
            Ok(())
        })
    }

    fn MPI_Isend / PMPI_Isend(
        buf: *const c_void, n: c_int, ty: Handle, dest: c_int, tag: c_int, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Isend", comm, |st| {
            let len = span(st, ty, n)?;
            let tag = send_tag(tag)?;
            let c = st.rfx(comm)?;
            let p: Box<dyn Pending> = if dest == abi::MPI_PROC_NULL {
                Box::new(Done(Status::empty()))
            } else {
                let dest = rank(dest, c.size())?;
                // Straight from the caller's buffer, no copy: the request
                // completes once every byte is written.
                let r = c.isend_held(raw::held(buf, len)?, dest, tag)?;
                Then::new(r, |_| Ok(Status::empty()))
            };
            let h = st.requests.insert(p);
            raw::write(req, h)
        })
    }

    fn MPI_Irecv / PMPI_Irecv(
        buf: *mut c_void, n: c_int, ty: Handle, src: c_int, tag: c_int, comm: Handle,
        req: *mut Handle,
    ) -> c_int {
        state::call("MPI_Irecv", comm, |st| {
            let len = span(st, ty, n)?;
            let tag = recv_tag(tag)?;
            let dt = st.datatype(ty)?.clone();
            let c = st.rfx(comm)?;
            if src == abi::MPI_PROC_NULL {
                let h = st.requests.insert(Box::new(Done(Status::proc_null())));
                return raw::write(req, h);
            }
            let src = source(src, c.size())?;
            let p: Box<dyn Pending> = if dt.segments.is_empty() {
                // Straight into the caller's buffer.
                let r = c.irecv_into::<u8, _>(raw::held_mut(buf, len)?, src, tag)?;
                Then::new(r, |(_, got): (&mut [u8], RfxStatus)| Ok(status_of(got)))
            } else {
                // A type with holes: into a copy, its data bytes delivered.
                raw::bytes_mut(buf, len)?;
                let out = buf as usize;
                let r = c.irecv::<u8>(vec![0; len], src, tag)?;
                Then::new(r, move |(data, got): (Vec<u8>, RfxStatus)| {
                    dt.deliver(raw::bytes_mut(out as *mut c_void, got.len)?, &data[..got.len]);
                    Ok(status_of(got))
                })
            };
            let h = st.requests.insert(p);
            raw::write(req, h)
        })
    }

    fn MPI_Wait / PMPI_Wait(req: *mut Handle, status: *mut Status) -> c_int {
        state::call("MPI_Wait", abi::MPI_COMM_WORLD, |st| {
            let s = wait_one(st, req)?;
            raw::write_opt(status, s);
            Ok(())
        })
    }

    fn MPI_Test / PMPI_Test(req: *mut Handle, flag: *mut c_int, status: *mut Status) -> c_int {
        state::call("MPI_Test", abi::MPI_COMM_WORLD, |st| match test_one(st, req)? {
            Some(s) => {
                raw::write_opt(status, s);
                raw::write(flag, 1)
            }
            None => raw::write(flag, 0),
        })
    }

    fn MPI_Waitall / PMPI_Waitall(n: c_int, reqs: *mut Handle, statuses: *mut Status) -> c_int {
        state::call("MPI_Waitall", abi::MPI_COMM_WORLD, |st| {
            let n = count(n)?;
            raw::array(reqs, n)?;
            let mut first = None;
            for i in 0..n {
                // Every request completes (or fails) even after a failure.
                let s = match wait_one(st, reqs.wrapping_add(i)) {
                    Ok(s) => s,
                    Err(e) => {
                        let mut s = Status::empty();
                        s.error = error::code(&e);
                        first.get_or_insert(e);
                        s
                    }
                };
                raw::write_nth_opt(statuses, i, s);
            }
            match first {
                None => Ok(()),
                Some(_) if !statuses.is_null() => Err(Failure::new(
                    abi::MPI_ERR_IN_STATUS,
                    "a request failed: see its status",
                )),
                Some(e) => Err(e),
            }
        })
    }

    fn MPI_Testall / PMPI_Testall(n: c_int, reqs: *mut Handle, flag: *mut c_int, statuses: *mut Status) -> c_int {
        state::call("MPI_Testall", abi::MPI_COMM_WORLD, |st| {
            let n = count(n)?;
            let hs = raw::array(reqs, n)?.to_vec();
            let mut all = true;
            for h in hs.into_iter().filter(|&h| h != abi::MPI_REQUEST_NULL) {
                let p = st
                    .requests
                    .get_mut(h)
                    .ok_or_else(|| Failure::new(abi::MPI_ERR_REQUEST, format!("no request {h:#x}")))?;
                all &= p.test()?;
            }
            if !all {
                return raw::write(flag, 0);
            }
            for i in 0..n {
                let s = wait_one(st, reqs.wrapping_add(i))?;
                raw::write_nth_opt(statuses, i, s);
            }
            raw::write(flag, 1)
        })
    }

    fn MPI_Waitany / PMPI_Waitany(n: c_int, reqs: *mut Handle, index: *mut c_int, status: *mut Status) -> c_int {
        state::call("MPI_Waitany", abi::MPI_COMM_WORLD, |st| {
            let n = count(n)?;
            let hs = raw::array(reqs, n)?.to_vec();
            let live: Vec<usize> = (0..n).filter(|&i| hs[i] != abi::MPI_REQUEST_NULL).collect();
            if live.is_empty() {
                raw::write_opt(status, Status::empty());
                return raw::write(index, abi::MPI_UNDEFINED);
            }
            // Bounded like every rfx wait: each test progresses the engine,
            // and the first request's own wait ends in its op timeout.
            for _ in 0..1_000_000 {
                for &i in &live {
                    if let Some(s) = test_one(st, reqs.wrapping_add(i))? {
                        raw::write_opt(status, s);
                        return raw::write(index, int(i)?);
                    }
                }
            }
            let i = live[0];
            let s = wait_one(st, reqs.wrapping_add(i))?;
            raw::write_opt(status, s);
            raw::write(index, int(i)?)
        })
    }

    fn MPI_Request_free / PMPI_Request_free(req: *mut Handle) -> c_int {
        state::call("MPI_Request_free", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(req)?;
            st.requests
                .remove(h)
                .ok_or_else(|| Failure::new(abi::MPI_ERR_REQUEST, format!("no request {h:#x}")))?;
            raw::write(req, abi::MPI_REQUEST_NULL)
        })
    }

    fn MPI_Get_count / PMPI_Get_count(status: *const Status, ty: Handle, n: *mut c_int) -> c_int {
        state::call("MPI_Get_count", abi::MPI_COMM_WORLD, |st| {
            let s = raw::read(status)?;
            let t = st.datatype(ty)?;
            let bytes = s.bytes();
            let c = if t.extent == 0 {
                0
            } else if bytes % t.extent as u64 == 0 {
                c_int::try_from(bytes / t.extent as u64).unwrap_or(abi::MPI_UNDEFINED)
            } else {
                abi::MPI_UNDEFINED
            };
            raw::write(n, c)
        })
    }
}
