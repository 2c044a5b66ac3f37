//! The buffers a task works on, addressed by a schedule's element ranges.

use super::*;

/// The working buffer of a schedule, addressed by the schedule's element
/// ranges (which never straddle two parts of a split buffer).
pub(crate) trait TaskBuf<T>: Send {
    /// Elements of range `r`, to read.
    fn read(&self, r: Range<usize>) -> &[T];
    /// Elements of range `r`, to write.
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError>;
    /// Copies `from` to the range starting at `to`.
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError>;
    /// The elements `back` before range `r`, to read, and `r`, to write (a
    /// receive that reduces the input with a message into the output,
    /// [`Combine::ReduceFrom`](crate::schedule::Combine::ReduceFrom)).
    /// Only a split buffer has them apart.
    fn input_and_output(
        &mut self,
        r: Range<usize>,
        back: usize,
    ) -> Result<(&[T], &mut [T]), CollError> {
        let _ = (r, back);
        Err(CollError::InvalidArgument(
            "a schedule reduces from an input this buffer does not hold apart".into(),
        ))
    }
}

pub(super) fn shift(r: &Range<usize>, base: usize) -> Range<usize> {
    r.start - base..r.end - base
}

/// A whole buffer whose element 0 is the schedule's element `base`.
#[derive(Debug)]
pub(crate) struct Whole<B> {
    pub(crate) buf: B,
    pub(crate) base: usize,
}

impl<T: Copy, B: AsRef<[T]> + AsMut<[T]> + Send> TaskBuf<T> for Whole<B> {
    fn read(&self, r: Range<usize>) -> &[T] {
        &self.buf.as_ref()[shift(&r, self.base)]
    }
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError> {
        let r = shift(&r, self.base);
        Ok(&mut self.buf.as_mut()[r])
    }
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError> {
        let from = shift(&from, self.base);
        self.buf.as_mut().copy_within(from, to - self.base);
        Ok(())
    }
}

/// A read-only buffer (a schedule that only sends).
#[derive(Debug)]
pub(crate) struct ReadOnly<'a, T> {
    pub(crate) buf: &'a [T],
    pub(crate) base: usize,
}

pub(super) fn read_only() -> CollError {
    CollError::InvalidArgument("a schedule writes into a read-only buffer".into())
}

impl<T: Sync> TaskBuf<T> for ReadOnly<'_, T> {
    fn read(&self, r: Range<usize>) -> &[T] {
        &self.buf[shift(&r, self.base)]
    }
    fn write(&mut self, _r: Range<usize>) -> Result<&mut [T], CollError> {
        Err(read_only())
    }
    fn copy(&mut self, _from: Range<usize>, _to: usize) -> Result<(), CollError> {
        Err(read_only())
    }
}

/// Input elements `[0, a.len())` read-only, output elements after them
/// (all-to-all's layout, without copying either side).
#[derive(Debug)]
pub(crate) struct Split<'a, T> {
    pub(crate) a: &'a [T],
    pub(crate) b: &'a mut [T],
}

impl<T: Copy + Send + Sync> TaskBuf<T> for Split<'_, T> {
    fn read(&self, r: Range<usize>) -> &[T] {
        let n = self.a.len();
        if r.start >= n && r.end > n {
            &self.b[shift(&r, n)]
        } else {
            &self.a[r]
        }
    }
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError> {
        let n = self.a.len();
        if r.start < n && !r.is_empty() {
            return Err(read_only());
        }
        Ok(&mut self.b[r.start.saturating_sub(n)..r.end.saturating_sub(n)])
    }
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError> {
        let n = self.a.len();
        let len = from.len();
        if len == 0 {
            return Ok(());
        }
        if to < n {
            return Err(read_only());
        }
        if from.end <= n {
            let a = self.a;
            self.b[to - n..to - n + len].copy_from_slice(&a[from]);
        } else {
            self.b.copy_within(shift(&from, n), to - n);
        }
        Ok(())
    }
    fn input_and_output(
        &mut self,
        r: Range<usize>,
        back: usize,
    ) -> Result<(&[T], &mut [T]), CollError> {
        let n = self.a.len();
        let input = r.start.checked_sub(back).map(|s| s..s + r.len());
        match input {
            Some(i) if i.end <= n && r.start >= n => Ok((&self.a[i], &mut self.b[shift(&r, n)])),
            _ => Err(CollError::InvalidArgument(
                "a schedule reduces from outside the input".into(),
            )),
        }
    }
}
