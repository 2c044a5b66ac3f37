//! Datatypes, addresses, user operations, and the integer conversions of
//! handles (`MPI_Comm_toint` and the like, for Fortran bindings).

use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_void};

use super::{count, entry, int, status};
use crate::abi::{self, Handle};
use crate::error::Failure;
use crate::op::{MpiOp, UserFn};
use crate::raw;
use crate::state::{self, State};

fn derived(st: &mut State, h: Handle) -> Result<&mut crate::datatype::Datatype, Failure> {
    if crate::datatype::predefined(h).is_some() {
        return Err(Failure::new(abi::MPI_ERR_TYPE, "a predefined datatype"));
    }
    st.types
        .get_mut(h)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_TYPE, format!("no datatype {h:#x}")))
}

entry! {
    fn MPI_Type_size / PMPI_Type_size(ty: Handle, size: *mut c_int) -> c_int {
        state::call("MPI_Type_size", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            raw::write(size, int(t.size)?)
        })
    }

    fn MPI_Type_size_c / PMPI_Type_size_c(ty: Handle, size: *mut i64) -> c_int {
        state::call("MPI_Type_size_c", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            raw::write(size, t.size as i64)
        })
    }

    fn MPI_Type_get_extent / PMPI_Type_get_extent(ty: Handle, lb: *mut isize, extent: *mut isize) -> c_int {
        state::call("MPI_Type_get_extent", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            raw::write(lb, 0)?;
            raw::write(extent, t.extent as isize)
        })
    }

    fn MPI_Type_get_true_extent / PMPI_Type_get_true_extent(ty: Handle, lb: *mut isize, extent: *mut isize) -> c_int {
        state::call("MPI_Type_get_true_extent", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            raw::write(lb, 0)?;
            raw::write(extent, t.true_extent as isize)
        })
    }

    fn MPI_Type_get_name / PMPI_Type_get_name(ty: Handle, name: *mut c_char, len: *mut c_int) -> c_int {
        state::call("MPI_Type_get_name", abi::MPI_COMM_WORLD, |st| {
            let t = st.datatype(ty)?;
            raw::write_str(name, len, &t.name, abi::MPI_MAX_OBJECT_NAME)
        })
    }

    fn MPI_Type_set_name / PMPI_Type_set_name(ty: Handle, name: *const c_char) -> c_int {
        state::call("MPI_Type_set_name", abi::MPI_COMM_WORLD, |st| {
            let n: String = raw::cstr(name)?.chars().take(abi::MPI_MAX_OBJECT_NAME - 1).collect();
            derived(st, ty)?.name = Cow::Owned(n);
            Ok(())
        })
    }

    fn MPI_Type_contiguous / PMPI_Type_contiguous(n: c_int, old: Handle, out: *mut Handle) -> c_int {
        state::call("MPI_Type_contiguous", abi::MPI_COMM_WORLD, |st| {
            let n = count(n)?;
            let t = st
                .datatype(old)?
                .contiguous(n)
                .ok_or_else(|| Failure::new(abi::MPI_ERR_COUNT, "a type of more than usize bytes"))?;
            let h = st.types.insert(t);
            raw::write(out, h)
        })
    }

    fn MPI_Type_dup / PMPI_Type_dup(old: Handle, out: *mut Handle) -> c_int {
        state::call("MPI_Type_dup", abi::MPI_COMM_WORLD, |st| {
            let mut t = st.datatype(old)?.clone();
            t.predefined = false;
            let h = st.types.insert(t);
            raw::write(out, h)
        })
    }

    fn MPI_Type_commit / PMPI_Type_commit(ty: *mut Handle) -> c_int {
        state::call("MPI_Type_commit", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(ty)?;
            st.datatype(h).map(drop)
        })
    }

    fn MPI_Type_free / PMPI_Type_free(ty: *mut Handle) -> c_int {
        state::call("MPI_Type_free", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(ty)?;
            derived(st, h)?;
            st.types.remove(h);
            raw::write(ty, abi::MPI_DATATYPE_NULL)
        })
    }

    fn MPI_Get_address / PMPI_Get_address(location: *const c_void, address: *mut isize) -> c_int {
        status(raw::write(address, location as isize))
    }

    fn MPI_Aint_add / PMPI_Aint_add(base: isize, disp: isize) -> isize {
        base.wrapping_add(disp)
    }

    fn MPI_Aint_diff / PMPI_Aint_diff(a: isize, b: isize) -> isize {
        a.wrapping_sub(b)
    }

    fn MPI_Op_create / PMPI_Op_create(f: Option<UserFn>, commute: c_int, op: *mut Handle) -> c_int {
        state::call("MPI_Op_create", abi::MPI_COMM_WORLD, |st| {
            let f = f.ok_or_else(|| Failure::new(abi::MPI_ERR_OP, "a null function"))?;
            let h = st.ops.insert(MpiOp::User { f, commute: commute != 0 });
            raw::write(op, h)
        })
    }

    fn MPI_Op_free / PMPI_Op_free(op: *mut Handle) -> c_int {
        state::call("MPI_Op_free", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(op)?;
            st.ops
                .remove(h)
                .ok_or_else(|| Failure::new(abi::MPI_ERR_OP, format!("no user operation {h:#x}")))?;
            raw::write(op, abi::MPI_OP_NULL)
        })
    }

    fn MPI_Op_commutative / PMPI_Op_commutative(op: Handle, commute: *mut c_int) -> c_int {
        state::call("MPI_Op_commutative", abi::MPI_COMM_WORLD, |st| {
            let c = match st.op(op)? {
                MpiOp::Builtin(_) => true,
                MpiOp::User { commute, .. } => commute,
            };
            raw::write(commute, c_int::from(c))
        })
    }
}

/// `MPI_X_toint` and `MPI_X_fromint`: rfx's handles fit an `int`.
macro_rules! int_handles {
    ($($to:ident / $pto:ident, $from:ident / $pfrom:ident;)*) => {
        entry! {$(
            fn $to / $pto(h: Handle) -> c_int {
                c_int::try_from(h).unwrap_or(-1)
            }

            fn $from / $pfrom(i: c_int) -> Handle {
                usize::try_from(i).unwrap_or(0)
            }
        )*}
    };
}

int_handles! {
    MPI_Comm_toint / PMPI_Comm_toint, MPI_Comm_fromint / PMPI_Comm_fromint;
    MPI_Errhandler_toint / PMPI_Errhandler_toint, MPI_Errhandler_fromint / PMPI_Errhandler_fromint;
    MPI_File_toint / PMPI_File_toint, MPI_File_fromint / PMPI_File_fromint;
    MPI_Group_toint / PMPI_Group_toint, MPI_Group_fromint / PMPI_Group_fromint;
    MPI_Info_toint / PMPI_Info_toint, MPI_Info_fromint / PMPI_Info_fromint;
    MPI_Message_toint / PMPI_Message_toint, MPI_Message_fromint / PMPI_Message_fromint;
    MPI_Op_toint / PMPI_Op_toint, MPI_Op_fromint / PMPI_Op_fromint;
    MPI_Request_toint / PMPI_Request_toint, MPI_Request_fromint / PMPI_Request_fromint;
    MPI_Session_toint / PMPI_Session_toint, MPI_Session_fromint / PMPI_Session_fromint;
    MPI_Type_toint / PMPI_Type_toint, MPI_Type_fromint / PMPI_Type_fromint;
    MPI_Win_toint / PMPI_Win_toint, MPI_Win_fromint / PMPI_Win_fromint;
}
