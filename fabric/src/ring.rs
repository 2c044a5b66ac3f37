//! A byte ring in which records never cross the end: the rule by which a
//! writer places records in a ring in its peer's memory and the reader
//! finds them, and the writer's account of what the peer freed.
//!
//! Positions count bytes from the start and never wrap (`u64`); a ring
//! offset is a position modulo the capacity. A record that does not fit
//! before the end starts the next lap, and the bytes it skipped count as
//! used until the reader frees past them. The verbs provider's record ring
//! and the collectives' inboxes both run on it.
//!
//! ```
//! use rfx_fabric::ring::{place, Producer};
//! let mut p = Producer::new(256);
//! assert_eq!(p.reserve(200), Some(0));
//! assert_eq!(p.reserve(100), None); // would need the skip and overrun
//! p.release_to(200).unwrap();
//! assert_eq!(p.reserve(100), Some(256)); // skipped 56 bytes to lap 2
//! assert_eq!(place(200, 256, 100), Some((256, 356))); // as the reader sees it
//! assert!(p.release_to(1000).is_err()); // more than was written
//! ```

/// Where a record of `len` bytes goes after position `pos` in a ring of
/// `cap` bytes: `(start, end)` positions, the start moved to the next lap
/// if the record would cross the end. `None` if it can never fit.
#[inline]
pub fn place(pos: u64, cap: u64, len: u64) -> Option<(u64, u64)> {
    if len > cap || cap == 0 {
        return None;
    }
    let to_end = cap - modulo(pos, cap);
    let start = if len > to_end { pos + to_end } else { pos };
    Some((start, start + len))
}

/// `pos % cap`, without a division for the usual power-of-two rings.
#[inline]
fn modulo(pos: u64, cap: u64) -> u64 {
    if cap.is_power_of_two() {
        pos & (cap - 1)
    } else {
        pos % cap
    }
}

/// A release beyond what was written: a broken or lying peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer freed up to {to} of a ring written up to {tail}")]
pub struct Overrun {
    /// The position the peer claimed to free up to.
    pub to: u64,
    /// The position written up to.
    pub tail: u64,
}

/// The writer's view of a ring in the peer's memory: written up to
/// `tail`, freed by the reader up to `head`; never more than the capacity
/// outstanding, so a record never lands on unread data.
#[derive(Debug, Clone)]
pub struct Producer {
    cap: u64,
    tail: u64,
    head: u64,
}

impl Producer {
    /// An empty ring of `cap` bytes.
    pub fn new(cap: u64) -> Producer {
        Producer {
            cap,
            tail: 0,
            head: 0,
        }
    }

    /// A ring already written up to `tail` and freed up to `head` (tests
    /// of positions far into a run).
    #[cfg(test)]
    pub(crate) fn at(cap: u64, head: u64, tail: u64) -> Producer {
        Producer { cap, tail, head }
    }

    /// The capacity.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Where a record of `len` bytes would start and end, if it fits now.
    #[inline]
    fn slot(&self, len: u64) -> Option<(u64, u64)> {
        let (start, end) = place(self.tail, self.cap, len)?;
        (end - self.head <= self.cap).then_some((start, end))
    }

    /// True if [`Producer::reserve`] of `len` bytes would succeed now.
    #[inline]
    pub fn fits(&self, len: u64) -> bool {
        self.slot(len).is_some()
    }

    /// The start position of a new record of `len` bytes, or `None` if
    /// the ring has no room for it yet.
    #[inline]
    pub fn reserve(&mut self, len: u64) -> Option<u64> {
        let (start, end) = self.slot(len)?;
        self.tail = end;
        Some(start)
    }

    /// The ring offset of position `pos`.
    #[inline]
    pub fn offset(&self, pos: u64) -> u64 {
        modulo(pos, self.cap)
    }

    /// The position after the last record.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The position the reader freed up to.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Bytes written and not freed yet.
    pub fn outstanding(&self) -> u64 {
        self.tail - self.head
    }

    /// The reader freed up to position `to`. A position behind what is
    /// known changes nothing (a late report); one beyond the tail is an
    /// [`Overrun`] and changes nothing either.
    pub fn release_to(&mut self, to: u64) -> Result<(), Overrun> {
        if to > self.tail {
            return Err(Overrun {
                to,
                tail: self.tail,
            });
        }
        self.head = self.head.max(to);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Records never cross the end, never overlap unread bytes, and
        /// the reader finds each where the writer put it.
        #[test]
        fn records_stay_whole_and_apart(
            cap in 1u64..4096,
            ops in prop::collection::vec((1u64..1200, any::<bool>()), 1..200),
        ) {
            let mut p = Producer::new(cap);
            let mut unread: std::collections::VecDeque<(u64, u64)> = Default::default();
            let mut rpos = 0;
            for (len, free) in ops {
                if free {
                    if let Some((_, end)) = unread.pop_front() {
                        p.release_to(end).expect("within the tail");
                    }
                }
                if let Some(start) = p.reserve(len) {
                    prop_assert!(p.offset(start) + len <= cap, "crosses the end");
                    let (rs, re) = place(rpos, cap, len).expect("fits");
                    prop_assert_eq!((rs, re), (start, start + len));
                    rpos = re;
                    unread.push_back((start, re));
                    prop_assert!(p.outstanding() <= cap);
                } else {
                    prop_assert!(len > cap || !p.fits(len));
                }
            }
        }
    }

    #[test]
    fn late_and_excessive_releases() {
        let mut p = Producer::new(100);
        p.reserve(60).expect("room");
        p.release_to(40).expect("partial");
        p.release_to(10).expect("late: ignored");
        assert_eq!(p.head(), 40);
        assert_eq!(
            p.release_to(61),
            Err(Overrun { to: 61, tail: 60 }),
            "beyond the tail"
        );
        assert_eq!(p.head(), 40);
        assert_eq!(place(0, 0, 1), None);
        // Far into a run, and in a ring that is not a power of two.
        let far = 1 << 40;
        let mut p = Producer::at(256, far, far);
        assert_eq!(p.reserve(100), Some(far));
        let mut q = Producer::at(100, 950, 990);
        assert_eq!(q.reserve(20), Some(1000), "skips the last 10 bytes");
        assert_eq!(q.offset(1000), 0);
        assert_eq!(place(5, 10, 11), None);
    }
}
