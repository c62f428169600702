//! Encrypted streams over uTP behave as over TCP: the same handshake and
//! records, on real loopback UDP sockets.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::T;
use transport::{Endpoint, Error, Identity, Listener, Protocol, Stream};

fn utp_listener() -> (Identity, Listener, Endpoint) {
    let id = Identity::generate();
    let l = Listener::bind(&id, "utp://127.0.0.1:0").unwrap();
    let ep = l.endpoints()[0];
    assert_eq!(ep.protocol, Protocol::Utp);
    (id, l, ep)
}

#[test]
fn utp_echo_with_both_keys_proven() {
    let (server_id, listener, ep) = utp_listener();
    let client_id = Identity::generate();
    let cid = client_id.clone();
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&cid, ep, T).unwrap();
        assert_eq!(s.protocol(), Protocol::Utp);
        assert_eq!(s.peer_public_key(), server_id.public_key());
        for i in 0..20u32 {
            let msg = format!("utp message {i}");
            s.write_all(msg.as_bytes()).unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, msg.as_bytes());
        }
    });
    let mut s = listener.accept_timeout(T).unwrap();
    assert_eq!(s.protocol(), Protocol::Utp);
    assert_eq!(s.peer_public_key(), client_id.public_key());
    let mut buf = [0u8; 256];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    client.join().unwrap();
}

#[test]
fn utp_large_transfer_intact() {
    let (_, listener, ep) = utp_listener();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let expected = data.clone();
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        for chunk in data.chunks(100_000) {
            s.write_all(chunk).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        // Wait for the reader to finish before the stream goes away.
        let mut end = [0u8; 1];
        let _ = s.read(&mut end);
    });
    let mut s = listener.accept_timeout(T).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    drop(s);
    client.join().unwrap();
}

#[test]
fn utp_wrong_key_is_peer_key_mismatch() {
    let (_, _listener, ep) = utp_listener();
    let wrong = Endpoint::new(Protocol::Utp, ep.addr, Identity::generate().public_key());
    let e = Stream::direct_connect(&Identity::generate(), wrong, T).unwrap_err();
    assert!(matches!(e, Error::PeerKeyMismatch { .. }), "{e}");
}

#[test]
fn utp_nobody_listening_fails_cleanly() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let ep = Endpoint::new(Protocol::Utp, addr, Identity::generate().public_key());
    let e = Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(3)).unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[test]
fn one_listener_on_tcp_and_utp() {
    let id = Identity::generate();
    let l = Listener::bind(
        &id,
        ["tcp://127.0.0.1:0", "utp://127.0.0.1:0"].map(|s| s.parse().unwrap()),
    )
    .unwrap();
    let eps = l.endpoints();
    assert_eq!(eps.len(), 2);
    for ep in eps {
        let c = std::thread::spawn(move || {
            let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
            s.write_all(ep.protocol.scheme().as_bytes()).unwrap();
            s
        });
        let mut s = l.accept_timeout(T).unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, ep.protocol.scheme().as_bytes());
        assert_eq!(s.protocol(), ep.protocol);
        drop(c.join().unwrap());
    }
}

#[test]
fn utp_split_and_timeouts() {
    let (_, listener, ep) = utp_listener();
    let client = std::thread::spawn(move || {
        let s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        let e = (&s).read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        s.set_read_timeout(Some(T)).unwrap();
        let (mut r, mut w) = s.split();
        w.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    });
    let mut s = listener.accept_timeout(T).unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"pong").unwrap();
    client.join().unwrap();
}
