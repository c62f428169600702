//! Shared helpers for the benchmarks: the output format and measurement
//! windows.
//!
//! Every figure is printed as one line `name: value unit`; every comparison
//! as a line containing the word `ratio`, against a baseline measured in the
//! same run. Absolute figures on shared machines are noise; the ratios are
//! the product's numbers, and each comes from [`interleaved_ratio`]: pairs of
//! short windows, baseline then candidate, at least [`MIN_PAIRS`] of them,
//! reported as the median with its min–max (DESIGN §5).
//!
//! ```no_run
//! use std::time::Duration;
//! // Each closure runs one window of the given length and returns a rate.
//! let median = benches::interleaved_ratio(
//!     "rtt_1conn",
//!     5,
//!     Duration::from_millis(500),
//!     0.8,
//!     |w| { std::thread::sleep(w); 100.0 },
//!     |w| { std::thread::sleep(w); 90.0 },
//! );
//! assert!((median.median - 0.9).abs() < 1e-9);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prints one figure: `name: value unit`.
pub fn figure(name: &str, value: f64, unit: &str) {
    if value.abs() < 10.0 {
        println!("{name}: {value:.3} {unit}");
    } else {
        println!("{name}: {value:.1} {unit}");
    }
}

/// Prints one comparison: `name: value ratio (what, target)`.
pub fn ratio(name: &str, ours: f64, baseline: f64, what: &str, target: f64) {
    let r = if baseline > 0.0 { ours / baseline } else { 0.0 };
    let verdict = if r >= target { "meets" } else { "below" };
    println!("{name}: {r:.3} ratio ({what}; target >= {target}, {verdict})");
}

/// The fewest interleaved pairs a ratio is measured over.
pub const MIN_PAIRS: usize = 5;

/// A ratio measured over interleaved pairs of windows.
#[derive(Clone, Debug, PartialEq)]
pub struct PairedRatio {
    /// The median of the pairs' ratios: the figure a target is met by.
    pub median: f64,
    /// The smallest pair's ratio.
    pub min: f64,
    /// The largest pair's ratio.
    pub max: f64,
    /// How many pairs were measured.
    pub pairs: usize,
}

/// Measures `candidate / baseline` fairly on a noisy machine: runs
/// `pairs` (at least [`MIN_PAIRS`]) pairs of windows, each pair the baseline
/// for `window` then the candidate for `window`, so slow drift in the
/// machine's load hits both sides alike; each closure runs one window of the
/// length it is given and returns its rate (higher is better). Prints
/// `ratio NAME: median X (MIN–MAX, N pairs; target >= T, meets|below)` and
/// the two sides' median rates, and returns the figures; a target is met
/// when the median meets it.
pub fn interleaved_ratio(
    name: &str,
    pairs: usize,
    window: Duration,
    target: f64,
    mut baseline: impl FnMut(Duration) -> f64,
    mut candidate: impl FnMut(Duration) -> f64,
) -> PairedRatio {
    let pairs = pairs.max(MIN_PAIRS);
    let mut ratios = Vec::with_capacity(pairs);
    let (mut bases, mut cands) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let b = baseline(window);
        let c = candidate(window);
        ratios.push(if b > 0.0 { c / b } else { 0.0 });
        bases.push(b);
        cands.push(c);
    }
    let r = PairedRatio {
        median: median(&mut ratios),
        min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        pairs,
    };
    let verdict = if r.median >= target { "meets" } else { "below" };
    println!(
        "ratio {name}: median {:.2} ({:.2}\u{2013}{:.2}, {} pairs; target >= {target}, {verdict}) \
         [baseline median {:.1}/s, candidate median {:.1}/s]",
        r.median,
        r.min,
        r.max,
        r.pairs,
        median(&mut bases),
        median(&mut cands)
    );
    r
}

/// The median of `v` (sorted in place); 0 for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A counter that worker threads bump and a window that reads it.
#[derive(Clone, Default)]
pub struct Meter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Meter {
    /// A new meter.
    pub fn new() -> Meter {
        Meter::default()
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether workers should stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Tells workers to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits `warmup`, then counts for `window`; returns the rate per
    /// second, and tells the workers to stop.
    pub fn measure(&self, warmup: Duration, window: Duration) -> f64 {
        std::thread::sleep(warmup);
        let c0 = self.count.load(Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::sleep(window);
        let c1 = self.count.load(Ordering::Relaxed);
        let dt = t0.elapsed().as_secs_f64();
        self.stop();
        (c1 - c0) as f64 / dt
    }
}

/// The standard warm-up.
pub const WARMUP: Duration = Duration::from_millis(500);
/// The standard measurement window.
pub const WINDOW: Duration = Duration::from_secs(3);
/// The warm-up inside each window of an interleaved pair.
pub const PAIR_WARMUP: Duration = Duration::from_millis(200);
/// The window of each side of an interleaved pair.
pub const PAIR_WINDOW: Duration = Duration::from_millis(800);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_ratio_takes_the_median_of_pairs() {
        let mut base = [100.0, 100.0, 50.0, 100.0, 100.0].into_iter();
        let mut cand = [90.0, 80.0, 50.0, 95.0, 200.0].into_iter();
        let r = interleaved_ratio(
            "test",
            5,
            Duration::ZERO,
            0.8,
            |_| base.next().unwrap(),
            |_| cand.next().unwrap(),
        );
        assert_eq!(
            r,
            PairedRatio {
                median: 0.95,
                min: 0.8,
                max: 2.0,
                pairs: 5
            }
        );
    }
}
