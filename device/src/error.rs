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

/// Checks a copy of `len` bytes from `from` to `to` within one buffer of
/// `cap` bytes: both ranges in it, and apart (the contract's rule, which
/// every backend enforces alike, so that the host reference refuses what
/// a GPU would).
pub(crate) fn within_operands(
    from: usize,
    to: usize,
    len: usize,
    cap: usize,
) -> Result<(), DeviceError> {
    in_range("device memory", from, len, cap)?;
    in_range("device memory", to, len, cap)?;
    if from < to + len && to < from + len && len > 0 {
        return Err(DeviceError::Range(format!(
            "overlapping copy of {len} bytes from {from} to {to}"
        )));
    }
    Ok(())
}

/// Checks the operands of a reduction of `count` elements of `ty`: `acc` at
/// byte `at` (of `acc_len`) and `src` at byte `from` (of `src_len`), in
/// range and aligned. Returns the bytes of each operand.
pub(crate) fn reduce_operands(
    ty: crate::elem::Dtype,
    count: usize,
    (at, acc_len): (usize, usize),
    (from, src_len): (usize, usize),
) -> Result<usize, DeviceError> {
    let len = count
        .checked_mul(ty.size())
        .ok_or_else(|| DeviceError::Range(format!("{count} elements of {ty}")))?;
    in_range("accumulator", at, len, acc_len)?;
    in_range("operand", from, len, src_len)?;
    if at % ty.size() != 0 || from % ty.size() != 0 {
        return Err(DeviceError::Range(format!(
            "offsets {at} and {from} not aligned to {ty}"
        )));
    }
    Ok(len)
}
