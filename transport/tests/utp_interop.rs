//! Interop with an independent uTP implementation, `librqbit-utp`: our
//! client to its listener and its client to our listener, 10 MiB each way,
//! bytes checked. Raw uTP (no Noise layer), loopback only.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use transport::utp::aio::UtpSocket;

const LEN: usize = 10 << 20;

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn byte_at(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 29) as u8 ^ (i >> 20) as u8
}

async fn send_pattern<S: AsyncWrite + Unpin>(s: &mut S, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(off + k);
        }
        s.write_all(&buf[..n]).await.unwrap();
        off += n;
    }
    s.flush().await.unwrap();
}

/// Reads exactly `len` bytes and checks them.
async fn check_pattern<S: AsyncRead + Unpin>(s: &mut S, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let want = (len - off).min(buf.len());
        let n = s.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "stream ended after {off} of {len} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte_at(off + k), "wrong byte at offset {}", off + k);
        }
        off += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_librqbit_listener_both_directions() {
    let theirs = librqbit_utp::UtpSocket::new_udp(lo()).await.unwrap();
    let taddr = theirs.bind_addr();
    let srv = tokio::spawn(async move {
        let mut s = theirs.accept().await.unwrap();
        // Receive 10 MiB, then send 10 MiB back.
        check_pattern(&mut s, LEN).await;
        send_pattern(&mut s, LEN).await;
        // Wait for our "done" so the data is not cut by a close.
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"done");
    });
    let ours = UtpSocket::bind(lo()).unwrap();
    let mut c = ours.connect(taddr).await.unwrap();
    send_pattern(&mut c, LEN).await;
    check_pattern(&mut c, LEN).await;
    c.write_all(b"done").await.unwrap();
    srv.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librqbit_client_to_our_listener_both_directions() {
    let ours = UtpSocket::bind(lo()).unwrap();
    let oaddr = ours.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, _) = ours.accept().await.unwrap();
        check_pattern(&mut s, LEN).await;
        send_pattern(&mut s, LEN).await;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"done");
    });
    let theirs = librqbit_utp::UtpSocket::new_udp(lo()).await.unwrap();
    let mut c = theirs.connect(oaddr).await.unwrap();
    send_pattern(&mut c, LEN).await;
    check_pattern(&mut c, LEN).await;
    c.write_all(b"done").await.unwrap();
    c.flush().await.unwrap();
    srv.await.unwrap();
}

/// The same with SYN cookies forced on at our listener: the third-party
/// initiator's SYN is answered statelessly and its first data packet
/// creates the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librqbit_client_to_our_listener_with_syn_cookies_forced_on() {
    use transport::utp::proto::{EndpointConfig, SynCookies};
    let config = EndpointConfig::default().syn_cookies(SynCookies::Always);
    let ours = UtpSocket::bind_with_config(lo(), config).unwrap();
    let oaddr = ours.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, _) = ours.accept().await.unwrap();
        check_pattern(&mut s, LEN).await;
        send_pattern(&mut s, LEN).await;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"done");
        let stats = ours.stats();
        assert_eq!((stats.cookies_sent, stats.cookies_proven), (1, 1));
    });
    let theirs = librqbit_utp::UtpSocket::new_udp(lo()).await.unwrap();
    let mut c = theirs.connect(oaddr).await.unwrap();
    send_pattern(&mut c, LEN).await;
    check_pattern(&mut c, LEN).await;
    c.write_all(b"done").await.unwrap();
    c.flush().await.unwrap();
    srv.await.unwrap();
}
