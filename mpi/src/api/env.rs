//! Start and end, the environment, errors and memory: `MPI_Init` joins the
//! job the launcher's environment describes (a singleton without one).

use std::ffi::{c_char, c_double, c_int, c_void};
use std::sync::OnceLock;
use std::time::Instant;

use rfx_collectives::{CollConfig, Communicator};

use super::{entry, status};
use crate::abi::{self, Handle};
use crate::error::{self, Failure};
use crate::raw;
use crate::state::{self, Phase, State, PHASE};

/// The variables by which a launcher names this process's rank.
const RANK_VARS: [&str; 4] = [
    "RFX_RANK",
    "SLURM_PROCID",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
];

fn join() -> Result<(Communicator, Communicator), Failure> {
    let world = if RANK_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        Communicator::from_env()?
    } else {
        Communicator::solo(CollConfig::from_env()?)?
    };
    let mut world = world;
    let rank = u32::try_from(world.rank()).map_err(|_| Failure::arg("rank beyond u32"))?;
    let me = world
        .split(Some(rank), 0)?
        .ok_or_else(|| Failure::arg("MPI_COMM_SELF lost this rank"))?;
    Ok((world, me))
}

fn init(required: c_int, provided: *mut c_int) -> c_int {
    let _ = start();
    let mut phase = PHASE.lock();
    match &mut *phase {
        Phase::Before => {}
        // Inside a function the executor initialized MPI with the group.
        Phase::Running(st) if st.in_group() => {
            raw::write_opt(provided, st.thread_level.min(required.max(0)));
            return abi::MPI_SUCCESS;
        }
        Phase::Running(_) => {
            drop(phase);
            return state::fail_world(Failure::new(abi::MPI_ERR_OTHER, "MPI_Init called twice"));
        }
        Phase::After => {
            drop(phase);
            return state::fail_world(Failure::new(
                abi::MPI_ERR_OTHER,
                "MPI_Init after MPI_Finalize",
            ));
        }
    }
    let level = required.clamp(abi::MPI_THREAD_SINGLE, abi::MPI_THREAD_SERIALIZED);
    match join() {
        Ok((world, me)) => {
            *phase = Phase::Running(Box::new(State::new(world, me, level)));
            raw::write_opt(provided, level);
            abi::MPI_SUCCESS
        }
        Err(e) => {
            drop(phase);
            state::abort_process(&format!("rfx MPI: MPI_Init: {}", e.message))
        }
    }
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

entry! {
    fn MPI_Init / PMPI_Init(_argc: *mut c_int, _argv: *mut c_void) -> c_int {
        init(abi::MPI_THREAD_SINGLE, std::ptr::null_mut())
    }

    fn MPI_Init_thread / PMPI_Init_thread(
        _argc: *mut c_int,
        _argv: *mut c_void,
        required: c_int,
        provided: *mut c_int,
    ) -> c_int {
        init(required, provided)
    }

    fn MPI_Initialized / PMPI_Initialized(flag: *mut c_int) -> c_int {
        let v = !matches!(&*PHASE.lock(), Phase::Before);
        status(raw::write(flag, c_int::from(v)))
    }

    fn MPI_Finalized / PMPI_Finalized(flag: *mut c_int) -> c_int {
        let v = matches!(&*PHASE.lock(), Phase::After);
        status(raw::write(flag, c_int::from(v)))
    }

    fn MPI_Query_thread / PMPI_Query_thread(provided: *mut c_int) -> c_int {
        state::call("MPI_Query_thread", abi::MPI_COMM_WORLD, |st| {
            raw::write(provided, st.thread_level)
        })
    }

    fn MPI_Is_thread_main / PMPI_Is_thread_main(flag: *mut c_int) -> c_int {
        status(raw::write(flag, 1))
    }

    fn MPI_Finalize / PMPI_Finalize() -> c_int {
        let mut phase = PHASE.lock();
        if let Phase::Running(st) = &mut *phase {
            if st.in_group() {
                // The executor ends MPI after the function returns.
                return abi::MPI_SUCCESS;
            }
        }
        let st = match std::mem::replace(&mut *phase, Phase::After) {
            Phase::Running(st) => st,
            other => {
                let why = match other {
                    Phase::Before => "MPI_Finalize before MPI_Init",
                    _ => "MPI_Finalize called twice",
                };
                *phase = other;
                drop(phase);
                return state::fail_world(Failure::new(abi::MPI_ERR_OTHER, why));
            }
        };
        let mut st = st;
        // Every rank's sends are out before any leaves (a failure here is
        // a rank that left already: nothing to wait for).
        if let Ok(w) = st.rfx(abi::MPI_COMM_WORLD) {
            let _ = w.barrier();
        }
        drop(st);
        abi::MPI_SUCCESS
    }

    fn MPI_Abort / PMPI_Abort(_comm: Handle, errorcode: c_int) -> c_int {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "rfx MPI: MPI_Abort with error code {errorcode}");
        std::process::exit(if errorcode == 0 { 1 } else { errorcode & 0xff })
    }

    fn MPI_Wtime / PMPI_Wtime() -> c_double {
        start().elapsed().as_secs_f64()
    }

    fn MPI_Wtick / PMPI_Wtick() -> c_double {
        1e-9
    }

    fn MPI_Get_version / PMPI_Get_version(version: *mut c_int, subversion: *mut c_int) -> c_int {
        status(raw::write(version, abi::MPI_VERSION).and_then(|_| raw::write(subversion, abi::MPI_SUBVERSION)))
    }

    fn MPI_Abi_get_version / PMPI_Abi_get_version(major: *mut c_int, minor: *mut c_int) -> c_int {
        status(raw::write(major, abi::MPI_ABI_VERSION).and_then(|_| raw::write(minor, abi::MPI_ABI_SUBVERSION)))
    }

    fn MPI_Get_library_version / PMPI_Get_library_version(s: *mut c_char, len: *mut c_int) -> c_int {
        let v = format!(
            "rfx {} (MPI {}.{} standard ABI {}.{} over rfx-collectives)",
            env!("CARGO_PKG_VERSION"),
            abi::MPI_VERSION,
            abi::MPI_SUBVERSION,
            abi::MPI_ABI_VERSION,
            abi::MPI_ABI_SUBVERSION
        );
        status(raw::write_str(s, len, &v, abi::MPI_MAX_LIBRARY_VERSION_STRING))
    }

    fn MPI_Get_processor_name / PMPI_Get_processor_name(s: *mut c_char, len: *mut c_int) -> c_int {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        status(raw::write_str(s, len, &name, abi::MPI_MAX_PROCESSOR_NAME))
    }

    fn MPI_Error_string / PMPI_Error_string(code: c_int, s: *mut c_char, len: *mut c_int) -> c_int {
        match error::string_of(code) {
            Some(text) => status(raw::write_str(s, len, &text, abi::MPI_MAX_ERROR_STRING)),
            None => abi::MPI_ERR_ARG,
        }
    }

    fn MPI_Error_class / PMPI_Error_class(code: c_int, class: *mut c_int) -> c_int {
        match error::class_of(code) {
            Some(c) => status(raw::write(class, c)),
            None => abi::MPI_ERR_ARG,
        }
    }

    fn MPI_Alloc_mem / PMPI_Alloc_mem(size: isize, _info: Handle, base: *mut c_void) -> c_int {
        state::call("MPI_Alloc_mem", abi::MPI_COMM_WORLD, |_| {
            let size = usize::try_from(size).map_err(|_| Failure::arg(format!("size {size}")))?;
            let p = raw::alloc(size);
            if p.is_null() {
                return Err(Failure::new(abi::MPI_ERR_NO_MEM, format!("{size} bytes")));
            }
            raw::write(base.cast::<*mut c_void>(), p)
        })
    }

    fn MPI_Free_mem / PMPI_Free_mem(base: *mut c_void) -> c_int {
        raw::free(base);
        abi::MPI_SUCCESS
    }

    fn MPI_Comm_set_errhandler / PMPI_Comm_set_errhandler(comm: Handle, handler: Handle) -> c_int {
        state::call("MPI_Comm_set_errhandler", comm, |st| {
            if !matches!(
                handler,
                abi::MPI_ERRORS_ARE_FATAL | abi::MPI_ERRORS_ABORT | abi::MPI_ERRORS_RETURN
            ) {
                return Err(Failure::new(
                    abi::MPI_ERR_ERRHANDLER,
                    format!("error handler {handler:#x} (rfx has the predefined ones only)"),
                ));
            }
            st.comm(comm)?.errhandler = handler;
            Ok(())
        })
    }

    fn MPI_Comm_get_errhandler / PMPI_Comm_get_errhandler(comm: Handle, handler: *mut Handle) -> c_int {
        state::call("MPI_Comm_get_errhandler", comm, |st| {
            let h = st.comm(comm)?.errhandler;
            raw::write(handler, h)
        })
    }

    fn MPI_Errhandler_free / PMPI_Errhandler_free(handler: *mut Handle) -> c_int {
        status(raw::write(handler, abi::MPI_ERRHANDLER_NULL))
    }
}
