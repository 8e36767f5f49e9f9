//! Which segments of one timeline the archive holds, as ranges of segment
//! numbers: 100,000 contiguous segments are one range, so a walk of the
//! whole archive keeps a few numbers per timeline, never the keys.

use serde::{Deserialize, Serialize};

/// Segment numbers `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Range {
    pub first: u64,
    pub last: u64,
}

impl Range {
    /// Segments in the range.
    pub fn segments(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn contains(&self, n: u64) -> bool {
        (self.first..=self.last).contains(&n)
    }
}

/// Sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ranges(Vec<Range>);

impl Ranges {
    /// Adds segment `n`. Listings arrive in key order, so the common case
    /// extends the last range; anything else is a binary search.
    pub fn insert(&mut self, n: u64) {
        if let Some(last) = self.0.last_mut() {
            if last.contains(n) {
                return;
            }
            if n == last.last + 1 {
                last.last = n;
                return;
            }
            if n < last.first {
                return self.insert_slow(n);
            }
        }
        self.0.push(Range { first: n, last: n });
    }

    fn insert_slow(&mut self, n: u64) {
        // The first range that ends at or after n.
        let i = self.0.partition_point(|r| r.last < n);
        if self.0.get(i).is_some_and(|r| r.contains(n)) {
            return;
        }
        let joins_prev = i > 0 && self.0[i - 1].last + 1 == n;
        let joins_next = self.0.get(i).is_some_and(|r| r.first == n + 1);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.0[i - 1].last = self.0[i].last;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].last = n,
            (false, true) => self.0[i].first = n,
            (false, false) => self.0.insert(i, Range { first: n, last: n }),
        }
    }

    pub fn contains(&self, n: u64) -> bool {
        self.range_of(n).is_some()
    }

    /// The range holding segment `n`.
    pub fn range_of(&self, n: u64) -> Option<Range> {
        let i = self.0.partition_point(|r| r.last < n);
        self.0.get(i).copied().filter(|r| r.contains(n))
    }

    /// The first range that begins after `n`.
    pub fn next_after(&self, n: u64) -> Option<Range> {
        let i = self.0.partition_point(|r| r.first <= n);
        self.0.get(i).copied()
    }

    pub fn ranges(&self) -> &[Range] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<u64> {
        self.0.first().map(|r| r.first)
    }

    pub fn last(&self) -> Option<u64> {
        self.0.last().map(|r| r.last)
    }

    /// Segments held.
    pub fn count(&self) -> u64 {
        self.0.iter().map(Range::segments).sum()
    }

    /// The missing stretches between the ranges, and before the first one
    /// when the timeline is known to begin at `expected_first` (its fork
    /// point): each gap names its first and last missing segment.
    pub fn gaps(&self, expected_first: Option<u64>) -> Vec<Range> {
        let mut out = Vec::new();
        if let (Some(start), Some(first)) = (expected_first, self.first()) {
            if start < first {
                out.push(Range {
                    first: start,
                    last: first - 1,
                });
            }
        }
        out.extend(self.0.windows(2).map(|w| Range {
            first: w[0].last + 1,
            last: w[1].first - 1,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ns: &[u64]) -> Ranges {
        let mut r = Ranges::default();
        for n in ns {
            r.insert(*n);
        }
        r
    }

    fn pairs(r: &Ranges) -> Vec<(u64, u64)> {
        r.ranges().iter().map(|r| (r.first, r.last)).collect()
    }

    #[test]
    fn listing_order_builds_ranges_and_gaps() {
        let r = of(&[1, 2, 3, 3, 5, 6, 9]);
        assert_eq!(pairs(&r), [(1, 3), (5, 6), (9, 9)]);
        assert_eq!(r.count(), 6);
        let gaps: Vec<(u64, u64)> = r.gaps(None).iter().map(|g| (g.first, g.last)).collect();
        assert_eq!(gaps, [(4, 4), (7, 8)]);
        // A timeline known to begin at 0 misses 0 as well.
        assert_eq!(r.gaps(Some(0))[0], Range { first: 0, last: 0 });
        assert_eq!(r.gaps(Some(1)).len(), 2);
    }

    #[test]
    fn out_of_order_inserts_merge() {
        let mut r = of(&[10, 11, 20]);
        r.insert(5);
        assert_eq!(pairs(&r), [(5, 5), (10, 11), (20, 20)]);
        r.insert(12);
        r.insert(19);
        assert_eq!(pairs(&r), [(5, 5), (10, 12), (19, 20)]);
        for n in 13..19 {
            r.insert(n);
        }
        assert_eq!(pairs(&r), [(5, 5), (10, 20)]);
        r.insert(4);
        r.insert(6);
        r.insert(11);
        assert_eq!(pairs(&r), [(4, 6), (10, 20)]);
        assert!(r.contains(15) && !r.contains(7) && !r.contains(21));
        assert_eq!(
            r.range_of(12),
            Some(Range {
                first: 10,
                last: 20
            })
        );
        assert_eq!(
            r.next_after(6),
            Some(Range {
                first: 10,
                last: 20
            })
        );
        assert_eq!(r.next_after(10), None);
    }

    #[test]
    fn a_hundred_thousand_segments_are_one_range() {
        let mut r = Ranges::default();
        for n in 0..100_000 {
            r.insert(n);
        }
        assert_eq!(r.ranges().len(), 1);
        assert!(r.gaps(Some(0)).is_empty());
    }
}
