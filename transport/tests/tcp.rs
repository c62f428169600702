//! Encrypted TCP streams over real loopback sockets: the happy paths.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{T, assert_serves, listener};
use transport::{Endpoint, Error, Identity, Listener, Protocol, Stream};

#[test]
fn echo_both_keys_proven() {
    let (server_id, listener, ep) = listener();
    let client_id = Identity::generate();
    let cid = client_id.clone();
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&cid, ep, T).unwrap();
        assert_eq!(s.protocol(), Protocol::Tcp);
        for i in 0..50u32 {
            let msg = format!("message {i}");
            s.write_all(msg.as_bytes()).unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, msg.as_bytes());
        }
        s.peer_public_key()
    });
    let mut s = listener.accept().unwrap();
    assert_eq!(s.peer_public_key(), client_id.public_key());
    assert_eq!(s.local_addr(), ep.addr);
    let mut buf = [0u8; 100];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    assert_eq!(client.join().unwrap(), server_id.public_key());
}

#[test]
fn large_transfer_in_odd_chunks_and_clean_eof() {
    let (_, listener, ep) = listener();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let expected = data.clone();
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        let mut off = 0;
        let mut step = 1;
        while off < data.len() {
            let end = (off + step).min(data.len());
            s.write_all(&data[off..end]).unwrap();
            off = end;
            step = step * 3 % 200_003 + 1;
        }
        s.shutdown(Shutdown::Write).unwrap();
    });
    let mut s = listener.accept().unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 777];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    client.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes differ");
}

#[test]
fn split_halves_work_from_two_threads() {
    let (_, listener, ep) = listener();
    let server = std::thread::spawn(move || {
        let s = listener.accept().unwrap();
        let (mut r, mut w) = s.split();
        // Echo with a reader thread and a writer thread.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                tx.send(buf[..n].to_vec()).unwrap();
            }
        });
        for chunk in rx {
            w.write_all(&chunk).unwrap();
        }
        reader.join().unwrap();
    });
    let s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
    let (mut r, mut w) = s.split();
    let writer = std::thread::spawn(move || {
        for i in 0..2000u32 {
            w.write_all(&i.to_be_bytes()).unwrap();
        }
        // Dropping the write half ends our direction.
    });
    let mut buf = [0u8; 4];
    for i in 0..2000u32 {
        r.read_exact(&mut buf).unwrap();
        assert_eq!(u32::from_be_bytes(buf), i);
    }
    writer.join().unwrap();
    assert_eq!(r.read(&mut buf).unwrap(), 0);
    server.join().unwrap();
}

#[test]
fn shared_reference_is_read_and_write() {
    let (_, listener, ep) = listener();
    let client = std::thread::spawn(move || {
        let s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        let mut r = &s;
        let mut w = &s;
        w.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"cba");
    });
    let s = listener.accept().unwrap();
    let mut buf = [0u8; 3];
    (&s).read_exact(&mut buf).unwrap();
    buf.reverse();
    (&s).write_all(&buf).unwrap();
    client.join().unwrap();
}

#[test]
fn wrong_key_fails_with_peer_key_mismatch_and_listener_goes_on() {
    let (_, listener, ep) = listener();
    let wrong = Endpoint::new(ep.protocol, ep.addr, Identity::generate().public_key());
    let e = Stream::direct_connect(&Identity::generate(), wrong, T).unwrap_err();
    assert!(matches!(e, Error::PeerKeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("peer key mismatch"), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    assert_serves(&listener, &ep);
}

#[test]
fn read_timeout_leaves_stream_usable() {
    let (_, listener, ep) = listener();
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 4];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("timed out"), "{e}");
        s.write_all(b"go").unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"done");
    });
    let mut s = listener.accept().unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"done").unwrap();
    client.join().unwrap();
}

#[test]
fn connection_refused_names_the_endpoint() {
    let id = Identity::generate();
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let ep = Endpoint::new(Protocol::Tcp, addr, id.public_key());
    let e = Stream::direct_connect(&id, ep, T).unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn direct_connect_tries_endpoints_in_order() {
    let (_, listener, ep) = listener();
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = Endpoint::new(Protocol::Tcp, sock.local_addr().unwrap(), ep.public_key);
    drop(sock);
    let client = std::thread::spawn(move || {
        Stream::direct_connect(&Identity::generate(), [dead, ep], T).map(|s| s.peer_addr())
    });
    let _s = listener.accept().unwrap();
    assert_eq!(client.join().unwrap().unwrap(), ep.addr);
}

#[test]
fn blocking_call_inside_current_thread_runtime_is_a_clear_error() {
    let (_, listener, ep) = listener();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(async { listener.accept_timeout(Duration::from_millis(10)) })
        .unwrap_err();
    assert!(e.to_string().contains("aio"), "{e}");
    let e = rt
        .block_on(async { Stream::direct_connect(&Identity::generate(), ep, T) })
        .unwrap_err();
    assert!(e.to_string().contains("aio"), "{e}");
}

#[test]
fn blocking_calls_work_inside_multi_thread_runtime() {
    let (_, listener, ep) = listener();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.spawn(async move {
        let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        tokio::task::block_in_place(|| s.write_all(b"x")).unwrap();
    });
    let mut s = rt
        .block_on(async { tokio::task::block_in_place(|| listener.accept()) })
        .unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    rt.block_on(client).unwrap();
}

#[test]
fn aio_echo() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use transport::aio;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = aio::Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0")
            .await
            .unwrap();
        let ep = l.endpoints()[0];
        let server = tokio::spawn(async move {
            let mut s = l.accept().await.unwrap();
            let mut buf = vec![0u8; 200_000];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
        });
        let mut s = aio::Stream::direct_connect(&Identity::generate(), &ep, T)
            .await
            .unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        s.write_all(&data).await.unwrap();
        s.flush().await.unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).await.unwrap();
        assert!(back == data);
        server.await.unwrap();
    });
}

#[test]
fn aio_stream_converts_to_blocking() {
    let (_, listener, ep) = listener();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt
        .block_on(transport::aio::Stream::direct_connect(
            &Identity::generate(),
            &ep,
            T,
        ))
        .unwrap();
    let mut s = Stream::from_aio(s).unwrap();
    let mut server = listener.accept().unwrap();
    s.write_all(b"converted").unwrap();
    let mut buf = [0u8; 9];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"converted");
}

#[test]
fn unspecified_bind_lists_interface_endpoints() {
    let l = Listener::bind(&Identity::generate(), "tcp://0.0.0.0:0").unwrap();
    let eps = l.endpoints();
    assert!(!eps.is_empty());
    // Loopback last: a peer trying them in order tries routable ones first.
    let first_loopback = eps.iter().position(|e| e.addr.ip().is_loopback());
    let first_loopback = first_loopback.expect("lo is up");
    assert!(
        eps[first_loopback..]
            .iter()
            .all(|e| e.addr.ip().is_loopback()),
        "{eps:?}"
    );
    assert!(eps.iter().all(|e| !e.addr.ip().is_unspecified()));
}
