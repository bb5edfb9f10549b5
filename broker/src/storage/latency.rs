//! A fixed-bucket latency histogram for the store's syncs.
//!
//! The sync (fdatasync of the image file) is what every PUBACK in
//! `durability = "sync"` waits for, so its latency distribution is the
//! figure an operator needs when an SD card starts to wear out. Buckets
//! are fixed (100 us to 1 s), so recording is a comparison loop and an
//! increment, and the result renders directly as a Prometheus histogram.

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (`+Inf` is implicit).
pub const BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counts per bucket (not cumulative), plus sum and count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean latency in microseconds (0 without observations).
    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count).unwrap_or(0)
    }

    /// Per-bucket (not cumulative) counts with their upper bounds in
    /// seconds, the last one `+Inf`: the shape `prometheus-client` encodes.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        BUCKETS_US
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// The Prometheus text exposition of the histogram as `name` (seconds).
    pub fn prometheus(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS_US.iter().zip(self.counts.iter()) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!("{name}_sum {}\n", self.sum_us as f64 / 1e6));
        out.push_str(&format!("{name}_count {}\n", self.count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_in_the_exposition() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(80));
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(2));
        let text = h.prometheus("x_seconds", "test");
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_count 4\n"), "{text}");
        assert!(text.contains("x_seconds_sum 2.00338\n"), "{text}");
        assert_eq!(h.mean_us(), 500_845);
    }
}
