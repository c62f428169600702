//! Connection floods beyond a running Service's limits, while good peers
//! (connected before) exchange messages with it: authenticated streams with
//! valid hellos from fresh keys past `max_inbound`, many streams of one key
//! past `max_per_peer`, and plain TCP connections that never handshake.
//! Bounds: see `common::under_attack`.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use crust::proto::Frame;
use crust::transport::Identity;
use crust::transport::wire::RejectCode;
use crust::{Error, Limits, Protocol, Service};

mod common;

use common::{Bounds, T, Target, hello_bytes, hostile, read_answer, serial, under_attack};

const NETWORK: &str = "hostile-flood";
const MAX_INBOUND: usize = 64;
const MAX_PER_PEER: usize = 8;

fn limited() -> crust::Config {
    hostile(NETWORK).limits(
        Limits::default()
            .max_inbound(MAX_INBOUND)
            .max_per_peer(MAX_PER_PEER)
            .max_pending_handshakes(32),
    )
}

/// How one flooding stream was answered.
#[derive(Debug, Default)]
struct Answers {
    hello: usize,
    limit: usize,
    other: Vec<String>,
}

/// `n` authenticated streams with valid hellos, all held open until the
/// returned streams are dropped.
fn hold(
    ep: &crust::Endpoint,
    id: Option<&Identity>,
    n: usize,
    answers: &mut Answers,
) -> Vec<crust::transport::Stream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let fresh;
        let id = match id {
            Some(id) => id,
            None => {
                fresh = Identity::generate();
                &fresh
            }
        };
        let mut s = match crust::transport::Stream::direct_connect(id, *ep, T) {
            Ok(s) => s,
            Err(e) => {
                answers.other.push(format!("handshake: {e}"));
                continue;
            }
        };
        if let Err(e) = s.write_all(&hello_bytes(NETWORK)) {
            answers.other.push(format!("hello: {e}"));
            continue;
        }
        match read_answer(&mut s) {
            Ok(Frame::Hello(_)) => answers.hello += 1,
            Ok(Frame::Reject {
                code: RejectCode::Limit,
                ..
            }) => answers.limit += 1,
            other => answers.other.push(format!("{other:?}")),
        }
        held.push(s);
    }
    held
}

#[test]
fn fresh_keys_past_max_inbound() {
    let _serial = serial();
    let target = Target::start(limited());
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    let n = 3 * MAX_INBOUND;
    let bounds = Bounds {
        // The held streams (both ends), plus the target's echo thread for
        // each admitted one.
        peak_fds: 2 * n + 32,
        peak_threads: MAX_INBOUND + 8,
        peak_rss_kib: 64 * 1024,
    };
    let (answers, during) = under_attack("fresh keys past max_inbound", &target, bounds, || {
        let mut answers = Answers::default();
        let mut held = hold(&eps[0], None, n * 3 / 4, &mut answers);
        held.extend(hold(&eps[1], None, n / 4, &mut answers));
        // A newcomer meanwhile is refused with the limit, at once.
        let client = Service::new_from_config(target.config.clone().beacon_enabled(false)).unwrap();
        let during = client.controller.connect_timeout(&eps[0], T).map(drop);
        assert!(target.live.load(Ordering::Relaxed) <= MAX_INBOUND);
        drop(held);
        (answers, during)
    });
    println!(
        "figure fresh keys past max_inbound ({MAX_INBOUND}, 2 taken by the good peers): {n} held streams: \
         {} admitted, {} refused with the limit, other {:?}; a newcomer during the flood: {during:?}",
        answers.hello, answers.limit, answers.other
    );
    assert!(answers.other.is_empty());
    assert_eq!(answers.hello, MAX_INBOUND - 2);
    assert_eq!(answers.limit, n - (MAX_INBOUND - 2));
    assert!(matches!(
        during,
        Err(Error::Rejected {
            code: RejectCode::Limit,
            ..
        })
    ));
    // Once the flood is gone the newcomer gets in.
    let client = Service::new_from_config(target.config.clone().beacon_enabled(false)).unwrap();
    let s = client.controller.connect_timeout(&eps[0], T).unwrap();
    s.send(b"in").unwrap();
    assert_eq!(s.recv_timeout(T).unwrap(), b"in");
}

#[test]
fn one_key_past_max_per_peer() {
    let _serial = serial();
    let target = Target::start(limited());
    let eps = [
        target.endpoint(Protocol::Tcp),
        target.endpoint(Protocol::Utp),
    ];
    let n = 50;
    let bounds = Bounds {
        peak_fds: 2 * n + 32,
        peak_threads: MAX_PER_PEER + 8,
        peak_rss_kib: 64 * 1024,
    };
    let id = Identity::generate();
    let answers = under_attack("one key past max_per_peer", &target, bounds, || {
        let mut answers = Answers::default();
        let mut held = hold(&eps[0], Some(&id), n - 10, &mut answers);
        held.extend(hold(&eps[1], Some(&id), 10, &mut answers));
        drop(held);
        answers
    });
    println!(
        "figure one key past max_per_peer ({MAX_PER_PEER}): {n} held streams: {} admitted, {} refused \
         with the limit, other {:?}",
        answers.hello, answers.limit, answers.other
    );
    assert!(answers.other.is_empty());
    assert_eq!(answers.hello, MAX_PER_PEER);
    assert_eq!(answers.limit, n - MAX_PER_PEER);
}

#[test]
fn plain_tcp_connections_held_open() {
    let _serial = serial();
    let target = Target::start(limited());
    let tcp = target.endpoint(Protocol::Tcp).addr;
    let n = 1_000;
    let bounds = Bounds {
        peak_fds: 2 * n + 32,
        peak_threads: 4,
        peak_rss_kib: 64 * 1024,
    };
    let opened = under_attack("1,000 plain TCP connections held", &target, bounds, || {
        let held: Vec<TcpStream> = (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&tcp, T).ok())
            .collect();
        // A good newcomer still gets through the transport's admission.
        let client = Service::new_from_config(target.config.clone().beacon_enabled(false)).unwrap();
        let s = client
            .controller
            .connect_timeout(&target.endpoint(Protocol::Tcp), T)
            .expect("a newcomer while 1,000 silent TCP connections are held");
        s.send(b"x").unwrap();
        s.recv_timeout(T).unwrap();
        let k = held.len();
        drop(held);
        k
    });
    println!(
        "figure 1,000 plain TCP connections held: {opened} opened; a newcomer connected meanwhile"
    );
}
