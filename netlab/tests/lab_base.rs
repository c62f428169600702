//! The lab's building blocks, for every crate's lab tests.
//! Run with `CRUST_LAB=1` as root (see `.ci/lab`).

use netlab::lab::{Lab, wait_until};
use std::time::Duration;

fn ping(host: &netlab::lab::Host, addr: &str) -> bool {
    host.run(&["ping", "-c1", "-W2", addr]).is_ok()
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_three_hosts_on_one_bridge_and_a_routed_subnet() {
    let lab = Lab::new("base").expect("lab");
    let seg = lab.segment("s1", "198.51.100.0/28").expect("segment");
    let hosts: Vec<_> = (0..3)
        .map(|i| lab.host(&format!("h{i}")).unwrap())
        .collect();
    let addrs: Vec<_> = hosts
        .iter()
        .map(|h| lab.attach(h, &seg, "eth0").unwrap())
        .collect();
    assert_eq!(addrs[0].to_string(), "198.51.100.1");
    for h in &hosts {
        for a in &addrs {
            assert!(
                ping(h, &a.to_string()),
                "{a} unreachable from {}",
                h.namespace()
            );
        }
    }
    // IPv6 addresses are usable at once (nodad): not tentative.
    let v6 = hosts[0].addresses("eth0").unwrap();
    assert!(v6.contains("2001:db8:"), "{v6}");
    assert!(!v6.contains("tentative"), "{v6}");
    // A host behind a plain router on another subnet.
    let seg2 = lab.segment("s2", "198.51.100.16/28").expect("segment 2");
    let router = lab.host("r").unwrap();
    let r1 = lab.attach(&router, &seg, "eth0").unwrap();
    let r2 = lab.attach(&router, &seg2, "eth1").unwrap();
    router.enable_forwarding().unwrap();
    let far = lab.host("far").unwrap();
    let far_addr = lab.attach(&far, &seg2, "eth0").unwrap();
    far.route_default(r2).unwrap();
    hosts[0].route_default(r1).unwrap();
    assert!(ping(&hosts[0], &far_addr.to_string()));
    // An interface brought up later.
    let late = lab.host("late").unwrap();
    let late_addr = lab.attach_down(&late, &seg, "eth0").unwrap();
    assert!(!ping(&hosts[1], &late_addr.to_string()));
    late.set_link("eth0", true).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || ping(
            &hosts[1],
            &late_addr.to_string()
        )),
        "late interface reachable once up"
    );
    let names: Vec<String> = hosts.iter().map(|h| h.namespace().to_string()).collect();
    drop(lab);
    let left = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    for n in names {
        assert!(!left.contains(&n), "namespace {n} left after drop");
    }
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_teardown_happens_on_panic() {
    let mut name = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new("panic").unwrap();
        let h = lab.host("x").unwrap();
        name = h.namespace().to_string();
        panic!("test panics with a lab alive");
    }));
    assert!(r.is_err());
    assert!(!name.is_empty());
    let left = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(!left.contains(&name), "namespace {name} left after panic");
}

#[test]
fn lab_refuses_to_run_without_crust_lab() {
    if netlab::lab::enabled() {
        return;
    }
    let r = std::panic::catch_unwind(|| Lab::new("refuse"));
    let msg = r
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("CRUST_LAB=1"), "{msg}");
}
