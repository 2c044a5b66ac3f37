//! Non-blocking operations in flight: an rfx request and what to do with
//! its result when it completes (copy a received message or a collective's
//! result into the caller's buffer, fill in the status).

use rfx_collectives::{CollError, Request};

use crate::abi::Status;
use crate::error::Failure;

/// An operation behind an `MPI_Request`.
pub(crate) trait Pending: Send + std::fmt::Debug {
    /// Progresses without blocking; true once complete.
    fn test(&mut self) -> Result<bool, Failure>;

    /// Waits for completion and delivers the result; the status of a
    /// receive (an empty one otherwise).
    fn finish(self: Box<Self>) -> Result<Status, Failure>;
}

/// Complete at once (a send already handed over, `MPI_PROC_NULL`).
#[derive(Debug)]
pub(crate) struct Done(pub(crate) Status);

impl Pending for Done {
    fn test(&mut self) -> Result<bool, Failure> {
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Result<Status, Failure> {
        Ok(self.0)
    }
}

/// An rfx request and the delivery of its result.
pub(crate) struct Then<R, F> {
    req: Request<R>,
    then: F,
}

impl<R, F> Then<R, F> {
    pub(crate) fn new(req: Request<R>, then: F) -> Box<Then<R, F>> {
        Box::new(Then { req, then })
    }
}

impl<R, F> std::fmt::Debug for Then<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Then { .. }")
    }
}

impl<R, F> Pending for Then<R, F>
where
    R: Send + 'static,
    F: FnOnce(R) -> Result<Status, Failure> + Send,
{
    fn test(&mut self) -> Result<bool, Failure> {
        self.req.test().map_err(Failure::from)
    }

    fn finish(self: Box<Self>) -> Result<Status, Failure> {
        let r = self.req.wait().map_err(|e: CollError| Failure::from(e))?;
        (self.then)(r)
    }
}
