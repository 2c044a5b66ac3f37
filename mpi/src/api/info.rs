//! Info objects (string key, string value), enough for `MPI_Abi_get_info`
//! and programs that pass hints.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};

use super::{entry, int};
use crate::abi::{self, Handle};
use crate::error::Failure;
use crate::raw;
use crate::state::{self, State};

fn info_mut(st: &mut State, h: Handle) -> Result<&mut BTreeMap<String, String>, Failure> {
    st.infos
        .get_mut(h)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_INFO, format!("no info {h:#x}")))
}

/// What the standard ABI's `MPI_Abi_get_info` reports of this build.
fn abi_info() -> BTreeMap<String, String> {
    [
        ("mpi_aint_size", std::mem::size_of::<isize>()),
        ("mpi_count_size", 8),
        ("mpi_offset_size", 8),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

entry! {
    fn MPI_Abi_get_info / PMPI_Abi_get_info(info: *mut Handle) -> c_int {
        state::call("MPI_Abi_get_info", abi::MPI_COMM_WORLD, |st| {
            let h = st.infos.insert(abi_info());
            raw::write(info, h)
        })
    }

    fn MPI_Info_create / PMPI_Info_create(info: *mut Handle) -> c_int {
        state::call("MPI_Info_create", abi::MPI_COMM_WORLD, |st| {
            let h = st.infos.insert(BTreeMap::new());
            raw::write(info, h)
        })
    }

    fn MPI_Info_dup / PMPI_Info_dup(info: Handle, out: *mut Handle) -> c_int {
        state::call("MPI_Info_dup", abi::MPI_COMM_WORLD, |st| {
            let copy = info_mut(st, info)?.clone();
            let h = st.infos.insert(copy);
            raw::write(out, h)
        })
    }

    fn MPI_Info_set / PMPI_Info_set(info: Handle, key: *const c_char, value: *const c_char) -> c_int {
        state::call("MPI_Info_set", abi::MPI_COMM_WORLD, |st| {
            let (k, v) = (raw::cstr(key)?, raw::cstr(value)?);
            if k.len() >= abi::MPI_MAX_INFO_KEY {
                return Err(Failure::new(abi::MPI_ERR_INFO_KEY, format!("key of {} bytes", k.len())));
            }
            if v.len() >= abi::MPI_MAX_INFO_VAL {
                return Err(Failure::new(abi::MPI_ERR_INFO_VALUE, format!("value of {} bytes", v.len())));
            }
            info_mut(st, info)?.insert(k.to_string(), v.to_string());
            Ok(())
        })
    }

    fn MPI_Info_delete / PMPI_Info_delete(info: Handle, key: *const c_char) -> c_int {
        state::call("MPI_Info_delete", abi::MPI_COMM_WORLD, |st| {
            let k = raw::cstr(key)?;
            info_mut(st, info)?
                .remove(k)
                .map(drop)
                .ok_or_else(|| Failure::new(abi::MPI_ERR_INFO_NOKEY, format!("no key {k:?}")))
        })
    }

    fn MPI_Info_get_string / PMPI_Info_get_string(
        info: Handle,
        key: *const c_char,
        buflen: *mut c_int,
        value: *mut c_char,
        flag: *mut c_int,
    ) -> c_int {
        state::call("MPI_Info_get_string", abi::MPI_COMM_WORLD, |st| {
            let k = raw::cstr(key)?.to_string();
            let room = raw::read(buflen)?;
            match info_mut(st, info)?.get(&k) {
                None => raw::write(flag, 0),
                Some(v) => {
                    raw::write(flag, 1)?;
                    let need = int(v.len() + 1)?;
                    if room > 0 {
                        raw::write_str(value, std::ptr::null_mut(), v, room as usize)?;
                    }
                    raw::write(buflen, need)
                }
            }
        })
    }

    fn MPI_Info_get_nkeys / PMPI_Info_get_nkeys(info: Handle, n: *mut c_int) -> c_int {
        state::call("MPI_Info_get_nkeys", abi::MPI_COMM_WORLD, |st| {
            let len = info_mut(st, info)?.len();
            raw::write(n, int(len)?)
        })
    }

    fn MPI_Info_get_nthkey / PMPI_Info_get_nthkey(info: Handle, n: c_int, key: *mut c_char) -> c_int {
        state::call("MPI_Info_get_nthkey", abi::MPI_COMM_WORLD, |st| {
            let i = usize::try_from(n).map_err(|_| Failure::arg(format!("key number {n}")))?;
            let k = info_mut(st, info)?
                .keys()
                .nth(i)
                .cloned()
                .ok_or_else(|| Failure::arg(format!("no key number {n}")))?;
            raw::write_str(key, std::ptr::null_mut(), &k, abi::MPI_MAX_INFO_KEY)
        })
    }

    fn MPI_Info_free / PMPI_Info_free(info: *mut Handle) -> c_int {
        state::call("MPI_Info_free", abi::MPI_COMM_WORLD, |st| {
            let h = raw::read(info)?;
            st.infos
                .remove(h)
                .ok_or_else(|| Failure::new(abi::MPI_ERR_INFO, format!("no info {h:#x}")))?;
            raw::write(info, abi::MPI_INFO_NULL)
        })
    }
}
