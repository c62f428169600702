//! Bad input over real loopback sockets: every case gives the affected call a
//! clear error, never a panic or a hang, and the listener keeps serving a
//! well-behaved client in the same test.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{RawClient, T, assert_serves, listener, listener_with};
use transport::ListenerOptions;
use transport::proto::{Initiator, MAGIC};
use transport::{Identity, Protocol};

/// Waits until the listener closes `sock` (EOF or reset), with `T` as a hang
/// guard.
fn assert_closed_by_listener(mut sock: TcpStream) {
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // a rejection frame may come first
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the listener to close the connection, got {e}"),
        }
    }
}

#[test]
fn garbage_instead_of_a_handshake() {
    let (_, listener, ep) = listener();
    let mut sock = TcpStream::connect(ep.addr).unwrap();
    sock.write_all(b"\x00\x20GET / HTTP/1.1\r\nHost: example\r\n\r\n....")
        .unwrap();
    assert_closed_by_listener(sock);
    // Random bytes too.
    let mut sock = TcpStream::connect(ep.addr).unwrap();
    let junk: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
    sock.write_all(&junk).unwrap();
    assert_closed_by_listener(sock);
    assert_serves(&listener, &ep);
}

#[test]
fn slowloris_is_timed_out_while_others_are_served() {
    let (_, listener, ep) =
        listener_with(ListenerOptions::default().handshake_timeout(Duration::from_millis(300)));
    let id = Identity::generate();
    let (_, msg1) = Initiator::start(&id, &ep.public_key, Protocol::Tcp, b"").unwrap();
    // Several slow clients send part of a handshake and go silent.
    let slow: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(ep.addr).unwrap();
            s.write_all(&msg1[..10]).unwrap();
            s
        })
        .collect();
    // A good client is served while they hang.
    assert_serves(&listener, &ep);
    for s in slow {
        assert_closed_by_listener(s);
    }
    assert_serves(&listener, &ep);
}

#[test]
fn handshake_frame_over_the_limit_is_refused_without_reading_it() {
    // A long handshake timeout: the close must come from the length check.
    let (_, listener, ep) =
        listener_with(ListenerOptions::default().handshake_timeout(Duration::from_secs(600)));
    let mut sock = TcpStream::connect(ep.addr).unwrap();
    sock.write_all(&[0xff, 0xff]).unwrap();
    sock.write_all(&MAGIC).unwrap();
    assert_closed_by_listener(sock);
    assert_serves(&listener, &ep);
}

#[test]
fn too_many_pending_handshakes_are_shed() {
    let (_, listener, ep) = listener_with(
        ListenerOptions::default()
            .max_pending_handshakes(4)
            .first_message_timeout(Duration::from_secs(600))
            .handshake_timeout(Duration::from_secs(600)),
    );
    // Eight silent clients: each newcomer beyond the four slots displaces
    // the oldest silent one (never the newcomer), so four are closed at once
    // and the last four hold the slots.
    let socks: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(ep.addr).unwrap();
            s.write_all(&[0]).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            s
        })
        .collect();
    let mut closed = [false; 8];
    let guard = std::time::Instant::now();
    while closed.iter().filter(|c| **c).count() < 4 {
        assert!(
            guard.elapsed() < T,
            "the listener did not shed the extra handshakes"
        );
        for (i, s) in socks.iter().enumerate() {
            closed[i] = closed[i] || is_closed(s);
        }
    }
    // Exactly four were shed: the first four, since the listener takes
    // connections in the order they were made and each of the last four
    // displaced the oldest silent one. The four holders are still open.
    assert_eq!(
        closed,
        [true, true, true, true, false, false, false, false],
        "exactly the four oldest silent connections are shed"
    );
    for (i, s) in socks.iter().enumerate().skip(4) {
        assert!(!is_closed(s), "holder {i} was closed");
    }
    // Once the holders leave, their slots free up (when the listener sees
    // them close) and a good client gets through.
    drop(socks);
    let guard = std::time::Instant::now();
    let client_id = Identity::generate();
    let _client = loop {
        match transport::Stream::direct_connect(&client_id, ep, T) {
            Ok(c) => break c,
            Err(e) => {
                assert!(guard.elapsed() < T, "slots never freed: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let server = listener.accept_timeout(T).unwrap();
    assert_eq!(server.peer_public_key(), client_id.public_key());
}

/// Whether the peer closed `s` (a read gives EOF or a reset rather than
/// timing out).
fn is_closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn server_read_error(listener: &transport::Listener) -> std::io::Error {
    let mut s = listener.accept_timeout(T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("expected an error, got end of stream"),
            Ok(_) => continue,
            Err(e) => return e,
        }
    }
}

#[test]
fn bit_flipped_record_fails_authentication() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    let mut rec = c.record(b"transfer 100 to alice");
    rec[10] ^= 0x01;
    c.sock.write_all(&rec).unwrap();
    let e = server_read_error(&listener);
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("authentication"), "{e}");
    assert_serves(&listener, &ep);
}

#[test]
fn replayed_record_fails_authentication() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    let rec = c.record(b"pay");
    c.sock.write_all(&rec).unwrap();
    c.sock.write_all(&rec).unwrap();
    let mut s = listener.accept_timeout(T).unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pay");
    let e = s.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    // The error sticks: the stream stays failed.
    assert_eq!(s.read(&mut buf).unwrap_err().kind(), ErrorKind::InvalidData);
    assert_serves(&listener, &ep);
}

#[test]
fn record_shorter_than_its_tag_is_malformed() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    c.sock.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    let e = server_read_error(&listener);
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("malformed record"), "{e}");
    assert_serves(&listener, &ep);
}

#[test]
fn maximum_length_garbage_record_fails_authentication() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    let mut junk = vec![0xAAu8; 2 + 65535];
    junk[0] = 0xff;
    junk[1] = 0xff;
    c.sock.write_all(&junk).unwrap();
    let e = server_read_error(&listener);
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert_serves(&listener, &ep);
}

#[test]
fn peer_vanishing_mid_record_is_unexpected_eof() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    let rec = c.record(&[9u8; 1000]);
    c.sock.write_all(&rec[..500]).unwrap();
    drop(c);
    let e = server_read_error(&listener);
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    assert!(e.to_string().contains("middle of a record"), "{e}");
    assert_serves(&listener, &ep);
}

#[test]
fn listener_vanishing_mid_handshake_is_a_clear_error() {
    // A "listener" that accepts and closes at once: not a crust peer.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = fake.accept().unwrap();
        drop(s);
    });
    let ep = transport::Endpoint::new(Protocol::Tcp, addr, Identity::generate().public_key());
    let e = transport::Stream::direct_connect(&Identity::generate(), ep, T).unwrap_err();
    assert!(
        e.to_string().contains("before the handshake completed"),
        "{e}"
    );
    t.join().unwrap();
}

#[test]
fn silent_listener_times_out_the_connect() {
    // Accepts (kernel backlog) but never answers the handshake.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = transport::Endpoint::new(
        Protocol::Tcp,
        fake.local_addr().unwrap(),
        Identity::generate().public_key(),
    );
    let e =
        transport::Stream::direct_connect(&Identity::generate(), ep, Duration::from_millis(200))
            .unwrap_err();
    assert!(matches!(e, transport::Error::TimedOut { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::TimedOut);
}

#[test]
fn read_timeout_in_the_middle_of_a_record_loses_nothing() {
    let (_, listener, ep) = listener();
    let mut c = RawClient::connect(&ep);
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let rec = c.record(&payload);
    let mut s = listener.accept_timeout(T).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = vec![0u8; 8192];
    // The header alone, then part of the body: reads time out, twice.
    c.sock.write_all(&rec[..2]).unwrap();
    assert_eq!(s.read(&mut out).unwrap_err().kind(), ErrorKind::TimedOut);
    c.sock.write_all(&rec[2..1500]).unwrap();
    assert_eq!(s.read(&mut out).unwrap_err().kind(), ErrorKind::TimedOut);
    // The rest arrives: the whole record reads back intact.
    c.sock.write_all(&rec[1500..]).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let n = s.read(&mut out).unwrap();
        got.extend_from_slice(&out[..n]);
    }
    assert_eq!(got, payload);
}
