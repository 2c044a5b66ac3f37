//! Raw baselines measured in the same run as rfx, with the same sizes,
//! pinning and polling mode: the floor each provider is judged against.

#[cfg(feature = "ofi")]
pub mod ofi;
pub mod shm;
pub mod tcp;
#[cfg(feature = "verbs")]
pub mod verbs;
