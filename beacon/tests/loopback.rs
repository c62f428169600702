//! Beacons in one process on the loopback interface (traffic rule: `lo` only).
//!
//! Each test uses its own port (211xx), so tests running in parallel do not
//! hear each other.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

use beacon::{Beacon, BeaconController, Message};
use common::{HANG_GUARD, wait_for};

fn lo_beacon(port: u16, data: &str) -> (Beacon, BeaconController) {
    Beacon::builder(port)
        .data(data)
        .period(Duration::from_millis(200))
        .interfaces(["lo"])
        .build()
        .expect("start beacon on lo")
}

/// Reads messages until `done` holds over the data heard so far; returns all
/// messages read.
fn collect(b: &mut Beacon, mut done: impl FnMut(&HashSet<Vec<u8>>) -> bool) -> Vec<Message> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    while !done(&seen) {
        let m = b
            .recv_timeout(HANG_GUARD)
            .expect("hang guard: no beacon message");
        seen.insert(m.data.clone());
        all.push(m);
    }
    all
}

#[test]
fn two_beacons_hear_each_other_never_themselves() {
    let port = common::test_port(21101);
    let (mut a, _ca) = lo_beacon(port, "alpha");
    let (mut b, _cb) = lo_beacon(port, "bravo");
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().len(), beacon::DEFAULT_ID_BYTES);

    // Read for a while: several periods, so our own echoes surely came by.
    let heard_a = collect(&mut a, false_after(10));
    let heard_b = collect(&mut b, false_after(10));
    for m in &heard_a {
        assert_eq!(m.data, b"bravo", "a heard {m:?}");
        assert_eq!(m.id, b.id(), "a heard {m:?}");
        assert!(m.from.ip().is_loopback(), "{m:?}");
        assert_eq!(m.from.port(), port);
    }
    for m in &heard_b {
        assert_eq!(m.data, b"alpha", "b heard {m:?}");
        assert_eq!(m.id, a.id(), "b heard {m:?}");
    }
    // Their own messages did reach them, and were filtered.
    wait_for("own echoes counted", || {
        (a.stats().own_echoes > 0 && b.stats().own_echoes > 0).then_some(())
    });
    assert_eq!(a.dropped(), 0);
    assert_eq!(b.dropped(), 0);
}

/// A `done` predicate that turns true on its `n`-th call.
fn false_after(n: usize) -> impl FnMut(&HashSet<Vec<u8>>) -> bool {
    let mut calls = 0;
    move |_| {
        calls += 1;
        calls > n
    }
}

#[test]
fn three_beacons_all_hear_every_other() {
    let port = common::test_port(21102);
    let mut beacons: Vec<(Beacon, BeaconController)> = ["one", "two", "three"]
        .iter()
        .map(|d| lo_beacon(port, d))
        .collect();
    let names: Vec<Vec<u8>> = ["one", "two", "three"]
        .iter()
        .map(|d| d.as_bytes().to_vec())
        .collect();
    for (i, (b, _)) in beacons.iter_mut().enumerate() {
        let others: HashSet<Vec<u8>> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.clone())
            .collect();
        let msgs = collect(b, |seen| others.is_subset(seen));
        assert!(
            msgs.iter().all(|m| m.data != names[i]),
            "beacon {i} heard itself: {msgs:?}"
        );
    }
}

#[test]
fn set_data_and_set_period_take_effect() {
    let port = common::test_port(21103);
    let (mut a, _ca) = lo_beacon(port, "listener");
    let (_b, cb) = lo_beacon(port, "before");
    collect(&mut a, |s| s.contains(&b"before"[..]));
    cb.set_data("after").unwrap();
    cb.set_period(Duration::from_millis(50)).unwrap();
    collect(&mut a, |s| s.contains(&b"after"[..]));
    // After the change nothing old comes any more (allow those already queued).
    let mut buf = Vec::new();
    let mut after = 0;
    while after < 5 {
        a.next_message_timeout(&mut buf, HANG_GUARD).unwrap();
        if buf == b"after" {
            after += 1;
        } else {
            assert_eq!(after, 0, "old data after new: {buf:?}");
        }
    }
}

#[test]
fn refresh_interfaces_announces_at_once() {
    let port = common::test_port(21120);
    let (mut a, _ca) = lo_beacon(port, "listener");
    // A period of an hour: after its start-up burst, b sends nothing more
    // unless told to.
    let (b, cb) = Beacon::builder(port)
        .data("before")
        .period(Duration::from_secs(3600))
        .interfaces(["lo"])
        .build()
        .expect("start beacon on lo");
    collect(&mut a, |s| s.contains(&b"before"[..]));
    wait_for("b's start-up burst", || {
        (b.stats().sends >= 4).then_some(())
    });
    cb.set_data("after").unwrap();
    cb.refresh_interfaces().unwrap();
    collect(&mut a, |s| s.contains(&b"after"[..]));
    drop(b);
    assert_eq!(
        cb.refresh_interfaces().unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
}

#[test]
fn controller_errors_after_the_beacon_is_dropped() {
    let port = common::test_port(21104);
    let (b, c) = lo_beacon(port, "x");
    assert!(c.is_running());
    let c2 = c.clone();
    assert_eq!(c.id(), b.id());
    drop(b);
    assert!(!c.is_running());
    let e = c.set_data("y").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    assert!(e.to_string().contains("dropped"), "{e}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert_eq!(
        c2.set_period(Duration::from_secs(1)).unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
}

#[test]
fn invalid_options_are_refused_with_the_limit() {
    // `Beacon::new` is `builder().id_bytes().data().period().build()`; the
    // builder is used here so that even a bug that let these through could
    // only send on `lo` (traffic rule).
    let lo = |port: u16| Beacon::builder(port).interfaces(["lo"]);
    let e = lo(common::test_port(21105))
        .data(vec![0u8; beacon::MAX_DATA_LEN + 1])
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("1025"), "{e}");
    assert!(e.to_string().contains("1024"), "{e}");

    let e = lo(common::test_port(21105))
        .id_bytes(65)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("64"), "{e}");

    let e = lo(common::test_port(21105))
        .period(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("period"), "{e}");

    let e = lo(common::test_port(21105))
        .period(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("at most"), "{e}");

    let e = lo(0).build().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

    let none: [&str; 0] = [];
    let e = Beacon::builder(common::test_port(21105))
        .interfaces(none)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

    let e = Beacon::builder(common::test_port(21105))
        .interfaces(["lo"])
        .ipv4(false)
        .ipv6(false)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

    // The controller refuses oversized data and keeps the old.
    let (_b, c) = lo_beacon(common::test_port(21105), "ok");
    let e = c.set_data(vec![0u8; 5000]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("5000") && e.to_string().contains("1024"),
        "{e}"
    );
    assert_eq!(
        c.set_period(Duration::ZERO).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        c.set_period(Duration::MAX).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn timeout_variant_times_out_when_alone() {
    // Alone on its port: nothing but its own echoes, which are filtered.
    let (mut b, _c) = lo_beacon(common::test_port(21106), "alone");
    let mut buf = Vec::new();
    let e = b
        .next_message_timeout(&mut buf, Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("beacon"), "{e}");
    assert!(b.try_next_message().unwrap().is_none());
    assert!(b.stats().own_echoes > 0);
}

#[test]
fn iterator_yields_messages() {
    let port = common::test_port(21107);
    let (mut a, _ca) = lo_beacon(port, "a");
    let (_b, _cb) = lo_beacon(port, "b");
    let msgs: Vec<Message> = a.messages().take(3).map(|m| m.unwrap()).collect();
    assert!(msgs.iter().all(|m| m.data == b"b"), "{msgs:?}");
}

#[test]
fn zero_id_bytes_hears_itself() {
    // With no id there is no echo filter: the user filters (RFC behaviour).
    let port = common::test_port(21108);
    let (mut a, _c) = Beacon::builder(port)
        .id_bytes(0)
        .data("me")
        .interfaces(["lo"])
        .build()
        .unwrap();
    assert!(a.id().is_empty());
    let mut buf = Vec::new();
    a.next_message_timeout(&mut buf, HANG_GUARD).unwrap();
    assert_eq!(buf, b"me");
}

#[test]
fn blocking_call_in_current_thread_runtime_is_a_clear_error() {
    let (mut b, _c) = lo_beacon(common::test_port(21109), "x");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(async {
            let mut buf = Vec::new();
            b.next_message(&mut buf)
        })
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("aio"), "{e}");
}

#[test]
fn aio_beacons_in_a_tokio_runtime() {
    let port = common::test_port(21110);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, _ca) = Beacon::builder(port)
            .data("async-a")
            .interfaces(["lo"])
            .build_async()
            .unwrap();
        let (mut b, _cb) = Beacon::builder(port)
            .data("async-b")
            .interfaces(["lo"])
            .build_async()
            .unwrap();
        let m = tokio::time::timeout(HANG_GUARD, a.recv())
            .await
            .expect("hang guard")
            .unwrap();
        assert_eq!(m.data, b"async-b");
        let mut buf = Vec::new();
        let from = tokio::time::timeout(HANG_GUARD, b.next_message(&mut buf))
            .await
            .expect("hang guard")
            .unwrap();
        assert_eq!(buf, b"async-a");
        assert!(from.ip().is_loopback());
        a.close().await;
        b.close().await;
    });
}

#[test]
fn drop_on_a_runtime_thread_does_not_block() {
    let port = common::test_port(21111);
    let (b, c) = lo_beacon(port, "x");
    // Dropped inside a task of the shared runtime: signals and returns.
    crust_runtime::block_on(async move {
        tokio::spawn(async move { drop(b) }).await.unwrap();
    })
    .unwrap();
    wait_for("beacon to stop", || (!c.is_running()).then_some(()));
    assert_eq!(
        c.set_data("y").unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
}

#[test]
fn many_beacons_share_one_port() {
    let port = common::test_port(21112);
    let n = 6;
    let mut bs: Vec<_> = (0..n).map(|i| lo_beacon(port, &format!("m{i}"))).collect();
    let mut from_counts: HashMap<usize, usize> = HashMap::new();
    for (i, (b, _)) in bs.iter_mut().enumerate() {
        let want: HashSet<Vec<u8>> = (0..n)
            .filter(|j| *j != i)
            .map(|j| format!("m{j}").into_bytes())
            .collect();
        let msgs = collect(b, |s| want.is_subset(s));
        assert!(msgs.iter().all(|m| m.data != format!("m{i}").into_bytes()));
        from_counts.insert(i, msgs.len());
    }
    assert_eq!(from_counts.len(), n);
}

#[test]
fn handles_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Beacon>();
    send::<beacon::aio::Beacon>();
    send::<BeaconController>();
    sync::<BeaconController>();
    // And do: a controller used from another thread.
    let (mut a, _ca) = lo_beacon(common::test_port(21113), "a");
    let (_b, cb) = lo_beacon(common::test_port(21113), "b");
    std::thread::spawn(move || cb.set_data("from another thread").unwrap())
        .join()
        .unwrap();
    collect(&mut a, |s| s.contains(&b"from another thread"[..]));
}
