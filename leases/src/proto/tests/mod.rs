//! The manager driven in memory on a fake clock.

mod hosts;
mod lifecycle;
mod placement;
mod prop;
mod replay;
mod util;
