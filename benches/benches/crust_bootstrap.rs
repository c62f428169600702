//! `cargo bench -p benches --bench crust_bootstrap`
//!
//! Time from `Service::new_from_config()` to the first bootstrapped
//! connection, over loopback, from each source `bootstrap()` tries (median
//! and worst of 20 fresh services each):
//! - `bootstrap_from_contacts`: a hard-coded contact;
//! - `bootstrap_from_cache`: the cache file a previous service wrote;
//! - `bootstrap_from_beacon`: a peer heard by the beacon (on `lo`, the
//!   default 1 s period; the new service beacons at start and the peer
//!   answers its query, so no period is waited).
//!
//! Each is also printed against the time `Service::new_from_config` alone
//! takes in the same run (`service_new`), so the ratio says what bootstrap
//! adds to a start. There is no target: these are the figures of issue
//! 14's note.

use std::time::{Duration, Instant};

use crust::{Config, Endpoint, Protocol, Service};

const RUNS: usize = 20;

fn quiet(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_enabled(false)
}

fn tcp_endpoint(s: &Service) -> Endpoint {
    s.controller
        .endpoints()
        .into_iter()
        .find(|e| e.protocol == Protocol::Tcp)
        .expect("a TCP endpoint")
}

/// Median and worst of `RUNS` timings of `run`, in ms.
fn time(name: &str, mut run: impl FnMut() -> Duration) -> f64 {
    let mut ms: Vec<f64> = (0..RUNS).map(|_| run().as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms[RUNS / 2];
    benches::figure(&format!("{name}_median"), median, "ms");
    benches::figure(&format!("{name}_worst"), ms[RUNS - 1], "ms");
    median
}

/// Starts a service from `config` and bootstraps; returns the time taken.
fn start_and_bootstrap(config: Config, expect: &Service) -> Duration {
    let t0 = Instant::now();
    let s = Service::new_from_config(config).expect("service");
    let stream = s
        .controller
        .bootstrap_timeout(Duration::from_secs(10))
        .expect("bootstrap");
    let took = t0.elapsed();
    assert_eq!(stream.peer_public_key(), expect.controller.public_key());
    took
}

fn main() {
    let dir = std::env::temp_dir().join(format!("crust-bootstrap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let peer = Service::new_from_config(quiet("bench-boot")).expect("peer");
    let contact = tcp_endpoint(&peer);

    let new_alone = time("service_new", || {
        let t0 = Instant::now();
        let s = Service::new_from_config(quiet("bench-boot")).expect("service");
        let took = t0.elapsed();
        drop(s);
        took
    });

    let contacts = time("bootstrap_from_contacts", || {
        start_and_bootstrap(quiet("bench-boot").hard_coded_contacts([contact]), &peer)
    });

    let file = dir.join("cache.json");
    {
        let first =
            Service::new_from_config(quiet("bench-boot").cache_file(&file)).expect("service");
        first.controller.connect(&contact).expect("connect");
    }
    let cache = time("bootstrap_from_cache", || {
        start_and_bootstrap(quiet("bench-boot").cache_file(&file), &peer)
    });

    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let beaconing = |network: &str| Config::loopback().network_name(network).beacon_port(port);
    let lan_peer = Service::new_from_config(beaconing("bench-boot-lan")).expect("peer");
    let beacon = time("bootstrap_from_beacon", || {
        start_and_bootstrap(beaconing("bench-boot-lan"), &lan_peer)
    });

    for (name, t) in [
        ("bootstrap_from_contacts", contacts),
        ("bootstrap_from_cache", cache),
        ("bootstrap_from_beacon", beacon),
    ] {
        println!(
            "{name}_over_service_new: {:.2} ratio (median start + bootstrap / median start alone, no target)",
            t / new_alone
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
