//! Percentiles and means of latency samples.

/// Latencies of one load, in microseconds, sorted ascending.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Sorts `samples` once.
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// How many samples there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no sample.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100) in milliseconds; NaN
    /// (no figure: shown as "—", `null` in JSON) without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.0.len()) - 1;
        self.0[index] as f64 / 1000.0
    }
}

/// The median of `values`; 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(|ms| ms * 1000).collect());
        assert_eq!(l.percentile_ms(50.0), 50.0);
        assert_eq!(l.percentile_ms(99.0), 99.0);
        assert_eq!(l.percentile_ms(100.0), 100.0);
        assert_eq!(l.percentile_ms(0.1), 1.0);
        let one = Latencies::new(vec![1500]);
        assert_eq!(one.percentile_ms(50.0), 1.5);
        assert_eq!(one.percentile_ms(99.0), 1.5);
        assert!(Latencies::default().percentile_ms(50.0).is_nan());
    }

    #[test]
    fn the_median_of_plain_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
