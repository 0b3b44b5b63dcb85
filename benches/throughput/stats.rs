//! Statistics: percentiles of per-payload timings (in a client) and median / IQR over
//! repetitions (in the parent).

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// Median and quartiles of the finite values of a set of repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    /// Quartiles by linear interpolation between order statistics (R's type 7): with 5
    /// repetitions, q1 and q3 are the 2nd and 4th smallest.
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Summary {
            median: q(0.5),
            q1: q(0.25),
            q3: q(0.75),
        }
    }

    /// The interquartile range relative to the median, in percent.
    pub fn iqr_pct(&self) -> f64 {
        100.0 * (self.q3 - self.q1) / self.median.abs()
    }
}

pub fn median(values: &[f64]) -> f64 {
    Summary::of(values).median
}
