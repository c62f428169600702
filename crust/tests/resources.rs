//! Dropping a Service and its streams gives back every file descriptor and
//! runtime task, and no thread is added per connection. (Its own test
//! binary, so no parallel test disturbs the counts.)

use std::time::{Duration, Instant};

use crust::{Config, Protocol, Service};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Whether `f` holds within 60 s. File descriptors got this longer bound
/// after two failures at 20 s, each when this binary ran right after the
/// other crust test binaries and never alone (under investigation: the
/// failure message lists what stayed open).
fn wait(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits until `f` holds (a hang guard bounds it: uTP drivers linger up to
/// 5 s to deliver their FIN, heartbeat tasks end at their next tick).
fn settle(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} never returned to baseline"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fds_tasks_and_threads_return_to_baseline() {
    crust_runtime::handle();
    let fds = open_fds();
    let tasks = crust_runtime::alive_tasks();
    let base_threads = threads();
    for round in 0..2 {
        let c = Config::loopback()
            .network_name("resources")
            .beacon_port(40_000 + (std::process::id() % 20_000) as u16)
            .heartbeat_period(Duration::from_millis(20))
            .inactivity_timeout(Duration::from_millis(500));
        let a = Service::new_from_config(c.clone()).unwrap();
        let b = Service::new_from_config(c).unwrap();
        let mut streams = Vec::new();
        for p in [Protocol::Tcp, Protocol::Utp] {
            let ep = a
                .controller
                .accepting_endpoints()
                .iter()
                .flat_map(|x| x.known_endpoints().to_vec())
                .find(|m| m.endpoint.protocol == p)
                .unwrap()
                .endpoint;
            for i in 0..20u8 {
                let s = b.controller.connect(&ep).unwrap();
                let t = a.acceptor.accept().unwrap();
                s.send(&[i]).unwrap();
                assert_eq!(t.recv().unwrap(), [i]);
                streams.push(s);
                streams.push(t);
            }
        }
        // One more connection that is never accepted: the service owns it.
        let _queued = b
            .controller
            .connect(&a.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint)
            .unwrap();
        assert!(open_fds() > fds + 40, "round {round}");
        assert_eq!(threads(), base_threads, "threads grew with connections");
        drop(streams);
        drop(_queued);
        drop(a);
        drop(b);
        if !wait(|| open_fds() == fds) {
            let left: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .collect();
            panic!("round {round}: fds {} against {fds}: {left:?}", open_fds());
        }
        settle("runtime tasks", || crust_runtime::alive_tasks() == tasks);
        assert_eq!(threads(), base_threads);
    }
}
