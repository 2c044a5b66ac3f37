//! Communicators: rank and size, dup, split, free, compare, names and the
//! predefined attributes.

use std::ffi::{c_char, c_int, c_void};

use super::{entry, int};
use crate::abi::{self, Handle};
use crate::error::Failure;
use crate::raw;
use crate::state::{self, Comm};

static TAG_UB: c_int = abi::TAG_UB;
static NO_HOST: c_int = abi::MPI_PROC_NULL;
static ANY_IO: c_int = abi::MPI_ANY_SOURCE;
static NOT_GLOBAL: c_int = 0;

entry! {
    fn MPI_Comm_rank / PMPI_Comm_rank(comm: Handle, rank: *mut c_int) -> c_int {
        state::call("MPI_Comm_rank", comm, |st| {
            let r = st.comm(comm)?.rank();
            raw::write(rank, int(r)?)
        })
    }

    fn MPI_Comm_size / PMPI_Comm_size(comm: Handle, size: *mut c_int) -> c_int {
        state::call("MPI_Comm_size", comm, |st| {
            let n = st.comm(comm)?.size();
            raw::write(size, int(n)?)
        })
    }

    fn MPI_Comm_dup / PMPI_Comm_dup(comm: Handle, out: *mut Handle) -> c_int {
        state::call("MPI_Comm_dup", comm, |st| {
            let c = st.comm(comm)?;
            let handler = c.errhandler;
            let mut new = Comm::new(c.rfx()?.dup()?, "");
            new.errhandler = handler;
            let h = st.comms.insert(new);
            raw::write(out, h)
        })
    }

    fn MPI_Comm_split / PMPI_Comm_split(comm: Handle, color: c_int, key: c_int, out: *mut Handle) -> c_int {
        state::call("MPI_Comm_split", comm, |st| {
            let color = match color {
                abi::MPI_UNDEFINED => None,
                c => Some(u32::try_from(c).map_err(|_| Failure::arg(format!("color {c}")))?),
            };
            let c = st.comm(comm)?;
            let handler = c.errhandler;
            let h = match c.rfx()?.split(color, key)? {
                None => abi::MPI_COMM_NULL,
                Some(new) => {
                    let mut new = Comm::new(new, "");
                    new.errhandler = handler;
                    st.comms.insert(new)
                }
            };
            raw::write(out, h)
        })
    }

    fn MPI_Comm_free / PMPI_Comm_free(comm: *mut Handle) -> c_int {
        state::call("MPI_Comm_free", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(comm)?;
            st.free_comm(h)?;
            raw::write(comm, abi::MPI_COMM_NULL)
        })
    }

    fn MPI_Comm_compare / PMPI_Comm_compare(a: Handle, b: Handle, result: *mut c_int) -> c_int {
        state::call("MPI_Comm_compare", a, |st| {
            if a == b {
                st.comm(a)?;
                return raw::write(result, abi::MPI_IDENT);
            }
            let (ma, ca) = {
                let c = st.rfx(a)?;
                (c.members().to_vec(), c.context())
            };
            let (mb, cb) = {
                let c = st.rfx(b)?;
                (c.members().to_vec(), c.context())
            };
            let r = if ca == cb && ma == mb {
                abi::MPI_IDENT
            } else if ma == mb {
                abi::MPI_CONGRUENT
            } else {
                let (mut sa, mut sb) = (ma, mb);
                sa.sort_unstable();
                sb.sort_unstable();
                if sa == sb {
                    abi::MPI_SIMILAR
                } else {
                    abi::MPI_UNEQUAL
                }
            };
            raw::write(result, r)
        })
    }

    fn MPI_Comm_test_inter / PMPI_Comm_test_inter(comm: Handle, flag: *mut c_int) -> c_int {
        state::call("MPI_Comm_test_inter", comm, |st| {
            st.comm(comm)?;
            raw::write(flag, 0)
        })
    }

    fn MPI_Comm_set_name / PMPI_Comm_set_name(comm: Handle, name: *const c_char) -> c_int {
        state::call("MPI_Comm_set_name", comm, |st| {
            let n = raw::cstr(name)?;
            st.comm(comm)?.name = n.chars().take(abi::MPI_MAX_OBJECT_NAME - 1).collect();
            Ok(())
        })
    }

    fn MPI_Comm_get_name / PMPI_Comm_get_name(comm: Handle, name: *mut c_char, len: *mut c_int) -> c_int {
        state::call("MPI_Comm_get_name", comm, |st| {
            let n = st.comm(comm)?.name.clone();
            raw::write_str(name, len, &n, abi::MPI_MAX_OBJECT_NAME)
        })
    }

    fn MPI_Comm_get_attr / PMPI_Comm_get_attr(
        comm: Handle,
        keyval: c_int,
        value: *mut c_void,
        flag: *mut c_int,
    ) -> c_int {
        state::call("MPI_Comm_get_attr", comm, |st| {
            st.comm(comm)?;
            let v: Option<&'static c_int> = match keyval {
                abi::MPI_TAG_UB => Some(&TAG_UB),
                abi::MPI_HOST => Some(&NO_HOST),
                abi::MPI_IO => Some(&ANY_IO),
                abi::MPI_WTIME_IS_GLOBAL => Some(&NOT_GLOBAL),
                _ => None,
            };
            match v {
                Some(p) => {
                    raw::write(value.cast::<*const c_int>(), p as *const c_int)?;
                    raw::write(flag, 1)
                }
                None => raw::write(flag, 0),
            }
        })
    }
}
