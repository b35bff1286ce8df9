//! A Prometheus histogram of durations: fixed buckets, lock-free counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket, `+Inf`, is implied).
const BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The histogram in Prometheus' text format under `name`.
    pub fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            out += &format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n");
        }
        let count = self.count();
        out += &format!("{name}_bucket{{le=\"+Inf\"}} {count}\n");
        out += &format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_holds_everything() {
        let h = Histogram::default();
        for ms in [3, 40, 40, 700, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let text = h.render("t", "test");
        assert!(text.contains("t_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.05\"} 3\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"1\"} 4\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"30\"} 4\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("t_sum 60.783\n"), "{text}");
        assert!(text.contains("t_count 5\n"), "{text}");
    }
}
