//! Helpers shared by the crust test binaries.
#![allow(dead_code)] // each binary uses its own subset

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crust::{Config, Endpoint, Protocol};

/// A beacon port of this run (different per call and per process, so
/// concurrent runs do not hear each other).
pub fn beacon_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    30_000
        + ((std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(n * 7))
            % 20_000
}

/// Loopback, fresh identity, beacon off.
pub fn quiet(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_enabled(false)
}

/// Loopback with a fast beacon on a port of this run.
pub fn beaconing(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_port(beacon_port())
        .beacon_period(Duration::from_millis(100))
}

/// The first of `endpoints` over `p`.
pub fn first(endpoints: Vec<Endpoint>, p: Protocol) -> Endpoint {
    endpoints
        .into_iter()
        .find(|e| e.protocol == p)
        .expect("an endpoint of that protocol")
}
