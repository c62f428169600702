//! uTP bulk throughput and round trips on loopback, as ratios against
//! baselines measured in the same run: `librqbit-utp` (a third-party uTP
//! crate) and raw tokio TCP.
//!
//! Output: one `name: value unit` line per figure and one
//! `ratio name: value` line per comparison. `UTP_BULK_MIB` sets the
//! transfer size (default 64), `UTP_BULK_ROUNDS` the number of alternating
//! rounds (default 3; the best round of each contender counts).
//!
//! Encrypted uTP is the transport crate's `aio::Stream` over `utp://`
//! endpoints: the same Noise `IK` handshake and ChaCha20-Poly1305 records as
//! over TCP, carried by our uTP.
//!
//! Two shapes are printed:
//! - **steady state** (the fair figure, the one the uTP targets stand
//!   against): `librqbit-utp` in its best documented configuration
//!   (`disable_nagle: true`), each of its two sides on its own runtime, and
//!   ours on the shared runtime; a warm-up past slow start, then a window
//!   of steady transfer; interleaved pairs, median and min–max
//!   ([`benches::interleaved_ratio`]);
//! - **whole transfer** (the old figure, kept beside it): a 64 MiB transfer
//!   timed from the first byte (slow start included), librqbit-utp with its
//!   defaults (Nagle on) on a runtime shared with ours, best of 3 rounds.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn pump_out<W: AsyncWrite + Unpin>(w: &mut W, len: usize) {
    let buf = vec![0xa5u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        w.write_all(&buf[..n]).await.unwrap();
        off += n;
    }
    w.flush().await.unwrap();
}

/// Reads exactly `len` bytes, then answers one byte so the sender's clock
/// stops only when everything arrived.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, len: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < len {
        let n = s
            .read(&mut buf[..(len - got).min(256 * 1024)])
            .await
            .unwrap();
        assert!(n > 0, "stream ended after {got} of {len} bytes");
        got += n;
    }
    s.write_all(b"!").await.unwrap();
    s.flush().await.unwrap();
}

async fn timed_send<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, len: usize) -> Duration {
    let t = Instant::now();
    pump_out(s, len).await;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    t.elapsed()
}

async fn ours_bulk(len: usize) -> Duration {
    use transport::utp::aio::UtpSocket;
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let addr = server.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        sink(&mut s, len).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let mut c = client.connect(addr).await.unwrap();
    let d = timed_send(&mut c, len).await;
    if std::env::var("UTP_BULK_DEBUG").is_ok() {
        eprintln!(
            "ours: {:?} cwnd {} rtt {:?}",
            c.stats(),
            c.congestion_window(),
            c.rtt()
        );
    }
    srv.await.unwrap();
    d
}

async fn encrypted_bulk(scheme: &str, len: usize) -> Duration {
    use transport::{Identity, aio};
    let l = aio::Listener::bind(&Identity::generate(), format!("{scheme}://127.0.0.1:0"))
        .await
        .unwrap();
    let ep = l.endpoints()[0];
    let srv = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        sink(&mut s, len).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let mut c = aio::Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(10))
        .await
        .unwrap();
    let d = timed_send(&mut c, len).await;
    srv.await.unwrap();
    d
}

async fn encrypted_rtt(scheme: &str, n: usize) -> Duration {
    use transport::{Identity, aio};
    let l = aio::Listener::bind(&Identity::generate(), format!("{scheme}://127.0.0.1:0"))
        .await
        .unwrap();
    let ep = l.endpoints()[0];
    let srv = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        echo(&mut s, n).await;
    });
    let mut c = aio::Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(10))
        .await
        .unwrap();
    let d = ping_pong(&mut c, n).await;
    srv.await.unwrap();
    d
}

async fn librqbit_bulk(len: usize) -> Duration {
    let server = librqbit_utp::UtpSocket::new_udp(lo()).await.unwrap();
    let client = librqbit_utp::UtpSocket::new_udp(lo()).await.unwrap();
    let addr = server.bind_addr();
    let srv = tokio::spawn(async move {
        let mut s = server.accept().await.unwrap();
        sink(&mut s, len).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let mut c = client.connect(addr).await.unwrap();
    let d = timed_send(&mut c, len).await;
    srv.await.unwrap();
    d
}

/// A free UDP port on loopback (utp-rs does not report its bound address).
fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind(lo())
        .and_then(|s| s.local_addr())
        .unwrap()
}

/// `utp-rs` (alpha): its streams are not `AsyncRead`; the receiver can
/// only read until the sender closes, so the clock stops when the
/// receiver has read to EOF.
async fn utp_rs_bulk(len: usize) -> Result<Duration, String> {
    use utp_rs::conn::ConnectionConfig;
    use utp_rs::peer::Peer;
    use utp_rs::socket::UtpSocket;
    let (sa, ca) = (free_udp_addr(), free_udp_addr());
    let server = UtpSocket::<SocketAddr>::bind(sa)
        .await
        .map_err(|e| e.to_string())?;
    let client = UtpSocket::<SocketAddr>::bind(ca)
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let srv = tokio::spawn(async move {
        let mut s = server.accept(ConnectionConfig::default()).await?;
        let mut got = Vec::with_capacity(len);
        s.read_to_eof(&mut got).await?;
        Ok::<usize, std::io::Error>(got.len())
    });
    let mut c = client
        .connect(Peer::new(sa), ConnectionConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let buf = vec![0xa5u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        let w = c.write(&buf[..n]).await.map_err(|e| e.to_string())?;
        off += w;
    }
    c.close().await.map_err(|e| e.to_string())?;
    let got = srv
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if got != len {
        return Err(format!("received {got} of {len} bytes"));
    }
    Ok(t.elapsed())
}

async fn tcp_bulk(len: usize) -> Duration {
    let l = tokio::net::TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        sink(&mut s, len).await;
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let d = timed_send(&mut c, len).await;
    srv.await.unwrap();
    d
}

async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, n: usize) -> Duration {
    let mut msg = [0u8; 64];
    let t = Instant::now();
    for i in 0..n {
        msg[0] = i as u8;
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut msg).await.unwrap();
    }
    t.elapsed()
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, n: usize) {
    let mut msg = [0u8; 64];
    for _ in 0..n {
        s.read_exact(&mut msg).await.unwrap();
        s.write_all(&msg).await.unwrap();
    }
}

async fn ours_rtt(n: usize) -> Duration {
    use transport::utp::aio::UtpSocket;
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let addr = server.local_addr();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        echo(&mut s, n).await;
    });
    let mut c = client.connect(addr).await.unwrap();
    let d = ping_pong(&mut c, n).await;
    srv.await.unwrap();
    d
}

async fn tcp_rtt(n: usize) -> Duration {
    let l = tokio::net::TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        echo(&mut s, n).await;
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let d = ping_pong(&mut c, n).await;
    srv.await.unwrap();
    d
}

/// Runs `f` `rounds` times and keeps the shortest duration.
async fn best<F, Fut>(rounds: usize, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut b = Duration::MAX;
    for _ in 0..rounds {
        b = b.min(f().await);
    }
    b
}

/// Warm-up of a steady-state window: past slow start.
const STEADY_WARMUP: Duration = Duration::from_millis(500);
/// One side's steady-state window.
const STEADY_WINDOW: Duration = Duration::from_secs(1);

/// A runtime of its own for one side of a third-party peer.
fn own_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts what `reader` receives while `writer` sends as fast as it can:
/// bytes per second over `window` after [`STEADY_WARMUP`]. Each future runs
/// on the runtime given with it; both end when the window does.
fn steady<R, W>(
    window: Duration,
    rx_rt: &tokio::runtime::Handle,
    reader: impl FnOnce() -> R,
    tx_rt: &tokio::runtime::Handle,
    writer: impl FnOnce() -> W,
) -> f64
where
    R: Future<Output = Box<dyn AsyncRead + Unpin + Send>> + Send + 'static,
    W: Future<Output = Box<dyn AsyncWrite + Unpin + Send>> + Send + 'static,
{
    let meter = benches::Meter::new();
    let m = meter.clone();
    let accept = reader();
    let rx = rx_rt.spawn(async move {
        let mut s = accept.await;
        let mut buf = vec![0u8; 256 * 1024];
        while !m.stopped() {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => m.add(n as u64),
            }
        }
    });
    let m = meter.clone();
    let connect = writer();
    let tx = tx_rt.spawn(async move {
        let mut c = connect.await;
        let buf = vec![0xa5u8; 64 * 1024];
        while !m.stopped() {
            if c.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = c.shutdown().await;
    });
    let rate = meter.measure(STEADY_WARMUP, window);
    tx.abort();
    rx.abort();
    rate
}

/// librqbit-utp, best documented configuration: Nagle off, each side on its
/// own runtime.
fn librqbit_steady(window: Duration) -> f64 {
    let (rx_rt, tx_rt) = (own_runtime(), own_runtime());
    let opts = || librqbit_utp::SocketOpts {
        disable_nagle: true,
        ..Default::default()
    };
    let server = rx_rt
        .block_on(librqbit_utp::UtpSocket::new_udp_with_opts(
            lo(),
            opts(),
            Default::default(),
        ))
        .unwrap();
    let client = tx_rt
        .block_on(librqbit_utp::UtpSocket::new_udp_with_opts(
            lo(),
            opts(),
            Default::default(),
        ))
        .unwrap();
    let addr = server.bind_addr();
    let rate = steady(
        window,
        rx_rt.handle(),
        move || async move {
            Box::new(server.accept().await.unwrap()) as Box<dyn AsyncRead + Unpin + Send>
        },
        tx_rt.handle(),
        move || async move {
            Box::new(client.connect(addr).await.unwrap()) as Box<dyn AsyncWrite + Unpin + Send>
        },
    );
    rx_rt.shutdown_background();
    tx_rt.shutdown_background();
    rate
}

/// Our uTP, plaintext, on the shared runtime.
fn ours_steady(window: Duration) -> f64 {
    use transport::utp::aio::UtpSocket;
    let rt = crust_runtime::handle();
    let server = UtpSocket::bind(lo()).unwrap();
    let client = UtpSocket::bind(lo()).unwrap();
    let addr = server.local_addr();
    steady(
        window,
        rt,
        move || async move {
            let (s, _) = server.accept().await.unwrap();
            Box::new(s) as Box<dyn AsyncRead + Unpin + Send>
        },
        rt,
        move || async move {
            // The stream keeps its socket's driver alive.
            let c = client.connect(addr).await.unwrap();
            Box::new(c) as Box<dyn AsyncWrite + Unpin + Send>
        },
    )
}

/// Our encrypted uTP (transport `aio::Stream` over `utp://`), on the shared
/// runtime.
fn encrypted_steady(window: Duration) -> f64 {
    use transport::{Identity, aio};
    let rt = crust_runtime::handle();
    let l = crust_runtime::block_on(aio::Listener::bind(
        &Identity::generate(),
        "utp://127.0.0.1:0",
    ))
    .unwrap()
    .unwrap();
    let ep = l.endpoints()[0];
    steady(
        window,
        rt,
        move || async move {
            let s = l.accept().await.unwrap();
            Box::new(s) as Box<dyn AsyncRead + Unpin + Send>
        },
        rt,
        move || async move {
            let c = aio::Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(10))
                .await
                .unwrap();
            Box::new(c) as Box<dyn AsyncWrite + Unpin + Send>
        },
    )
}

fn steady_section() {
    println!("# steady state: librqbit-utp with disable_nagle on its own runtimes");
    let pairs = env("UTP_BULK_PAIRS", benches::MIN_PAIRS);
    benches::interleaved_ratio(
        "utp_bulk_raw_steady/librqbit_utp_steady",
        pairs,
        STEADY_WINDOW,
        1.0,
        librqbit_steady,
        ours_steady,
    );
    benches::interleaved_ratio(
        "utp_bulk_encrypted_steady/librqbit_utp_steady",
        pairs,
        STEADY_WINDOW,
        1.0,
        librqbit_steady,
        encrypted_steady,
    );
}

fn main() {
    steady_section();
    println!("# whole transfer (old shape): librqbit-utp defaults, shared runtime, best of rounds");
    let mib = env("UTP_BULK_MIB", 64);
    let rounds = env("UTP_BULK_ROUNDS", 3);
    let len = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mbps = |d: Duration| len as f64 / d.as_secs_f64() / 1e6;
        let mut ours = Duration::MAX;
        let mut theirs = Duration::MAX;
        let mut tcp = Duration::MAX;
        let mut enc = Duration::MAX;
        // Alternate contenders so load changes hit all of them alike.
        for _ in 0..rounds {
            ours = ours.min(ours_bulk(len).await);
            theirs = theirs.min(librqbit_bulk(len).await);
            tcp = tcp.min(tcp_bulk(len).await);
            enc = enc.min(encrypted_bulk("utp", len).await);
        }
        // utp-rs: a smaller transfer with a time limit (alpha quality).
        let rs_len = len.min(16 << 20);
        let rs = tokio::time::timeout(Duration::from_secs(60), utp_rs_bulk(rs_len)).await;
        let rs_mbps = match rs {
            Ok(Ok(d)) => Some(rs_len as f64 / d.as_secs_f64() / 1e6),
            Ok(Err(e)) => {
                eprintln!("utp-rs bulk failed: {e}");
                None
            }
            Err(_) => {
                eprintln!("utp-rs bulk did not finish within 60 s");
                None
            }
        };
        println!("utp_bulk_raw: {:.1} MB/s", mbps(ours));
        println!("librqbit_utp_bulk: {:.1} MB/s", mbps(theirs));
        match rs_mbps {
            Some(r) => println!("utp_rs_bulk: {r:.1} MB/s"),
            None => println!("utp_rs_bulk: failed"),
        }
        println!("tcp_bulk_raw: {:.1} MB/s", mbps(tcp));
        let (best_name, best_mbps) = match rs_mbps {
            Some(r) if r > mbps(theirs) => ("utp_rs_bulk", r),
            _ => ("librqbit_utp_bulk", mbps(theirs)),
        };
        println!(
            "ratio utp_bulk_raw/librqbit_utp_bulk: {:.2}",
            mbps(ours) / mbps(theirs)
        );
        println!(
            "ratio utp_bulk_raw/fastest_third_party ({best_name}): {:.2}",
            mbps(ours) / best_mbps
        );
        println!(
            "ratio utp_bulk_raw/tcp_bulk_raw: {:.3}",
            mbps(ours) / mbps(tcp)
        );
        println!("utp_bulk_encrypted: {:.1} MB/s", mbps(enc));
        println!(
            "ratio utp_bulk_encrypted/fastest_third_party_plaintext ({best_name}): {:.2} (target >= 1.0)",
            mbps(enc) / best_mbps
        );
        println!(
            "ratio utp_bulk_encrypted/tcp_bulk_raw: {:.3} (stretch target >= 0.25)",
            mbps(enc) / mbps(tcp)
        );

        let n = 5000;
        let u = best(rounds, || ours_rtt(n)).await;
        let t = best(rounds, || tcp_rtt(n)).await;
        let rps = |d: Duration| n as f64 / d.as_secs_f64();
        println!("utp_roundtrips_64b: {:.0} 1/s", rps(u));
        println!("tcp_roundtrips_64b: {:.0} 1/s", rps(t));
        println!(
            "ratio utp_roundtrips/tcp_roundtrips: {:.3}",
            rps(u) / rps(t)
        );
        let eu = best(rounds, || encrypted_rtt("utp", n)).await;
        let et = best(rounds, || encrypted_rtt("tcp", n)).await;
        println!("utp_roundtrips_64b_encrypted: {:.0} 1/s", rps(eu));
        println!("tcp_roundtrips_64b_encrypted: {:.0} 1/s", rps(et));
        println!(
            "ratio utp_roundtrips_encrypted/tcp_roundtrips_encrypted: {:.3}",
            rps(eu) / rps(et)
        );
    });
}
