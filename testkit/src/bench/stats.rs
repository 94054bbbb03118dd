//! Latency samples and the percentiles reported from them.
//!
//! Percentiles are nearest-rank (the smallest sample with at least p% of the samples at or below
//! it), so every reported figure is a latency that was actually observed, never an interpolation.

use std::time::{Duration, Instant};

/// Durations of one kind of operation, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ms: Vec<f64>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ms: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, elapsed: Duration) {
        self.ms.push(elapsed.as_secs_f64() * 1000.0);
    }

    pub fn extend(&mut self, other: Samples) {
        self.ms.extend(other.ms);
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }

    /// Nearest-rank percentile in milliseconds; NaN when there are no samples.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    pub fn mean(&self) -> f64 {
        self.ms.iter().sum::<f64>() / self.ms.len() as f64
    }
}

/// Runs `op` `count` times and records how long each run took; stops at the first error.
pub fn repeat<E>(count: usize, mut op: impl FnMut(usize) -> Result<(), E>) -> Result<Samples, E> {
    let mut samples = Samples::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        op(i)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &m in ms {
            s.push(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = samples(&[5, 1, 4, 2, 3]);
        assert_eq!(s.p50(), 3.0);
        assert_eq!(s.p99(), 5.0);
        assert_eq!(s.percentile(0.0), 1.0);
        let hundred = samples(&(1..=100).collect::<Vec<_>>());
        assert_eq!(hundred.p50(), 50.0);
        assert_eq!(hundred.p99(), 99.0);
    }

    #[test]
    fn empty_samples_have_no_percentile() {
        assert!(Samples::default().p50().is_nan());
    }
}
