//! Completion latencies without `std`: a log-linear bucket histogram (exact
//! below 256 ns, then 128 buckets per power of two: under 0.8 % error), and one
//! direction's figures built on it.

use alloc::vec;
use alloc::vec::Vec;

use crate::math;

/// Values below this are counted exactly, one bucket each.
const LINEAR: u64 = 256;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: usize = 128;
/// Octaves above [`LINEAR`]: 2^8 up to 2^63.
const OCTAVES: usize = 56;
const BUCKETS: usize = LINEAR as usize + OCTAVES * PER_OCTAVE;

/// Counts of values in log-linear buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (one allocation of about 60 KiB, never again).
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < LINEAR {
            return value as usize;
        }
        let octave = 63 - value.leading_zeros() as usize; // 8..=63
        let shift = octave - 7;
        let sub = (value >> shift) as usize - PER_OCTAVE; // 0..128
        LINEAR as usize + (octave - 8) * PER_OCTAVE + sub
    }

    /// The largest value that lands in bucket `index`.
    fn highest_in(index: usize) -> u64 {
        if index < LINEAR as usize {
            return index as u64;
        }
        let octave = (index - LINEAR as usize) / PER_OCTAVE + 8;
        let sub = (index - LINEAR as usize) % PER_OCTAVE + PER_OCTAVE;
        let shift = octave - 7;
        let low = (sub as u64) << shift;
        low + ((1u64 << shift) - 1)
    }

    /// Counts `value` once.
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds `other`'s counts into this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The value below or at which `quantile` (0..=1) of the values lie,
    /// reported as the top of its bucket (as hdrhistogram does); 0 when empty.
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let quantile = quantile.clamp(0.0, 1.0);
        // The rank of the value sought, at least the first.
        let wanted = ((quantile * self.total as f64) as u64)
            .max(1)
            .min(self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Self::highest_in(index);
            }
        }
        Self::highest_in(BUCKETS - 1)
    }
}

/// One direction's results on one or more queues: exact count, bytes, min,
/// max, mean and standard deviation; percentiles from the histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirStats {
    /// Requests completed successfully.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Smallest completion latency, ns (`u64::MAX` while empty).
    pub min_ns: u64,
    /// Largest completion latency, ns.
    pub max_ns: u64,
    /// Sum of latencies, ns.
    pub sum_ns: u128,
    /// Sum of squared latencies, ns² (for the standard deviation).
    pub sum_sq_ns: u128,
    /// Completion latencies, ns.
    pub clat: Histogram,
}

impl Default for DirStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DirStats {
    /// Nothing recorded yet.
    pub fn new() -> DirStats {
        DirStats {
            ios: 0,
            bytes: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
            sum_sq_ns: 0,
            clat: Histogram::new(),
        }
    }

    /// One request of `bytes` bytes that took `latency_ns`.
    #[inline]
    pub fn record(&mut self, bytes: u64, latency_ns: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.min_ns = self.min_ns.min(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
        self.sum_ns += u128::from(latency_ns);
        self.sum_sq_ns = self
            .sum_sq_ns
            .saturating_add(u128::from(latency_ns) * u128::from(latency_ns));
        self.clat.record(latency_ns);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DirStats) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
        self.sum_sq_ns = self.sum_sq_ns.saturating_add(other.sum_sq_ns);
        self.clat.merge(&other.clat);
    }

    /// Mean latency, ns (0 when empty).
    pub fn mean_ns(&self) -> f64 {
        if self.ios == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.ios as f64
    }

    /// Population standard deviation of the latencies, ns (0 when empty).
    pub fn stddev_ns(&self) -> f64 {
        if self.ios == 0 {
            return 0.0;
        }
        let n = u128::from(self.ios);
        // n²·variance = n·Σx² − (Σx)², exact in integers while it fits.
        let spread = n
            .checked_mul(self.sum_sq_ns)
            .zip(self.sum_ns.checked_mul(self.sum_ns))
            .map(|(a, b)| a.saturating_sub(b) as f64 / (n as f64 * n as f64));
        let variance = spread.unwrap_or_else(|| {
            let mean = self.mean_ns();
            self.sum_sq_ns as f64 / n as f64 - mean * mean
        });
        math::sqrt(variance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_256_and_within_one_percent_above() {
        for value in [0, 1, 100, 255] {
            assert_eq!(Histogram::highest_in(Histogram::index(value)), value);
        }
        let mut value = 256u64;
        while value < u64::MAX / 3 {
            let top = Histogram::highest_in(Histogram::index(value));
            assert!(top >= value, "{value}");
            assert!(
                (top - value) as f64 <= value as f64 / 128.0,
                "{value} -> {top}"
            );
            value = value * 3 / 2 + 7;
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_walk_the_counts() {
        let mut histogram = Histogram::new();
        for value in 1..=100 {
            histogram.record(value);
        }
        assert_eq!(histogram.value_at_quantile(0.5), 50);
        assert_eq!(histogram.value_at_quantile(0.99), 99);
        assert_eq!(histogram.value_at_quantile(1.0), 100);
        assert_eq!(histogram.value_at_quantile(0.0), 1);
        assert_eq!(Histogram::new().value_at_quantile(0.5), 0);
    }

    #[test]
    fn the_standard_deviation_is_exact() {
        let mut stats = DirStats::new();
        for latency in [2, 4, 4, 4, 5, 5, 7, 9] {
            stats.record(4096, latency);
        }
        assert_eq!(stats.mean_ns(), 5.0);
        assert_eq!(stats.stddev_ns(), 2.0);
        let mut merged = DirStats::new();
        merged.merge(&stats);
        merged.merge(&stats);
        assert_eq!(merged.ios, 16);
        assert_eq!(merged.stddev_ns(), 2.0);
        assert_eq!((merged.min_ns, merged.max_ns), (2, 9));
    }
}
