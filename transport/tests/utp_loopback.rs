//! Raw uTP streams ([`transport::utp::aio`]) over real UDP sockets on
//! loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::utp::aio::{UtpSocket, UtpStream};
use transport::utp::proto::{Config, EndpointConfig};

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn byte_at(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 29) as u8 ^ (i >> 20) as u8
}

async fn send_pattern(s: &mut UtpStream, len: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(off + k);
        }
        s.write_all(&buf[..n]).await.unwrap();
        off += n;
    }
}

async fn check_pattern(s: &mut UtpStream, len: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte_at(off + k), "wrong byte at offset {}", off + k);
        }
        off += n;
        assert!(off <= len, "more bytes than sent");
    }
    assert_eq!(off, len, "stream ended early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_clean_close() {
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let saddr = server.local_addr();
    let caddr = client.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, peer) = server.accept().await.unwrap();
        assert_eq!(peer, caddr);
        assert_eq!(s.peer_addr(), caddr);
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        s.shutdown().await.unwrap();
        buf
    });
    let mut c = client.connect(saddr).await.unwrap();
    assert_eq!(c.peer_addr(), saddr);
    assert_eq!(c.local_addr(), caddr);
    // Small writes go out at once (no Nagle): one byte, then more.
    c.write_all(b"h").await.unwrap();
    c.write_all(b"ello uTP").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello uTP");
    assert_eq!(srv.await.unwrap(), b"hello uTP");
    // Writing after shutdown is an error.
    assert!(c.write_all(b"x").await.is_err());
}

/// 200 MiB on loopback: about 150,000 packets, so sequence numbers wrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transfer_200mib_loopback() {
    const LEN: usize = 200 << 20;
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let saddr = server.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        check_pattern(&mut s, LEN).await;
    });
    let mut c = client.connect(saddr).await.unwrap();
    send_pattern(&mut c, LEN).await;
    c.shutdown().await.unwrap();
    srv.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_socket() {
    const N: usize = 16;
    const LEN: usize = 512 * 1024;
    let server = UtpSocket::bind(lo()).unwrap();
    let client = std::sync::Arc::new(UtpSocket::bind(lo()).unwrap());
    let saddr = server.local_addr();
    let srv = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (mut s, _) = server.accept().await.unwrap();
            tasks.push(tokio::spawn(async move {
                check_pattern(&mut s, LEN).await;
                s.write_all(b"ok").await.unwrap();
                s.shutdown().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..N {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client.connect(saddr).await.unwrap();
            send_pattern(&mut c, LEN).await;
            c.shutdown().await.unwrap();
            let mut ok = Vec::new();
            c.read_to_end(&mut ok).await.unwrap();
            assert_eq!(ok, b"ok");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.await.unwrap();
}

fn quick_config() -> EndpointConfig {
    EndpointConfig::default().connection(
        Config::default()
            .syn_retransmissions(1)
            .rendezvous_timeout(Duration::from_secs(2)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_non_listening_socket_is_refused() {
    let quiet = UtpSocket::from_std(std::net::UdpSocket::bind(lo()).unwrap()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let err = client.connect(quiet.local_addr()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(err.to_string().contains("reset by peer"), "{err}");
    assert_eq!(quiet.stats().syns_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_silence_times_out_with_count() {
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind(lo()).unwrap();
    let client =
        UtpSocket::from_std_with_config(std::net::UdpSocket::bind(lo()).unwrap(), quick_config())
            .unwrap();
    let err = client
        .connect(silent.local_addr().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&silent.local_addr().unwrap().to_string())
            && msg.contains("timed out after 1 retransmissions"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_is_reset_by_peer() {
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let saddr = server.local_addr();
    let (saw_reset, client_saw_reset) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s.abort();
        // Keep the socket alive until the client saw the RESET.
        let _ = client_saw_reset.await;
    });
    let mut c = client.connect(saddr).await.unwrap();
    c.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).await.unwrap_err();
    let _ = saw_reset.send(());
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(err.to_string().contains("reset by peer"), "{err}");
    srv.await.unwrap();
}

/// The initiator may start first: its first SYN meets a socket that does
/// not expect it yet and is refused, and the rendezvous still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_initiator_first() {
    let a = std::net::UdpSocket::bind(lo()).unwrap();
    let b = std::net::UdpSocket::bind(lo()).unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let a = UtpSocket::from_std(a).unwrap();
    let b = UtpSocket::from_std(b).unwrap();
    let ini = tokio::spawn(async move {
        let s = a.rendezvous_connect(ba, b"n", true).await;
        (s, a)
    });
    // Wait until b has refused the first SYN.
    while b.stats().syns_refused == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sb = b.rendezvous_connect(aa, b"n", false).await.unwrap();
    let (sa, _a) = ini.await.unwrap();
    let mut sa = sa.unwrap();
    sa.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    sb.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_over_existing_sockets() {
    let a = std::net::UdpSocket::bind(lo()).unwrap();
    let b = std::net::UdpSocket::bind(lo()).unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let a = UtpSocket::from_std(a).unwrap();
    let b = UtpSocket::from_std(b).unwrap();
    let nonce = b"shared secret nonce";
    let (sa, sb) = tokio::join!(
        a.rendezvous_connect(ba, nonce, true),
        b.rendezvous_connect(aa, nonce, false)
    );
    let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());
    sa.write_all(b"from a").await.unwrap();
    sb.write_all(b"from b").await.unwrap();
    let mut buf = [0u8; 6];
    sb.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from a");
    sa.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_with_wrong_nonce_fails() {
    let a = std::net::UdpSocket::bind(lo()).unwrap();
    let b = std::net::UdpSocket::bind(lo()).unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let a = UtpSocket::from_std_with_config(a, quick_config()).unwrap();
    let b = UtpSocket::from_std_with_config(b, quick_config()).unwrap();
    let (ra, rb) = tokio::join!(
        a.rendezvous_connect(ba, b"nonce one", true),
        b.rendezvous_connect(aa, b"nonce two", false)
    );
    // The responder refuses the SYN it does not expect; the initiator
    // keeps trying until its SYN retries run out, the responder times out
    // waiting for the SYN it expects.
    let ea = ra.unwrap_err();
    assert_eq!(ea.kind(), std::io::ErrorKind::TimedOut, "{ea}");
    assert!(b.stats().syns_refused >= 2, "{:?}", b.stats());
    let eb = rb.unwrap_err();
    assert_eq!(eb.kind(), std::io::ErrorKind::TimedOut, "{eb}");
    assert!(eb.to_string().contains("rendezvous"), "{eb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_still_delivers_its_data_then_fin() {
    {
        let server = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let sender = tokio::spawn(async move {
            let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let mut c = client.connect(addr).await.unwrap();
            c.write_all(&[1u8; 300_000]).await.unwrap();
            // Dropped without shutdown, with data still unacked.
        });
        let (mut s, _) = server.accept().await.unwrap();
        sender.await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 300_000);
    }
}

/// IPv6 loopback, and one write larger than the send buffer (1 MiB): it
/// must not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_write_larger_than_send_buffer() {
    let any6: SocketAddr = "[::1]:0".parse().unwrap();
    let server = UtpSocket::bind(any6).unwrap();
    let client = UtpSocket::bind(any6).unwrap();
    let saddr = server.local_addr();
    assert!(saddr.is_ipv6());
    let big = vec![0x3cu8; 5 << 20];
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut c = client.connect(saddr).await.unwrap();
    c.write_all(&big).await.unwrap();
    c.shutdown().await.unwrap();
    assert!(srv.await.unwrap() == big);
}

/// Split halves used from two tasks at once, both directions at the same
/// time; dropping the write half sends FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_full_duplex() {
    const LEN: usize = 4 << 20;
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let saddr = server.local_addr();
    let srv = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).await.unwrap();
            }
            drop(w); // FIN
        });
        echo.await.unwrap();
    });
    let c = client.connect(saddr).await.unwrap();
    let (mut r, mut w) = c.split();
    let writer = tokio::spawn(async move {
        let buf: Vec<u8> = (0..LEN).map(byte_at).collect();
        w.write_all(&buf).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    srv.await.unwrap();
    assert_eq!(back.len(), LEN);
    assert!(back.iter().enumerate().all(|(i, b)| *b == byte_at(i)));
}

#[test]
fn stream_and_socket_types_are_what_the_transport_layer_needs() {
    use tokio::io::{AsyncRead, AsyncWrite};
    fn stream<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>() {}
    fn reader<T: AsyncRead + Unpin + Send + Sync + 'static>() {}
    fn writer<T: AsyncWrite + Unpin + Send + Sync + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    stream::<UtpStream>();
    reader::<transport::utp::aio::UtpReadStream>();
    writer::<transport::utp::aio::UtpWriteStream>();
    shared::<UtpSocket>();
}
