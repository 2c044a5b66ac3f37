//! rfx's errors as Python exceptions: one hierarchy under `RfxError`, the
//! class naming what went wrong and the message rfx's reason.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use rfx::client::InvokeError;
use rfx::collectives::CollError;
use rfx::tenant::TenantError;

create_exception!(_native, RfxError, PyException, "Any error of rfx.");
create_exception!(
    _native,
    LeaseError,
    RfxError,
    "The lease manager refused or could not be reached."
);
create_exception!(
    _native,
    LeaseEnded,
    LeaseError,
    "The lease ended already (released, expired, or lost with its executor)."
);
create_exception!(
    _native,
    FunctionFailed,
    RfxError,
    "The function reported failure (or panicked); not retried."
);
create_exception!(
    _native,
    UnknownFunction,
    RfxError,
    "The library exports no function of that name."
);
create_exception!(
    _native,
    PayloadTooLarge,
    RfxError,
    "An input or output larger than the executor's slot allows."
);
create_exception!(
    _native,
    ExecutorGone,
    RfxError,
    "The executor died, restarted or its connection broke."
);
create_exception!(
    _native,
    TimedOut,
    RfxError,
    "No answer in time, or the function ran past the lease's time limit."
);
create_exception!(
    _native,
    FunctionTimedOut,
    TimedOut,
    "The function ran past the lease's time limit (its executor restarted); not retried."
);
create_exception!(
    _native,
    ExecutorRestarted,
    ExecutorGone,
    "The executor restarted (another invocation ran past the time limit); the lease goes on."
);
create_exception!(
    _native,
    PeerGone,
    RfxError,
    "A rank of the communicator died or left."
);
create_exception!(
    _native,
    ClusterError,
    RfxError,
    "The local cluster could not start or be driven."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RfxError", py.get_type::<RfxError>())?;
    m.add("LeaseError", py.get_type::<LeaseError>())?;
    m.add("LeaseEnded", py.get_type::<LeaseEnded>())?;
    m.add("FunctionFailed", py.get_type::<FunctionFailed>())?;
    m.add("UnknownFunction", py.get_type::<UnknownFunction>())?;
    m.add("PayloadTooLarge", py.get_type::<PayloadTooLarge>())?;
    m.add("ExecutorGone", py.get_type::<ExecutorGone>())?;
    m.add("TimedOut", py.get_type::<TimedOut>())?;
    m.add("FunctionTimedOut", py.get_type::<FunctionTimedOut>())?;
    m.add("ExecutorRestarted", py.get_type::<ExecutorRestarted>())?;
    m.add("PeerGone", py.get_type::<PeerGone>())?;
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    Ok(())
}

/// The exception of an invocation's failure.
pub(crate) fn invoke(e: InvokeError) -> PyErr {
    let msg = rfx::fabric::error_chain(&e);
    match e {
        InvokeError::FunctionFailed { .. } => FunctionFailed::new_err(msg),
        InvokeError::UnknownFunction(_) => UnknownFunction::new_err(msg),
        InvokeError::OutputTooLarge { .. }
        | InvokeError::PayloadTooLarge { .. }
        | InvokeError::InputTooLarge { .. } => PayloadTooLarge::new_err(msg),
        InvokeError::FunctionTimedOut { .. } => FunctionTimedOut::new_err(msg),
        InvokeError::Timeout(_) => TimedOut::new_err(msg),
        InvokeError::ExecutorRestarted(_) => ExecutorRestarted::new_err(msg),
        InvokeError::ExecutorGone(_) | InvokeError::Fabric(_) => ExecutorGone::new_err(msg),
        _ => RfxError::new_err(msg),
    }
}

/// The exception of a tenant's step.
pub(crate) fn tenant(e: TenantError) -> PyErr {
    match e {
        TenantError::Invoke(e) => invoke(e),
        TenantError::Lease(e) => {
            let msg = rfx::fabric::error_chain(&e);
            match e {
                rfx::leases::DaemonError::Remote {
                    code: rfx::leases::wire::ErrorCode::NotActive,
                    ..
                } => LeaseEnded::new_err(msg),
                _ => LeaseError::new_err(msg),
            }
        }
        e @ TenantError::NotGranted { .. } => LeaseError::new_err(e.to_string()),
        e => RfxError::new_err(rfx::fabric::error_chain(&e)),
    }
}

/// The exception of a communicator's operation.
pub(crate) fn coll(e: CollError) -> PyErr {
    let msg = rfx::fabric::error_chain(&e);
    match e {
        CollError::PeerGone { .. } => PeerGone::new_err(msg),
        CollError::Timeout { .. } => TimedOut::new_err(msg),
        _ => RfxError::new_err(msg),
    }
}
