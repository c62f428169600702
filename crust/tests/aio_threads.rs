//! A thousand async streams add no OS thread. (Its own test binary, so no
//! parallel test changes the thread count.)

use crust::aio::Service;
use crust::{Config, Endpoint, Protocol};

fn config(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_enabled(false)
}

fn endpoint(s: &Service, p: Protocol) -> Endpoint {
    s.controller
        .accepting_endpoints()
        .iter()
        .flat_map(|a| a.known_endpoints().to_vec())
        .map(|m| m.endpoint)
        .find(|e| e.protocol == p)
        .unwrap()
}

#[test]
fn a_thousand_async_streams_add_no_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Service::new_from_config(config("aio-many")).await.unwrap();
        let b = Service::new_from_config(config("aio-many")).await.unwrap();
        let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
        let ep = endpoint(&b, Protocol::Tcp);
        // Warm up (the runtimes' pools settle), then count.
        let mut keep = Vec::new();
        let mut there = Vec::new();
        for _ in 0..10 {
            keep.push(a.controller.connect(&ep).await.unwrap());
            there.push(b.acceptor.accept().await.unwrap());
        }
        let base = threads();
        for _ in 0..1000 {
            keep.push(a.controller.connect(&ep).await.unwrap());
            there.push(b.acceptor.accept().await.unwrap());
        }
        for (i, s) in keep.iter().enumerate().step_by(97) {
            s.send(&(i as u32).to_be_bytes()).await.unwrap();
        }
        assert_eq!(threads(), base, "threads grew with streams");
    });
}
