//! The Service over real loopback sockets: connect and accept both ways over
//! TCP and uTP, concurrent connects that never serialise, beacon discovery,
//! networks kept apart, heartbeats, limits, bad frames, config and identity.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crust::transport::wire::RejectCode;
use crust::{Config, Endpoint, Error, Limits, Protocol, Service};

mod common;

use common::beacon_port;

fn config(network: &str) -> Config {
    common::beaconing(network)
}

fn endpoint(s: &Service, p: Protocol) -> Endpoint {
    common::first(s.controller.endpoints(), p)
}

#[test]
fn connect_and_accept_both_ways_over_tcp_and_utp() {
    let c = config("both-ways").beacon_enabled(false);
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    for p in [Protocol::Tcp, Protocol::Utp] {
        for (from, to) in [(&a, &b), (&b, &a)] {
            let s = from.controller.connect(&endpoint(to, p)).unwrap();
            let t = to.acceptor.accept_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(s.path(), crust::Path::Direct(p));
            assert_eq!(t.path(), crust::Path::Direct(p));
            assert_eq!(s.peer_public_key(), to.controller.public_key());
            assert_eq!(t.peer_public_key(), from.controller.public_key());
            // The hello told each side where the other accepts.
            assert!(t.peer_listeners().contains(&endpoint(from, Protocol::Tcp)));
            s.send(b"ping").unwrap();
            assert_eq!(t.recv().unwrap(), b"ping");
            t.send(&[7; 100_000]).unwrap();
            assert_eq!(s.recv().unwrap(), vec![7; 100_000]);
            s.close().unwrap();
            assert!(matches!(t.recv(), Err(Error::Closed(_))));
        }
    }
}

#[test]
fn split_halves_work_from_two_threads() {
    let c = config("split").beacon_enabled(false);
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    let s = a.controller.connect(&endpoint(&b, Protocol::Tcp)).unwrap();
    let t = b.acceptor.accept().unwrap();
    let (tx, rx) = s.split();
    let writers: Vec<_> = (0..3u8)
        .map(|i| {
            let tx = tx.clone();
            thread::spawn(move || {
                for _ in 0..100 {
                    tx.send(&[i; 10]).unwrap();
                }
            })
        })
        .collect();
    let echo = thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..300 {
            t.recv_into(&mut buf).unwrap();
            t.send(&buf).unwrap();
        }
    });
    let mut counts = [0; 3];
    for _ in 0..300 {
        let m = rx.recv().unwrap();
        assert_eq!(m.len(), 10);
        assert!(m.iter().all(|&b| b == m[0]));
        counts[m[0] as usize] += 1;
    }
    assert_eq!(counts, [100, 100, 100]);
    for w in writers {
        w.join().unwrap();
    }
    echo.join().unwrap();
}

#[test]
fn sixteen_connects_at_once_never_wait_on_each_other() {
    let c = config("sixteen")
        .beacon_enabled(false)
        .connect_timeout(Duration::from_secs(4));
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    let live = endpoint(&b, Protocol::Tcp);
    // A black hole: the kernel completes the TCP handshake, nobody answers.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = Endpoint::new(Protocol::Tcp, hole.local_addr().unwrap(), live.public_key);
    let (events, seen) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..16 {
        let ctl = a.controller.clone();
        let events = events.clone();
        threads.push(thread::spawn(move || {
            let ep = if i == 7 { live } else { dead };
            let r = ctl.connect(&ep);
            events.send((i, r.is_ok())).unwrap();
            r.map(drop)
        }));
    }
    drop(events);
    // The first to finish is the live one, while the 15 others still wait.
    let (first, ok) = seen.recv().unwrap();
    assert_eq!((first, ok), (7, true));
    let rest: Vec<_> = seen.iter().collect();
    assert_eq!(rest.len(), 15);
    assert!(rest.iter().all(|&(i, ok)| i != 7 && !ok));
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        if i != 7 {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            assert!(e.to_string().contains(&dead.addr.to_string()), "{e}");
        }
    }
    drop(hole);
}

#[test]
fn beacon_finds_peers_of_our_network_only() {
    let port = beacon_port();
    let mk = |net: &str| Service::new_from_config(config(net).beacon_port(port)).unwrap();
    let mut a = mk("beacon-net");
    let b = mk("beacon-net");
    let other = mk("some-other-net");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = Vec::new();
    while found.len() < 2 {
        let ep = a
            .beacon_receiver
            .next_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("b's beacon");
        assert_ne!(ep.public_key, other.controller.public_key());
        assert_ne!(ep.public_key, a.controller.public_key());
        assert_eq!(ep.public_key, b.controller.public_key());
        if !found.contains(&ep) {
            found.push(ep);
        }
    }
    // Both of b's listeners, each on the sender's own address.
    assert!(found.contains(&endpoint(&b, Protocol::Tcp)));
    assert!(found.contains(&endpoint(&b, Protocol::Utp)));
    // The other network's beacons were heard and dropped, and counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.beacon_receiver.dropped().1 == 0 {
        assert!(Instant::now() < deadline, "no other-network beacon counted");
        let _ = a.beacon_receiver.next_timeout(Duration::from_millis(100));
    }
    // And a connect across networks is refused, naming both.
    let e = a
        .controller
        .connect(&endpoint(&other, Protocol::Tcp))
        .unwrap_err();
    match &e {
        Error::OtherNetwork { ours, theirs, .. } => {
            assert_eq!(ours, "beacon-net");
            assert_eq!(theirs, "some-other-net");
        }
        other => panic!("expected OtherNetwork, got {other}"),
    }
    assert_eq!(e.reject_code(), Some(RejectCode::OtherNetwork));
    // The beacon can be turned off and on.
    let state = a.beacon_state.disable();
    assert!(!state.is_enabled());
    let state = state.enable().map_err(|e| e.error).unwrap();
    assert!(state.is_enabled());
}

#[test]
fn heartbeats_keep_an_idle_stream_alive() {
    let c = config("heartbeats")
        .beacon_enabled(false)
        .heartbeat_period(Duration::from_millis(50))
        .inactivity_timeout(Duration::from_millis(600));
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    for p in [Protocol::Tcp, Protocol::Utp] {
        let s = a.controller.connect(&endpoint(&b, p)).unwrap();
        let t = b.acceptor.accept().unwrap();
        // One side waits in recv for five inactivity timeouts (a user read
        // pending), the other does not read at all: both stay alive.
        let e = s.recv_timeout(Duration::from_millis(3000)).unwrap_err();
        assert!(matches!(e, Error::TimedOut { .. }), "{p}: {e}");
        t.send(b"still there").unwrap();
        assert_eq!(s.recv().unwrap(), b"still there");
        s.send(b"and you").unwrap();
        assert_eq!(t.recv().unwrap(), b"and you");
    }
}

#[test]
fn a_silent_peer_is_declared_lost() {
    // A transport-level peer that completes the handshake and hello, then
    // never sends again: no heartbeats.
    let c = config("silent")
        .beacon_enabled(false)
        .heartbeat_period(Duration::from_millis(50))
        .inactivity_timeout(Duration::from_millis(400));
    let a = Service::new_from_config(c).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    let raw = raw_hello_client(&ep, "silent");
    let t = a.acceptor.accept().unwrap();
    let start = Instant::now();
    let e = t.recv().unwrap_err();
    let took = start.elapsed();
    match e {
        Error::PeerLost { silent_for, .. } => assert!(silent_for >= Duration::from_millis(400)),
        other => panic!("expected PeerLost, got {other}"),
    }
    // Lost within the timeout plus one heartbeat period (the bound the
    // design states), measured from the last bytes it sent.
    assert!(
        took <= Duration::from_millis(400 + 50 + 200),
        "took {took:?}"
    );
    // The next call says the same.
    assert!(matches!(t.recv(), Err(Error::PeerLost { .. })));
    assert!(matches!(t.send(b"x"), Err(Error::PeerLost { .. })));
    drop(raw);
}

/// Dials `ep` with the transport alone and sends a crust hello for
/// `network`: a peer that can then misbehave at will.
fn raw_hello_client(ep: &Endpoint, network: &str) -> transport::Stream {
    let mut s = transport::Stream::direct_connect(
        &transport::Identity::generate(),
        ep,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut hello = Vec::new();
    crust::proto::Hello {
        version: crust::proto::CRUST_VERSION,
        network: network.into(),
        inactivity_timeout: Duration::from_secs(60),
        listeners: vec![],
    }
    .encode(&mut hello);
    s.write_all(&hello).unwrap();
    s
}

#[test]
fn oversized_messages_are_refused_on_both_sides() {
    let small = config("sizes").beacon_enabled(false).max_message_size(1024);
    let big = small.clone().max_message_size(1 << 20);
    let a = Service::new_from_config(small).unwrap();
    let b = Service::new_from_config(big).unwrap();
    // Sending: refused before anything is sent; the stream stays usable.
    let s = a.controller.connect(&endpoint(&b, Protocol::Tcp)).unwrap();
    let t = b.acceptor.accept().unwrap();
    let e = s.send(&[0; 1025]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{e}"
    );
    s.send(&[1; 1024]).unwrap();
    assert_eq!(t.recv().unwrap(), vec![1; 1024]);
    // Receiving: the peer (with a larger maximum) sends 2 KiB; we close
    // that stream with a clear error and keep serving others.
    t.send(&[2; 2048]).unwrap();
    let e = s.recv().unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageTooLarge {
                len: 2048,
                max: 1024
            }
        ),
        "{e}"
    );
    assert!(matches!(
        t.recv(),
        Err(Error::Closed(_)) | Err(Error::Io { .. })
    ));
    let again = b.controller.connect(&endpoint(&a, Protocol::Tcp)).unwrap();
    let u = a.acceptor.accept().unwrap();
    again.send(b"fine").unwrap();
    assert_eq!(u.recv().unwrap(), b"fine");
}

#[test]
fn malformed_frames_close_that_stream_only() {
    let c = config("malformed").beacon_enabled(false);
    let a = Service::new_from_config(c.clone()).unwrap();
    let good_peer = Service::new_from_config(c).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    let good = good_peer.controller.connect(&ep).unwrap();
    let good_there = a.acceptor.accept().unwrap();
    for junk in [
        &[0x3f_u8][..],
        &[0x12, 0, 0],
        &[0x10, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut raw = raw_hello_client(&ep, "malformed");
        let t = a.acceptor.accept().unwrap();
        raw.write_all(junk).unwrap();
        let e = t.recv().unwrap_err();
        assert!(
            matches!(e, Error::Protocol { .. } | Error::MessageTooLarge { .. }),
            "{junk:?}: {e}"
        );
    }
    good.send(b"unaffected").unwrap();
    assert_eq!(good_there.recv().unwrap(), b"unaffected");
}

#[test]
fn a_hello_of_another_network_is_refused_at_accept() {
    let a = Service::new_from_config(config("right").beacon_enabled(false)).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    let raw = raw_hello_client(&ep, "wrong");
    let mut buf = Vec::new();
    let mut r = &raw;
    let _ = std::io::Read::read_to_end(&mut r, &mut buf);
    let (f, _) = crust::proto::decode_frame(&buf, 0).unwrap().unwrap();
    assert_eq!(
        f,
        crust::proto::Frame::Reject {
            code: RejectCode::OtherNetwork,
            reason: "right".into()
        }
    );
    assert!(
        a.acceptor
            .accept_timeout(Duration::from_millis(200))
            .is_err()
    );
}

#[test]
fn limits_refuse_with_a_clear_error() {
    let c = config("limits").beacon_enabled(false);
    let a = Service::new_from_config(c.clone().limits(Limits::default().max_inbound(2))).unwrap();
    let b = Service::new_from_config(c.clone()).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    let s1 = b.controller.connect(&ep).unwrap();
    let s2 = b.controller.connect(&ep).unwrap();
    let e = b.controller.connect(&ep).unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::Limit), "{e}");
    assert!(e.to_string().contains("max_inbound"), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    // A place frees when a stream is dropped (both ends).
    drop(s1);
    drop(a.acceptor.accept().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let s3 = loop {
        match b.controller.connect(&ep) {
            Ok(s) => break s,
            Err(e) if e.reject_code() == Some(RejectCode::Limit) => {
                assert!(Instant::now() < deadline, "the place never freed");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    drop((s2, s3));

    let per_peer = Service::new_from_config(c.limits(Limits::default().max_per_peer(1))).unwrap();
    let ep = endpoint(&per_peer, Protocol::Tcp);
    let _keep = b.controller.connect(&ep).unwrap();
    let e = b.controller.connect(&ep).unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::Limit), "{e}");
    assert!(e.to_string().contains("max_per_peer"), "{e}");
}

#[test]
fn identity_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("id.key");
    let c = config("persist")
        .beacon_enabled(false)
        .ephemeral_identity(false)
        .identity_file(&file);
    let first = Service::new_from_config(c.clone()).unwrap();
    let key = first.controller.public_key();
    drop(first);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let second = Service::new_from_config(c.clone()).unwrap();
    assert_eq!(second.controller.public_key(), key);
    assert_eq!(endpoint(&second, Protocol::Tcp).public_key, key);
    drop(second);
    // Others may read it: refused, naming the file.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Service::new_from_config(c).unwrap_err().to_string();
    assert!(e.contains("id.key"), "{e}");
}

#[test]
fn invalid_config_files_name_field_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, field, line) in [
        ("{\n  \"network_nam\": \"x\"\n}", "network_nam", 2),
        (
            "{\n  \"beacon\": {\n    \"port\": \"five\"\n  }\n}",
            "beacon.port",
            3,
        ),
        ("{\n\n  \"listen\": [\"tcp://127.0.0.1\"]\n}", "listen", 3),
    ] {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad.json"), "{msg}");
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        match e {
            Error::Config {
                file: Some(f),
                line: Some(l),
                ..
            } => {
                assert_eq!(f, path);
                assert_eq!(l, line);
            }
            other => panic!("{other:?}"),
        }
    }
    let e = Config::load(dir.path().join("missing.json")).unwrap_err();
    assert!(e.to_string().contains("missing.json"), "{e}");
}

#[test]
fn listeners_can_be_added_and_removed() {
    let a = Service::new_from_config(config("listeners").beacon_enabled(false)).unwrap();
    let b = Service::new_from_config(config("listeners").beacon_enabled(false)).unwrap();
    let before = a.controller.accepting_endpoints().len();
    a.controller
        .add_listener("tcp://127.0.0.1:0".parse().unwrap())
        .unwrap();
    let all = a.controller.accepting_endpoints();
    assert_eq!(all.len(), before + 1);
    let added = all.last().unwrap().clone();
    let ep = added.known_endpoints()[0].endpoint;
    drop(b.controller.connect(&ep).unwrap());
    a.controller
        .remove_listener(added.local_endpoint())
        .unwrap();
    assert_eq!(a.controller.accepting_endpoints().len(), before);
    let e = b.controller.connect(&ep).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let e = a
        .controller
        .remove_listener(added.local_endpoint())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    // Our STUN server answers on loopback.
    let addrs = a.controller.hole_punch_addresses();
    assert!(!addrs.is_empty());
    assert!(matches!(
        addrs[0],
        crust::nat_traversal::HolePunchServerAddr::Simple(SocketAddr::V4(_))
    ));
}

#[test]
fn peers_that_never_send_a_hello_hold_a_place_only_until_the_timeout() {
    let c = config("no-hello")
        .beacon_enabled(false)
        .handshake_timeout(Duration::from_millis(500))
        .limits(Limits::default().max_pending_handshakes(4));
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    // Twice as many as there are places: each proves a key, then is silent.
    let silent: Vec<transport::Stream> = (0..8)
        .map(|_| {
            transport::Stream::direct_connect(
                &transport::Identity::generate(),
                ep,
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .collect();
    // A good peer still gets in (once places free up), and the silent ones
    // are closed.
    let s = b.controller.connect(&ep).unwrap();
    let t = a.acceptor.accept_timeout(Duration::from_secs(10)).unwrap();
    s.send(b"in").unwrap();
    assert_eq!(t.recv().unwrap(), b"in");
    for mut raw in silent {
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut raw, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a silent peer was not closed");
    }
}
