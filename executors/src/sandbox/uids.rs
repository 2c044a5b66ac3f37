//! One unprivileged uid per lease, from a configured range (as systemd's
//! `DynamicUser`): two leases never share a uid, so one tenant's executor
//! can neither signal nor read another's processes or files.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use rfx_leases::proto::LeaseId;

/// A range of uids, `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl FromStr for UidRange {
    type Err = String;

    /// `60000-60999` (inclusive). Refuses 0 (root) and ranges that wrap.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("uid range {s:?}: expected FIRST-LAST, e.g. 60000-60999, above 0");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u32 = a.trim().parse().map_err(|_| bad())?;
        let last: u32 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange {
            first,
            count: last - first + 1,
        })
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.first + self.count.saturating_sub(1);
        write!(f, "{}-{last}", self.first)
    }
}

/// Which uid each running lease holds.
#[derive(Debug)]
pub struct UidPool {
    range: UidRange,
    free: BTreeSet<u32>,
    held: HashMap<LeaseId, u32>,
}

impl UidPool {
    /// Every uid of `range` free.
    pub fn new(range: UidRange) -> UidPool {
        UidPool {
            range,
            free: (0..range.count).map(|i| range.first + i).collect(),
            held: HashMap::new(),
        }
    }

    /// The uid of `lease`: the one it holds, else the lowest free one;
    /// `None` when every uid of the range is taken.
    pub fn acquire(&mut self, lease: LeaseId) -> Option<u32> {
        if let Some(&u) = self.held.get(&lease) {
            return Some(u);
        }
        let u = self.free.pop_first()?;
        self.held.insert(lease, u);
        Some(u)
    }

    /// Gives the uid of `lease` back (once its processes are gone).
    pub fn release(&mut self, lease: LeaseId) {
        if let Some(u) = self.held.remove(&lease) {
            self.free.insert(u);
        }
    }

    /// The range served.
    pub fn range(&self) -> UidRange {
        self.range
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_root() {
        let r: UidRange = "60000-60999".parse().unwrap();
        assert_eq!((r.first, r.count), (60000, 1000));
        assert_eq!(r.to_string(), "60000-60999");
        for bad in ["0-10", "10-5", "x-3", "5", "1-4294967295"] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_lease_gets_its_own_uid_until_the_range_is_spent() {
        let mut p = UidPool::new("100-102".parse().unwrap());
        let a = p.acquire(LeaseId(1)).unwrap();
        let b = p.acquire(LeaseId(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.acquire(LeaseId(1)), Some(a), "same lease, same uid");
        let c = p.acquire(LeaseId(3)).unwrap();
        assert!(p.acquire(LeaseId(4)).is_none(), "range spent");
        p.release(LeaseId(2));
        assert_eq!(p.acquire(LeaseId(4)), Some(b));
        assert!([a, b, c].iter().all(|u| (100..=102).contains(u)));
    }
}
