//! `cargo bench -p benches --bench transport_echo`
//!
//! Encrypted transport against raw sockets, measured in the same run:
//! - 64-byte round trips per second at 1, 16 and 256 connections, one client
//!   thread per connection; the server is our blocking `Listener` with one
//!   thread per accepted `Stream` (mirroring the thread-per-connection
//!   `std::net` baseline), and also an `aio` server (one task per stream on
//!   the shared runtime).
//! - bulk one-way throughput of one encrypted stream against
//!   min(raw `std::net` TCP, single-core ChaCha20-Poly1305 seal rate of
//!   `ring` and of RustCrypto's `chacha20poly1305`, whichever is faster).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use benches::{Meter, PAIR_WARMUP, PAIR_WINDOW, figure, interleaved_ratio, ratio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::{Endpoint, Identity, Listener, Stream, aio};

const MSG: usize = 64;
const BULK_CHUNK: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Interleaved pairs per ratio.
const PAIRS: usize = benches::MIN_PAIRS;

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Blocking,
    Aio,
}

/// Runs `n` client loops of 64-byte round trips over `connect()`ed streams
/// and returns round trips per second.
fn rtt_clients<S: Read + Write + Send + 'static>(
    n: usize,
    window: Duration,
    connect: impl Fn() -> S,
) -> f64 {
    let meter = Meter::new();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut s = connect();
        let meter = meter.clone();
        let barrier = barrier.clone();
        clients.push(thread::spawn(move || {
            let mut buf = [7u8; MSG];
            barrier.wait();
            let mut local = 0u64;
            while !meter.stopped() {
                s.write_all(&buf).unwrap();
                s.read_exact(&mut buf).unwrap();
                local += 1;
                if local == 16 {
                    meter.add(local);
                    local = 0;
                }
            }
        }));
    }
    barrier.wait();
    let rate = meter.measure(PAIR_WARMUP, window);
    for c in clients {
        c.join().unwrap();
    }
    rate
}

fn echo_loop(mut s: impl Read + Write) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn rtt_std(n: usize, window: Duration) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..n {
            let (s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            workers.push(thread::spawn(move || echo_loop(s)));
        }
        for w in workers {
            w.join().unwrap();
        }
    });
    let rate = rtt_clients(n, window, || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s
    });
    server.join().unwrap();
    rate
}

/// Starts a crust echo server for `n` connections; returns its endpoint and
/// a handle to wait for it.
fn crust_echo_server(n: usize, kind: Server) -> (Endpoint, thread::JoinHandle<()>) {
    let id = Identity::generate();
    match kind {
        Server::Blocking => {
            let l = Listener::bind(&id, "tcp://127.0.0.1:0").unwrap();
            let ep = l.endpoints()[0];
            let h = thread::spawn(move || {
                let mut workers = Vec::new();
                for _ in 0..n {
                    let s = l.accept().unwrap();
                    workers.push(thread::spawn(move || echo_loop(s)));
                }
                for w in workers {
                    w.join().unwrap();
                }
            });
            (ep, h)
        }
        Server::Aio => {
            let l = crust_runtime::block_on(aio::Listener::bind(&id, "tcp://127.0.0.1:0"))
                .unwrap()
                .unwrap();
            let ep = l.endpoints()[0];
            let h = thread::spawn(move || {
                crust_runtime::block_on(async move {
                    let mut tasks = Vec::new();
                    for _ in 0..n {
                        let mut s = l.accept().await.unwrap();
                        tasks.push(crust_runtime::spawn(async move {
                            let mut buf = [0u8; 4096];
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(k) => {
                                        if s.write_all(&buf[..k]).await.is_err() {
                                            return;
                                        }
                                        if s.flush().await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
                .unwrap();
            });
            (ep, h)
        }
    }
}

fn rtt_crust(n: usize, kind: Server, window: Duration) -> f64 {
    let (ep, server) = crust_echo_server(n, kind);
    let client_id = Identity::generate();
    let rate = rtt_clients(n, window, || {
        Stream::direct_connect(&client_id, ep, CONNECT_TIMEOUT).unwrap()
    });
    server.join().unwrap();
    rate
}

/// One writer thread pushing 256 KiB writes, one reader counting bytes.
/// Prints the CPU time each thread spent per GiB moved (user + system),
/// which shows where a bulk transfer's cost goes on a loaded machine.
fn bulk<R, W>(name: &str, window: Duration, reader: R, writer: W) -> f64
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let meter = Meter::new();
    let m = meter.clone();
    let mut reader = reader;
    let r = thread::spawn(move || {
        let mut buf = vec![0u8; BULK_CHUNK];
        let cpu0 = thread_cpu_seconds();
        let mut total = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return cpu_per_gib(cpu0, total),
                Ok(n) => {
                    m.add(n as u64);
                    total += n as u64;
                }
            }
        }
    });
    let m = meter.clone();
    let mut writer = writer;
    let w = thread::spawn(move || {
        let buf = vec![0x5au8; BULK_CHUNK];
        let cpu0 = thread_cpu_seconds();
        let mut total = 0u64;
        while !m.stopped() {
            if writer.write_all(&buf).is_err() {
                break;
            }
            total += buf.len() as u64;
        }
        cpu_per_gib(cpu0, total)
        // Dropping the writer ends the stream.
    });
    let rate = meter.measure(PAIR_WARMUP, window);
    let w_cpu = w.join().unwrap();
    let r_cpu = r.join().unwrap();
    figure(&format!("{name}_writer_cpu"), w_cpu, "cpu_s/GiB");
    figure(&format!("{name}_reader_cpu"), r_cpu, "cpu_s/GiB");
    rate
}

/// CPU time (user + system) of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the command name: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_per_gib(cpu0: f64, bytes: u64) -> f64 {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib > 0.0 {
        (thread_cpu_seconds() - cpu0) / gib
    } else {
        0.0
    }
}

fn bulk_std(window: Duration) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    c.set_nodelay(true).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    bulk("bulk_std_tcp", window, s, c)
}

fn bulk_crust(window: Duration) -> f64 {
    let id = Identity::generate();
    let l = Listener::bind(&id, "tcp://127.0.0.1:0").unwrap();
    let ep = l.endpoints()[0];
    let c = Stream::direct_connect(&Identity::generate(), ep, CONNECT_TIMEOUT).unwrap();
    let s = l.accept().unwrap();
    bulk("bulk_crust", window, s, c)
}

fn bulk_crust_aio(window: Duration) -> f64 {
    let id = Identity::generate();
    let l = crust_runtime::block_on(aio::Listener::bind(&id, "tcp://127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let ep = l.endpoints()[0];
    let meter = Meter::new();
    let m = meter.clone();
    let reader = crust_runtime::spawn(async move {
        let mut s = l.accept().await.unwrap();
        let mut buf = vec![0u8; BULK_CHUNK];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => m.add(n as u64),
            }
        }
    });
    let m = meter.clone();
    let writer = crust_runtime::spawn(async move {
        let mut c = aio::Stream::direct_connect(&Identity::generate(), ep, CONNECT_TIMEOUT)
            .await
            .unwrap();
        let buf = vec![0x5au8; BULK_CHUNK];
        while !m.stopped() {
            if c.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = c.shutdown().await;
    });
    let rate = meter.measure(PAIR_WARMUP, window);
    crust_runtime::block_on(async {
        writer.await.unwrap();
        reader.await.unwrap();
    })
    .unwrap();
    rate
}

/// Single-core seal rate of 64 KiB buffers, bytes per second.
fn seal_rate(mut seal: impl FnMut(u64, &mut [u8])) -> f64 {
    let mut buf = vec![0x33u8; 64 * 1024];
    let mut nonce = 0u64;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        seal(nonce, &mut buf);
        nonce += 1;
    }
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while t0.elapsed() < Duration::from_secs(1) {
        seal(nonce, &mut buf);
        nonce += 1;
        bytes += buf.len() as u64;
    }
    bytes as f64 / t0.elapsed().as_secs_f64()
}

fn seal_ring() -> f64 {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9u8; 32]).unwrap());
    seal_rate(|n, buf| {
        let mut nb = [0u8; 12];
        nb[4..].copy_from_slice(&n.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nb), Aad::empty(), buf)
            .unwrap();
        let _ = std::hint::black_box(tag);
    })
}

fn seal_rustcrypto() -> f64 {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    let cipher = ChaCha20Poly1305::new(&[9u8; 32].into());
    seal_rate(|n, buf| {
        let mut nb = [0u8; 12];
        nb[4..].copy_from_slice(&n.to_le_bytes());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nb), b"", buf)
            .unwrap();
        let _ = std::hint::black_box(tag);
    })
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments select sections
    // (`rtt`, `bulk`); none runs everything.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |section: &str| filters.is_empty() || filters.iter().any(|f| f == section);
    let started = Instant::now();
    println!(
        "# transport_echo: {} CPUs, runtime workers {}",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        crust_runtime::worker_threads()
    );

    for n in [1usize, 16, 256].into_iter().filter(|_| run("rtt")) {
        interleaved_ratio(
            &format!("rtt_{n}conn"),
            PAIRS,
            PAIR_WINDOW,
            0.8,
            |w| rtt_std(n, w),
            |w| rtt_crust(n, Server::Blocking, w),
        );
        interleaved_ratio(
            &format!("rtt_{n}conn_aio_server"),
            PAIRS,
            PAIR_WINDOW,
            0.8,
            |w| rtt_std(n, w),
            |w| rtt_crust(n, Server::Aio, w),
        );
    }

    if run("bulk") {
        bulk_section();
    }
    figure("bench_wall_time", started.elapsed().as_secs_f64(), "s");
}

fn bulk_section() {
    let mib = 1024.0 * 1024.0;
    let ring_rate = seal_ring();
    let rc_rate = seal_rustcrypto();
    figure("seal_ring_chacha20poly1305", ring_rate / mib, "MiB/s");
    figure("seal_rustcrypto_chacha20poly1305", rc_rate / mib, "MiB/s");
    ratio(
        "seal_ring_vs_rustcrypto_ratio",
        ring_rate,
        rc_rate,
        "ring / RustCrypto seal rate, for scale",
        0.0,
    );
    // The baseline of a bulk pair: std TCP, capped by the fastest
    // single-core seal (crust cannot beat the cipher on one core).
    let best_seal = ring_rate.max(rc_rate);
    interleaved_ratio(
        "bulk",
        PAIRS,
        PAIR_WINDOW,
        0.7,
        |w| bulk_std(w).min(best_seal),
        bulk_crust,
    );
    interleaved_ratio(
        "bulk_aio",
        PAIRS,
        PAIR_WINDOW,
        0.7,
        |w| bulk_std(w).min(best_seal),
        bulk_crust_aio,
    );
}
