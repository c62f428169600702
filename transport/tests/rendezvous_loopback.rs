//! Rendezvous on loopback: two prepared rendezvous (no STUN, no UPnP: their
//! local endpoints) race UDP+uTP and TCP; both ends keep the same stream,
//! which carries data both ways; a peer with another key fails typed; a
//! peer that never answers fails within the timeout, listing both attempts.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nat_traversal::{MappingContext, MappingOptions};
use transport::rendezvous::{Attempt, AttemptFailure, Rendezvous};
use transport::{Error, Identity, Path};

fn mc() -> MappingContext {
    MappingContext::with_options(
        MappingOptions::default()
            .igd(false)
            .local_ip(Some("127.0.0.1".parse().unwrap())),
    )
    .unwrap()
}

fn prepare() -> (Identity, Rendezvous) {
    let id = Identity::generate();
    let r = Rendezvous::prepare(&mc(), &id).unwrap();
    (id, r)
}

#[test]
fn both_ends_keep_the_same_stream_and_it_carries_data() {
    for round in 0..5 {
        let (ida, a) = prepare();
        let (idb, b) = prepare();
        let (ia, ib) = (a.info().clone(), b.info().clone());
        assert_eq!(ia.static_key, Some(*ida.public_key().as_bytes()));
        let t = std::thread::spawn(move || b.connect(&ia, Duration::from_secs(10)));
        let mut sa = a.connect(&ib, Duration::from_secs(10)).unwrap();
        let mut sb = t.join().unwrap().unwrap();
        assert_eq!(sa.peer_public_key(), idb.public_key());
        assert_eq!(sb.peer_public_key(), ida.public_key());
        assert!(matches!(sa.path(), Path::HolePunched(_)), "{}", sa.path());
        assert_eq!(
            sa.path(),
            sb.path(),
            "round {round}: the ends kept different streams"
        );
        assert_eq!(sa.local_addr(), sb.peer_addr());
        sa.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        sb.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        sb.write_all(b"pong").unwrap();
        sa.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        println!("round {round}: {}", sa.path());
    }
}

#[test]
fn a_peer_with_another_key_fails_typed() {
    let (_, a) = prepare();
    let (_, b) = prepare();
    // b's info with another static key: a must refuse whoever answers.
    let stranger = Identity::generate();
    let ib_forged = b
        .info()
        .clone()
        .with_static_key(*stranger.public_key().as_bytes());
    let ia = a.info().clone();
    let t = std::thread::spawn(move || b.connect(&ia, Duration::from_secs(3)));
    let err = a.connect(&ib_forged, Duration::from_secs(3)).unwrap_err();
    let _ = t.join().unwrap();
    let Error::RendezvousFailed(f) = err else {
        panic!("{err}")
    };
    assert!(
        f.attempts
            .iter()
            .any(|(_, why)| matches!(why, AttemptFailure::WrongKey { .. })),
        "{f}"
    );
}

#[test]
fn a_silent_peer_fails_within_the_timeout_listing_both_attempts() {
    let (_, a) = prepare();
    let (_, b) = prepare();
    let ib = b.info().clone();
    drop(b); // its sockets close: nothing answers
    let limit = Duration::from_secs(2);
    let start = Instant::now();
    let err = a.connect(&ib, limit).unwrap_err();
    let took = start.elapsed();
    let Error::RendezvousFailed(f) = err else {
        panic!("{err}")
    };
    let kinds: Vec<Attempt> = f.attempts.iter().map(|(a, _)| *a).collect();
    assert!(
        kinds.contains(&Attempt::UdpPunch) && kinds.contains(&Attempt::TcpPunch),
        "{f}"
    );
    assert!(f.cannot_punch(), "{f}");
    // The race's own deadline ends it (plus scheduling).
    assert!(took >= limit, "{took:?}");
    println!("silent peer: {f} (took {took:?})");
}

#[test]
fn info_without_a_key_is_refused() {
    let (_, a) = prepare();
    let (_, plain) = nat_traversal::gen_rendezvous_info(vec!["127.0.0.1:9".parse().unwrap()]);
    let err = a.connect(&plain, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::InvalidRendezvousInfo(_)), "{err}");
}
