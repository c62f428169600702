//! uTP connect to a closed port fails fast where the OS reports ICMP port
//! unreachable (Linux, `IP_RECVERR`), with a typed "refused", and such an
//! error on a shared socket never ends its listener or its other
//! connections. Loopback only.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::utp::aio::UtpSocket;
use transport::utp::proto::Config;
use transport::{Endpoint, Error, Identity, Protocol, Stream};

/// A loopback UDP port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// Far more than the test could take if the ICMP error were ignored: the
/// SYN retries alone would take over a minute.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_is_refused_at_once_and_the_socket_lives_on() {
    let listener = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let laddr = listener.local_addr();
    // An established connection on the shared socket, to a live peer.
    let peer = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let paddr = peer.local_addr();
    let accept = tokio::spawn(async move {
        let (mut s, _) = peer.accept().await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        (peer, s)
    });
    let mut live = listener.connect(paddr).await.unwrap();
    live.write_all(b"one!").await.unwrap();
    let mut b = [0u8; 4];
    live.read_exact(&mut b).await.unwrap();

    // A connect from the same socket to a closed port: refused, typed, and
    // before the first SYN retransmission would even fire.
    let dead = closed_port();
    let Err(e) = tokio::time::timeout(HANG_GUARD, listener.connect(dead))
        .await
        .expect("hang guard")
    else {
        panic!("a closed port cannot accept");
    };
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains("port unreachable"), "{e}");
    assert!(Config::default().initial_rto >= Duration::from_millis(500));

    // The other connection and listening are unaffected.
    live.write_all(b"two!").await.unwrap();
    live.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"two!");
    let (_peer, _s) = accept.await.unwrap();
    let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let incoming = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let _c = client.connect(laddr).await.unwrap();
    assert!(incoming.await.unwrap().is_ok(), "still listening");
}

#[test]
fn transport_dial_to_a_closed_utp_port_is_a_refused_error() {
    let ep = Endpoint::new(
        Protocol::Utp,
        closed_port(),
        Identity::generate().public_key(),
    );
    let e = Stream::direct_connect(&Identity::generate(), ep, HANG_GUARD).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains("port unreachable"), "{e}");
}
