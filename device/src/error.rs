//! What a device operation can fail with.

/// A device error.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No usable device of this kind here (no driver, no device, or the
    /// backend is not built in); the message says which.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// An offset or length outside the memory it names.
    #[error("out of range: {0}")]
    Range(String),
    /// The driver refused an operation.
    #[error("device driver: {0}")]
    Driver(String),
    /// The backend cannot do this (an element type or reduction it lacks).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
}

/// Checks that `at..at + len` lies within `cap` bytes of `what`.
pub(crate) fn in_range(what: &str, at: usize, len: usize, cap: usize) -> Result<(), DeviceError> {
    match at.checked_add(len) {
        Some(end) if end <= cap => Ok(()),
        _ => Err(DeviceError::Range(format!(
            "{len} bytes at {at} of {what} of {cap} bytes"
        ))),
    }
}
