//! Summary statistics of a run: quantiles of samples, means, moving averages, histogram quantiles.

/// The `q` quantile (0..=1) of `samples` by the nearest-rank method on a
/// sorted copy; `None` when there are no samples. NaNs are ignored.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// The arithmetic mean; `None` when empty.
pub fn mean(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        None
    } else {
        Some(samples.iter().sum::<f64>() / samples.len() as f64)
    }
}

/// The trailing moving average over `window` samples (shorter at the start).
pub fn moving_average(samples: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(samples.len());
    let mut sum = 0.0;
    for (i, x) in samples.iter().enumerate() {
        sum += x;
        if i >= window {
            sum -= samples[i - window];
        }
        out.push(sum / (i + 1).min(window) as f64);
    }
    out
}

/// Mean, median and p99 of a group of samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    /// The summary of `samples`; `None` when empty.
    pub fn of(samples: &[f64]) -> Option<Self> {
        Some(Self {
            n: samples.len(),
            mean: mean(samples)?,
            p50: quantile(samples, 0.5)?,
            p99: quantile(samples, 0.99)?,
        })
    }
}

/// The `q` quantile of a Prometheus histogram given as cumulative
/// `(upper bound, count)` buckets in increasing order (the last may be
/// `+Inf`), interpolating linearly inside the bucket as PromQL's
/// `histogram_quantile` does. `None` when the histogram is empty.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // Above the highest finite bound: report that bound, as PromQL does.
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN, 3.0], 0.5), Some(3.0));
    }

    #[test]
    fn moving_average_trails() {
        assert_eq!(
            moving_average(&[2.0, 4.0, 6.0, 8.0], 2),
            vec![2.0, 3.0, 5.0, 7.0]
        );
        assert_eq!(moving_average(&[1.0], 0), vec![1.0]);
    }

    #[test]
    fn histogram_quantile_interpolates() {
        // 10 samples in (0, 1], 10 in (1, 2].
        let b = [(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(histogram_quantile(&b, 0.5), Some(1.0));
        assert_eq!(histogram_quantile(&b, 0.75), Some(1.5));
        assert_eq!(histogram_quantile(&[(1.0, 0.0)], 0.5), None);
        let over = [(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(&over, 0.99), Some(1.0));
    }

    #[test]
    fn summary_of_samples() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.n, s.mean, s.p50, s.p99), (4, 2.5, 2.0, 4.0));
        assert!(Summary::of(&[]).is_none());
    }
}
