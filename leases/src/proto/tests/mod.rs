//! The manager driven in memory on a fake clock.

mod hosts;
mod lifecycle;
mod placement;
mod prop;
mod queue;
mod replay;
mod util;
