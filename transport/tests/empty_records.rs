//! Empty records (a Noise transport message with no payload, only its
//! 16-byte tag: valid Noise that another implementation may send) are
//! skipped by every reader, never read as end of stream: on the blocking
//! `Stream` (its buffered path, its direct read path with the length prefix
//! arriving alone, buffers under a tag) and on `aio::Stream`, over TCP and
//! uTP. The writer is a hand-made client built on the sans-IO core, so the
//! test controls every byte and when it leaves.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::T;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::proto::{Initiator, Sealer};
use transport::utp::aio::{UtpSocket, UtpStream};
use transport::{Endpoint, Identity, Listener, Protocol, aio};

/// The carrier of the hand-made writer.
enum Raw {
    Tcp(TcpStream),
    Utp(#[allow(dead_code)] UtpSocket, UtpStream),
}

impl Raw {
    fn connect(ep: &Endpoint) -> Raw {
        match ep.protocol {
            Protocol::Tcp => {
                let s = TcpStream::connect(ep.addr).unwrap();
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(T)).unwrap();
                Raw::Tcp(s)
            }
            Protocol::Utp => {
                let sock = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let stream =
                    crust_runtime::block_on_timeout("uTP connect", Some(T), sock.connect(ep.addr))
                        .unwrap()
                        .unwrap();
                Raw::Utp(sock, stream)
            }
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Raw::Tcp(s) => s.local_addr().unwrap(),
            Raw::Utp(_, s) => s.local_addr(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Raw::Tcp(s) => s.write_all(bytes).unwrap(),
            Raw::Utp(_, s) => crust_runtime::block_on(async {
                s.write_all(bytes).await?;
                s.flush().await
            })
            .unwrap()
            .unwrap(),
        }
    }

    fn recv_exact(&mut self, buf: &mut [u8]) {
        match self {
            Raw::Tcp(s) => s.read_exact(buf).unwrap(),
            Raw::Utp(_, s) => {
                crust_runtime::block_on_timeout("uTP read", Some(T), s.read_exact(buf))
                    .unwrap()
                    .unwrap();
            }
        }
    }

    fn shutdown(&mut self) {
        match self {
            Raw::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Raw::Utp(_, s) => crust_runtime::block_on(s.shutdown()).unwrap().unwrap(),
        }
    }
}

/// Connects by hand and completes the handshake; returns the carrier and
/// the sealer for our direction.
fn raw_client(ep: &Endpoint) -> (Raw, Sealer) {
    let id = Identity::generate();
    let mut raw = Raw::connect(ep);
    let (init, msg1) = Initiator::start(&id, &ep.public_key, ep.protocol, b"").unwrap();
    raw.send(&msg1);
    let mut hdr = [0u8; 2];
    raw.recv_exact(&mut hdr);
    let mut body = vec![0u8; u16::from_be_bytes(hdr) as usize];
    raw.recv_exact(&mut body);
    let mut session = init.finish(&body).unwrap();
    // The admission record first, as every dialler sends it.
    let mut admit = Vec::new();
    session.seal_admission(&mut admit);
    raw.send(&admit);
    let (_, sealer) = session.split();
    (raw, sealer)
}

/// How many bytes the kernel holds unread on the TCP socket from
/// `local_port` to `peer_port` (the reader's side), from `/proc/net/tcp`.
fn tcp_unread(local_port: u16, peer_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        if port(f.get(1)?)? == local_port && port(f.get(2)?)? == peer_port {
            u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
        } else {
            None
        }
    })
}

/// Sends the script: real and empty records mixed, some length prefixes
/// alone on the wire. Over TCP, before each lone prefix and before the body
/// behind it, waits until the reader has taken every byte from the kernel,
/// so the reader meets the prefix alone (the direct read path).
fn send_script(raw: &mut Raw, sealer: &mut Sealer, reader: SocketAddr) -> Vec<u8> {
    let me = raw.local_addr();
    let mut expected = Vec::new();
    let mut record = |data: &[u8], expected: &mut Vec<u8>| {
        let mut out = Vec::new();
        if data.is_empty() {
            sealer.seal_empty(&mut out);
        } else {
            sealer.seal(data, &mut out, usize::MAX);
            expected.extend_from_slice(data);
        }
        out
    };
    // The stream opens with data (admission may want a first record that
    // carries something), then empty records alone and between data.
    let mut wire = record(b"hello", &mut expected);
    wire.extend(record(b"", &mut expected));
    wire.extend(record(b"", &mut expected));
    wire.extend(record(b" world", &mut expected));
    wire.extend(record(b"", &mut expected));
    raw.send(&wire);
    for data in [&b""[..], b"", b"!", b""] {
        let rec = record(data, &mut expected);
        wait_for_reader(raw, reader, me);
        raw.send(&rec[..2]);
        wait_for_reader(raw, reader, me);
        raw.send(&rec[2..]);
    }
    let tail = record(b"", &mut expected);
    raw.send(&tail);
    raw.shutdown();
    expected
}

fn wait_for_reader(raw: &Raw, reader: SocketAddr, me: SocketAddr) {
    if let Raw::Tcp(_) = raw {
        let deadline = std::time::Instant::now() + T;
        while tcp_unread(reader.port(), me.port()) != Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never took its bytes"
            );
            std::thread::yield_now();
        }
    }
}

/// Reads to end of stream with the blocking face in `size`-byte reads.
fn read_blocking(protocol: Protocol, size: usize) {
    let listener =
        Listener::bind(&Identity::generate(), format!("{protocol}://127.0.0.1:0")).unwrap();
    let ep = listener.endpoints()[0];
    let (mut raw, mut sealer) = raw_client(&ep);
    let mut stream = listener.accept_timeout(T).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let reader = stream.local_addr();
    let writer = std::thread::spawn(move || send_script(&mut raw, &mut sealer, reader));
    let mut got = Vec::new();
    let mut buf = vec![0u8; size];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{protocol}, {size}-byte reads: {e}"),
        }
    }
    let expected = writer.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "{protocol}, {size}-byte reads: end of stream came early"
    );
}

/// Reads to end of stream with the async face in `size`-byte reads.
fn read_async(protocol: Protocol, size: usize) {
    let id = Identity::generate();
    let listener = crust_runtime::block_on(aio::Listener::bind(
        &id,
        format!("{protocol}://127.0.0.1:0"),
    ))
    .unwrap()
    .unwrap();
    let ep = listener.endpoints()[0];
    let (mut raw, mut sealer) = raw_client(&ep);
    let mut stream = crust_runtime::block_on_timeout("accept", Some(T), listener.accept())
        .unwrap()
        .unwrap();
    let reader = stream.local_addr();
    let writer = std::thread::spawn(move || send_script(&mut raw, &mut sealer, reader));
    let got = crust_runtime::block_on(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; size];
        loop {
            let n = tokio::time::timeout(T, stream.read(&mut buf))
                .await
                .expect("a read in time")
                .unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .unwrap();
    let expected = writer.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "aio, {protocol}, {size}-byte reads: end of stream came early"
    );
    drop(listener);
}

#[test]
fn blocking_tcp_skips_empty_records() {
    for size in [1, 4, 15, 16, 64, 4096] {
        read_blocking(Protocol::Tcp, size);
    }
}

#[test]
fn blocking_utp_skips_empty_records() {
    for size in [1, 4, 15, 16, 64, 4096] {
        read_blocking(Protocol::Utp, size);
    }
}

#[test]
fn aio_tcp_skips_empty_records() {
    for size in [1, 4, 15, 16, 64, 4096] {
        read_async(Protocol::Tcp, size);
    }
}

#[test]
fn aio_utp_skips_empty_records() {
    for size in [1, 4, 15, 16, 64, 4096] {
        read_async(Protocol::Utp, size);
    }
}
