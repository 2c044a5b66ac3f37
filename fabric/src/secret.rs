//! Random keys and nonces (rkeys, ring stamp keys, rendezvous secrets).

use crate::error::FabricError;

/// `N` bytes from the OS's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], FabricError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| FabricError::os("getrandom", std::io::Error::from(e)))?;
    Ok(b)
}
