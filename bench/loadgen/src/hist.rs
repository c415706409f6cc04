//! A small log-linear histogram of microsecond values (exact below 128 µs,
//! then 64 buckets per power of two: at most 1.6 % error), mergeable across
//! load-generator processes and sent between them in a sparse form.

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS; // 64
const EXACT: u64 = 2 * SUB; // values below this are exact

/// Histogram of `u64` values (microseconds in this crate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// Sparse wire form: `[[bucket, count], ...]` plus the exact maximum.
#[derive(Serialize, Deserialize)]
struct Wire {
    b: Vec<(u32, u64)>,
    max: u64,
}

impl From<Hist> for Wire {
    fn from(h: Hist) -> Wire {
        let b = h
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u32, *c))
            .collect();
        Wire { b, max: h.max }
    }
}

impl From<Wire> for Hist {
    fn from(w: Wire) -> Hist {
        let mut h = Hist::default();
        for (i, c) in w.b {
            // Bounded: a bucket index beyond any u64 value is ignored.
            if (i as usize) < 64 * SUB as usize {
                h.add_to(i as usize, c);
            }
        }
        h.max = w.max;
        h
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = msb - SUB_BITS;
    let m = v >> shift; // in [SUB, 2 * SUB)
    (EXACT + (shift as u64 - 1) * SUB + (m - SUB)) as usize
}

/// A representative value (the middle) of bucket `i`.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let m = (i - EXACT) % SUB + SUB;
    (m << shift) + (1u64 << shift) / 2
}

impl Hist {
    fn add_to(&mut self, i: usize, c: u64) {
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += c;
        self.total += c;
    }

    pub fn record(&mut self, v: u64) {
        self.add_to(index(v), 1);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (i, c) in other.counts.iter().enumerate() {
            if *c > 0 {
                self.add_to(i, *c);
            }
        }
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value_of(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_close() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let r = value_of(i) as f64;
            assert!(
                (r - v as f64).abs() <= v as f64 * 0.016 + 0.5,
                "v {v} r {r}"
            );
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in 1..=1000u64 {
            if v % 2 == 0 {
                a.record(v * 10)
            } else {
                b.record(v * 10)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        assert_eq!(a.max(), 10_000);
        let p50 = a.quantile(0.5).unwrap() as f64;
        let p99 = a.quantile(0.99).unwrap() as f64;
        assert!((p50 - 5000.0).abs() < 100.0, "{p50}");
        assert!((p99 - 9900.0).abs() < 200.0, "{p99}");
        let wire = serde_json::to_string(&a).unwrap();
        let back: Hist = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, a);
        assert_eq!(Hist::default().quantile(0.5), None);
    }
}
