//! Shared helpers for the benchmarks: the output format and measurement
//! windows.
//!
//! Every figure is printed as one line `name: value unit`; every comparison
//! as a line containing the word `ratio`, against a baseline measured in the
//! same run. Absolute figures on shared machines are noise; the ratios are
//! the product's numbers.

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
