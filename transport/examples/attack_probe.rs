//! The attacks of issue 10, at the issue's rates, against a listener in this
//! process (`tcp://127.0.0.1:0` and `utp://127.0.0.1:0`, default options),
//! while good clients dial with `Stream::direct_connect` (from 127.0.0.1,
//! the attackers' own source: the one figure an unmodified dialler can
//! give). Prints one `figure` line per attack; `scripts/attack-figures.sh`
//! runs it on main and on this branch.
//!
//! Only API that exists on both sides of the change is used, so the same
//! file builds against either.
//!
//! ```text
//! cargo run -p transport --example attack_probe [silent|syn|slow|flood ...]
//! ```

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use transport::utp::proto::{Header, PacketType};
use transport::{Endpoint, Identity, ListenEndpoint, Listener, Protocol, Stream};

const GOOD_TIMEOUT: Duration = Duration::from_secs(5);

fn syn(i: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    Header {
        packet_type: PacketType::Syn,
        connection_id: (i as u16).wrapping_mul(7919),
        timestamp: 0,
        timestamp_difference: 0,
        wnd_size: 1 << 20,
        seq_nr: (i as u16).wrapping_mul(31),
        ack_nr: 0,
    }
    .encode(None, &[], &mut out);
    out
}

struct Server {
    listener: Arc<Listener>,
    tcp: Endpoint,
    utp: Endpoint,
    serving: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start() -> Server {
        let eps: Vec<ListenEndpoint> = vec![
            "tcp://127.0.0.1:0".parse().unwrap(),
            "utp://127.0.0.1:0".parse().unwrap(),
        ];
        let listener = Arc::new(Listener::bind(&Identity::generate(), eps).unwrap());
        let find = |p| {
            *listener
                .endpoints()
                .iter()
                .find(|e| e.protocol == p)
                .unwrap()
        };
        let (tcp, utp) = (find(Protocol::Tcp), find(Protocol::Utp));
        let serving = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, sv, st) = (listener.clone(), serving.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if !sv.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let Ok(mut s) = l.accept_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(GOOD_TIMEOUT));
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                    }
                });
            }
        });
        Server {
            listener,
            tcp,
            utp,
            serving,
            stop,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One good client: connect, one echoed record.
fn good(ep: Endpoint) -> bool {
    let Ok(mut s) = Stream::direct_connect(&Identity::generate(), ep, GOOD_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(GOOD_TIMEOUT));
    let mut b = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"ping"
}

/// Good clients started every `every` for `dur` (each in its own thread);
/// returns (connected, tried).
fn good_clients(eps: &[Endpoint], every: Duration, dur: Duration) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < dur {
        let ep = eps[i % eps.len()];
        let ok = ok.clone();
        threads.push(std::thread::spawn(move || {
            if good(ep) {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
        i += 1;
        std::thread::sleep(every);
    }
    let tried = threads.len();
    for t in threads {
        let _ = t.join();
    }
    (ok.load(Ordering::Relaxed), tried)
}

/// Runs `attack` in a thread until `stop` is set.
fn in_background(
    attack: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    (stop, std::thread::spawn(move || attack(s)))
}

fn silent() {
    let srv = Server::start();
    let addr = srv.tcp.addr;
    let (stop, t) = in_background(move |stop| {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) && held.len() < 3000 {
            if let Ok(s) = TcpStream::connect(addr) {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (ok, tried) = good_clients(
        &[srv.tcp],
        Duration::from_millis(115),
        Duration::from_secs(10),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    println!("figure silent TCP connections, 100 new per second: {ok} of {tried}");
}

fn syn_trickle() {
    let srv = Server::start();
    let addr = srv.utp.addr;
    let (stop, t) = in_background(move |stop| {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = sock.send_to(&syn(i), addr);
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let (ok, tried) = good_clients(
        &[srv.utp, srv.tcp],
        Duration::from_millis(90),
        Duration::from_secs(10),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    println!(
        "figure uTP SYNs never followed up, 200 per second: {ok} of {tried} (uTP and TCP alternating)"
    );
}

fn slow_acceptor() {
    let srv = Server::start();
    srv.serving.store(false, Ordering::Relaxed);
    let ep = srv.tcp;
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let busy = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (held, busy) = (held.clone(), busy.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    match Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(3))
                    {
                        Ok(s) => held.lock().unwrap().push(s),
                        Err(_) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let connected = held.lock().unwrap().len();
    // The application is slow: it starts serving only now, and the
    // attackers stay connected but idle.
    srv.serving.store(true, Ordering::Relaxed);
    let (ok, tried) = good_clients(
        &[srv.tcp],
        Duration::from_millis(100),
        Duration::from_secs(8),
    );
    drop(held);
    println!(
        "figure 400 authenticated connections, slow acceptor: {ok} of {tried} afterwards ({connected} attackers connected, {} refused)",
        busy.load(Ordering::Relaxed)
    );
    let _ = &srv.listener;
}

fn flood() {
    let srv = Server::start();
    let addr = srv.utp.addr;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut replies = 0usize;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for i in 0..20_000u32 {
        let _ = sock.send_to(&syn(i), addr);
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        while sock.recv(&mut buf).is_ok() {
            replies += 1;
        }
    }
    let flood_time = start.elapsed();
    // How long uTP refuses new connections after the flood (cap 30 s).
    let after = Instant::now();
    let mut refused_for = None;
    while after.elapsed() < Duration::from_secs(30) {
        if good(srv.utp) {
            refused_for = Some(after.elapsed());
            break;
        }
        while sock.recv(&mut buf).is_ok() {
            replies += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Replies keep coming (FIN retries) for a while: count 10 s more.
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_secs(10) {
        while sock.recv(&mut buf).is_ok() {
            replies += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = match refused_for {
        Some(d) if d < Duration::from_secs(1) => "accepted the next connection at once".to_string(),
        Some(d) => format!(
            "refused new uTP connections for {:.0} s after the flood",
            d.as_secs_f64()
        ),
        None => "refused every new uTP connection for more than 30 s after the flood".into(),
    };
    println!(
        "figure 20,000 uTP SYNs in {:.0} s: {refused}; {replies} reply packets (x{:.1})",
        flood_time.as_secs_f64(),
        replies as f64 / 20_000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = ["silent", "syn", "slow", "flood"];
    let which: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for w in which {
        match w {
            "silent" => silent(),
            "syn" => syn_trickle(),
            "slow" => slow_acceptor(),
            "flood" => flood(),
            other => eprintln!("unknown attack {other}; one of {all:?}"),
        }
    }
}
