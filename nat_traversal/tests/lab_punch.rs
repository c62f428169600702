//! Network lab: UDP and TCP hole punching through real kernel NATs.
//! Run with `CRUST_LAB=1` as root (see `.ci/lab`).

mod common;
use common::*;
use netlab::lab::NatKind::{self, *};

fn udp(test: &str, ka: NatKind, kb: NatKind, loss: u8) {
    let w = world(test);
    let mut a = w.peer("a", ka, loss, false);
    let mut b = w.peer("b", kb, loss, false);
    let (la, lb) = punch(&mut a, &mut b, false, 8000);
    assert_punched(test, &a, &b, &la, &lb);
}

fn udp_fails(test: &str, ka: NatKind, kb: NatKind, kind: &str) {
    let w = world(test);
    let mut a = w.peer("a", ka, 0, false);
    let mut b = w.peer("b", kb, 0, false);
    let (la, lb) = punch(&mut a, &mut b, false, 4000);
    assert_failed(test, &la, &lb, kind);
}

fn tcp(test: &str, ka: NatKind, kb: NatKind) {
    let w = world(test);
    let mut a = w.peer("a", ka, 0, true);
    let mut b = w.peer("b", kb, 0, true);
    let (la, lb) = punch(&mut a, &mut b, true, 8000);
    assert_punched(test, &a, &b, &la, &lb);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_easy_easy() {
    udp("udp_easy_easy", Easy, Easy, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_easy_public() {
    udp("udp_easy_public", Easy, Public, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_easy_full_cone() {
    udp("udp_easy_fullcone", Easy, FullCone, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_hard_full_cone() {
    udp("udp_hard_fullcone", Hard, FullCone, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_hard_public() {
    udp("udp_hard_public", Hard, Public, 0);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_easy_upnp_hard() {
    let w = world("udp_upnp_hard");
    let mut a = w.peer("a", EasyUpnp, 0, false);
    let mut b = w.peer("b", Hard, 0, false);
    // The UPnP mapping is what lets the hard side in: it must be there.
    let wan = a.site.router.as_ref().unwrap().1;
    assert!(
        field(&a.mapped, "igd").starts_with(&format!("mapped:{wan}:")),
        "{}",
        a.mapped
    );
    let (la, lb) = punch(&mut a, &mut b, false, 8000);
    assert_punched("udp_upnp_hard", &a, &b, &la, &lb);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_easy_easy_with_20_percent_loss() {
    udp("udp_easy_easy_loss20", Easy, Easy, 20);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_hard_hard_fails_typed() {
    udp_fails("udp_hard_hard", Hard, Hard, "EndpointDependentBothSides");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_hard_easy_fails_typed() {
    udp_fails(
        "udp_hard_easy",
        Hard,
        Easy,
        "EndpointDependentVsRestrictedFiltering",
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_tcp_punch_easy_easy() {
    tcp("tcp_easy_easy", Easy, Easy);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_tcp_punch_easy_public() {
    tcp("tcp_easy_public", Easy, Public);
}

/// A third party on the public path copies every probe of `b` (captured on
/// b's router after NAT) and sends each copy, twice, from its own address
/// to the same destination. The punch still ends at b's real address on
/// both sides: copies do not re-target, and the copy's repeat is a replay.
fn udp_with_copier(test: &str, ka: NatKind, kb: NatKind) {
    let w = world(test);
    // The copier's capture misses the two or three probes of a fast punch
    // about one time in ten (seen in 20-run repeats): try up to three fresh
    // pairs until it copied something; every attempt must end at b.
    for attempt in 0..3 {
        let mut a = w.peer(&format!("a{attempt}"), ka, 0, false);
        let mut b = w.peer(&format!("b{attempt}"), kb, 0, false);
        let (router, wan) = b.site.router.as_ref().expect("b has a router").clone();
        let mut copier = agent(&router);
        let r = cmd(&mut copier, &format!("copy-probes {wan} 7777"));
        assert!(r.starts_with("ready"), "{r}");
        let (la, lb) = punch(&mut a, &mut b, false, 8000);
        assert_punched(test, &a, &b, &la, &lb);
        let peer: std::net::SocketAddr = field(&la, "peer").parse().unwrap();
        assert_ne!(peer.port(), 7777, "a was re-targeted to the copier: {la}");
        let copied = cmd(&mut copier, "copy-count");
        let n: u64 = copied.strip_prefix("copied ").unwrap().parse().unwrap();
        println!("FIGURE pair={test} attempt={attempt} copied={n}");
        if n > 0 {
            return;
        }
    }
    panic!("the copier saw no probe in three attempts");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_copier_cannot_retarget_listed() {
    udp_with_copier("udp_copier_listed", Public, Easy);
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_udp_punch_copier_cannot_retarget_unlisted() {
    // b is hard: it reaches a from a port it never listed, as the copier
    // does; b must prove itself by echoing a probe a sent to it.
    udp_with_copier("udp_copier_unlisted", Public, Hard);
}
