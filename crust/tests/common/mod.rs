//! Helpers shared by the crust test binaries.
#![allow(dead_code)] // each binary uses its own subset

pub mod lab_peer;

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crust::{Config, Endpoint, Protocol};

/// A beacon port of this run (different per call and per process, so
/// concurrent runs do not hear each other).
pub fn beacon_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    30_000
        + ((std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(n * 7))
            % 20_000
}

/// Loopback, fresh identity, beacon off.
pub fn quiet(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_enabled(false)
}

/// Loopback with a fast beacon on a port of this run.
pub fn beaconing(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_port(beacon_port())
        .beacon_period(Duration::from_millis(100))
}

/// The first of `endpoints` over `p`.
pub fn first(endpoints: Vec<Endpoint>, p: Protocol) -> Endpoint {
    endpoints
        .into_iter()
        .find(|e| e.protocol == p)
        .expect("an endpoint of that protocol")
}

// ---------------------------------------------------------------------------
// Hostile-peer harness (`hostile_*.rs`): a Service under attack that echoes
// every message on every stream it accepts, good peers that exchange
// messages with it and time each round trip, attackers' raw tools, and
// resource counters.
// ---------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crust::proto::{CRUST_VERSION, Frame, Hello};
use crust::transport::Identity;
use crust::{Error, Service, ServiceController};

/// Hang guard for a single network wait in the harness.
pub const T: Duration = Duration::from_secs(10);

/// The liveness bound on the good exchange: no round trip of the good peer
/// may take longer than this while an attack runs. It is about liveness
/// (never a stall), not speed: loopback round trips are well under 10 ms.
pub const STALL: Duration = Duration::from_secs(5);

/// How long resources may take to return to baseline after an attack:
/// uTP connections linger up to 5 s to deliver their FIN, streams of silent
/// peers end after the target's inactivity timeout (2 s in [`hostile`]),
/// heartbeat bookkeeping drops dead streams at its next tick.
pub const SETTLE: Duration = Duration::from_secs(30);

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The names of this process's threads, for a failure message.
pub fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Resident memory in KiB.
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// What the process holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub fds: usize,
    pub threads: usize,
    pub tasks: usize,
    pub rss_kib: u64,
}

pub fn usage() -> Usage {
    Usage {
        fds: open_fds(),
        threads: threads(),
        tasks: crust_runtime::alive_tasks(),
        rss_kib: rss_kib(),
    }
}

/// The tests of one hostile binary run one at a time: each measures the
/// whole process.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Panics anywhere in the process (runtime tasks included) since the hook
/// was installed.
pub fn panics() -> usize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            COUNT.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
    COUNT.load(Ordering::SeqCst)
}

/// A small deterministic generator for attack bytes (no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The config of a service under attack: loopback, beacon on `lo` on a
/// port of this run, short timeouts so silent attackers end within
/// [`SETTLE`], 64 KiB messages at most.
pub fn hostile(network: &str) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_port(beacon_port())
        .beacon_period(Duration::from_millis(200))
        .heartbeat_period(Duration::from_millis(200))
        .inactivity_timeout(Duration::from_secs(2))
        .handshake_timeout(Duration::from_secs(2))
        .max_message_size(64 * 1024)
}

/// How the streams the target accepted ended, by error kind.
pub type Endings = Arc<Mutex<BTreeMap<String, usize>>>;

/// A service under attack. It echoes every message on every stream it
/// accepts, one thread per stream (the blocking API's way), and records how
/// each stream ended.
pub struct Target {
    pub controller: ServiceController,
    pub beacon_receiver: Option<crust::ServiceBeaconReceiver>,
    pub config: Config,
    /// Streams accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Echo threads still running.
    pub live: Arc<AtomicUsize>,
    pub endings: Endings,
    _beacon_state: crust::ServiceBeaconState,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn ending(e: &Error) -> String {
    match e {
        Error::PeerLost { .. } => "lost".into(),
        Error::Closed(_) => "closed".into(),
        Error::Protocol { .. } => "protocol".into(),
        Error::MessageTooLarge { .. } => "too large".into(),
        Error::Io { source, .. } => format!("io {:?}", source.kind()),
        other => format!("other: {other}"),
    }
}

/// Called by a [`Target`] with each message it receives, before its echo.
pub type OnMessage = Arc<dyn Fn(&[u8]) + Send + Sync>;

impl Target {
    pub fn start(config: Config) -> Target {
        Target::start_with(config, Arc::new(|_: &[u8]| {}))
    }

    /// As [`start`](Target::start), calling `on_message` with each message
    /// received (on the stream's thread, before the echo).
    pub fn start_with(config: Config, on_message: OnMessage) -> Target {
        let s = Service::new_from_config(config.clone()).expect("target service");
        let accepted = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let endings: Endings = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = s.acceptor;
        let (a, l, en, st) = (
            accepted.clone(),
            live.clone(),
            endings.clone(),
            stop.clone(),
        );
        let acceptor = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let stream = match acceptor.accept_timeout(Duration::from_millis(100)) {
                    Ok(s) => s,
                    Err(Error::TimedOut { .. }) => continue,
                    Err(e) => panic!("the target's acceptor failed: {e}"),
                };
                a.fetch_add(1, Ordering::Relaxed);
                l.fetch_add(1, Ordering::Relaxed);
                let (l, en, on_message) = (l.clone(), en.clone(), on_message.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let why = loop {
                        if let Err(e) = stream.recv_into(&mut buf) {
                            break ending(&e);
                        }
                        on_message(&buf);
                        if let Err(e) = stream.send(&buf) {
                            break format!("send: {}", ending(&e));
                        }
                    };
                    drop(stream);
                    *en.lock().unwrap().entry(why).or_default() += 1;
                    l.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Target {
            controller: s.controller,
            beacon_receiver: Some(s.beacon_receiver),
            config,
            accepted,
            live,
            endings,
            _beacon_state: s.beacon_state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn endpoint(&self, p: Protocol) -> Endpoint {
        first(self.controller.endpoints(), p)
    }

    /// The target's STUN server (UDP and TCP on the same port).
    pub fn stun_addr(&self) -> SocketAddr {
        match self.controller.hole_punch_addresses()[0] {
            crust::nat_traversal::HolePunchServerAddr::Simple(a) => a,
            ref other => panic!("unexpected STUN address {other:?}"),
        }
    }

    pub fn beacon_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.beacon.port))
    }

    pub fn endings(&self) -> BTreeMap<String, usize> {
        self.endings.lock().unwrap().clone()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Round trips of a good peer.
#[derive(Debug, Default)]
pub struct Rtts(pub Vec<Duration>);

impl Rtts {
    pub fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    pub fn worst(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// How many round trips took longer than `d`.
    pub fn over(&self, d: Duration) -> usize {
        self.0.iter().filter(|&&r| r > d).count()
    }
}

/// A good peer: its own service, one stream to the target, a thread that
/// sends a numbered message every 5 ms and waits for its echo (at most
/// [`STALL`]).
pub struct GoodPeer {
    pub protocol: Protocol,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::result::Result<Rtts, String>>>,
    _client: Service,
}

impl GoodPeer {
    pub fn start(target: &Target, protocol: Protocol) -> GoodPeer {
        let client = Service::new_from_config(target.config.clone().beacon_enabled(false))
            .expect("good peer service");
        let stream = client
            .controller
            .connect(&target.endpoint(protocol))
            .expect("good peer connects before the attack");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rtts = Rtts::default();
            let mut n: u64 = 0;
            let mut echo = Vec::new();
            while !st.load(Ordering::Relaxed) || rtts.0.len() < 20 {
                n += 1;
                let msg = [&n.to_be_bytes()[..], &[0xAB; 56]].concat();
                let t0 = Instant::now();
                stream
                    .send(&msg)
                    .map_err(|e| format!("good peer's send {n}: {e}"))?;
                stream
                    .recv_into_timeout(&mut echo, STALL)
                    .map_err(|e| format!("good peer's round trip {n}: {e}"))?;
                rtts.0.push(t0.elapsed());
                if echo != msg {
                    return Err(format!("good peer's echo {n} differs"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            stream
                .close()
                .map_err(|e| format!("good peer's close: {e}"))?;
            Ok(rtts)
        });
        GoodPeer {
            protocol,
            stop,
            thread: Some(thread),
            _client: client,
        }
    }

    /// Stops the exchange; panics if it ever failed or stalled.
    pub fn finish(mut self, attack: &str) -> Rtts {
        self.stop.store(true, Ordering::Relaxed);
        let rtts = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("the good peer's thread panicked")
            .unwrap_or_else(|e| panic!("{attack}: {e}"));
        println!(
            "figure {attack} good {} peer: {} round trips, median {:?}, worst {:?} (bound {:?}), {} over 100 ms",
            self.protocol,
            rtts.0.len(),
            rtts.median(),
            rtts.worst(),
            STALL,
            rtts.over(Duration::from_millis(100)),
        );
        assert!(rtts.worst() < STALL);
        rtts
    }
}

/// Samples the process's peak usage while it runs.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Usage>>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Usage::default();
            while !st.load(Ordering::Relaxed) {
                let u = usage();
                peak.fds = peak.fds.max(u.fds);
                peak.threads = peak.threads.max(u.threads);
                peak.tasks = peak.tasks.max(u.tasks);
                peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn peak(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Bounds on an attack's effect: peak use above the baseline while it runs
/// (attackers run in this process, so their own sockets count too), and how
/// far above the baseline use must settle after it.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub peak_fds: usize,
    pub peak_threads: usize,
    pub peak_rss_kib: u64,
}

/// After an attack and the good peers' close, within [`SETTLE`]: fds and
/// runtime tasks back to at most what the process held before both plus
/// these, threads back to exactly that.
pub const SETTLE_FDS: usize = 2;
pub const SETTLE_TASKS: usize = 2;

/// Runs `attack` against `target` while a good TCP peer and a good uTP
/// peer exchange messages with it. Prints their round trips and the peak
/// use; asserts nothing panicked, no round trip took [`STALL`], peak use
/// stayed within `bounds`, and after the attack fds, tasks and threads
/// returned near the baseline (see [`SETTLE_FDS`]).
pub fn under_attack<R>(
    name: &str,
    target: &Target,
    bounds: Bounds,
    attack: impl FnOnce() -> R,
) -> R {
    let panics_before = panics();
    let sampler = Sampler::start();
    // What the process holds before the good peers and the attack: where
    // it must come back to once both are gone.
    let pre = usage();
    let good: Vec<GoodPeer> = [Protocol::Tcp, Protocol::Utp]
        .into_iter()
        .map(|p| GoodPeer::start(target, p))
        .collect();
    // Baseline with the good peers connected and exchanging.
    std::thread::sleep(Duration::from_millis(200));
    let base = usage();
    let started = Instant::now();
    let r = attack();
    let took = started.elapsed();
    for g in good {
        g.finish(name);
    }
    let after_attack = usage();
    // The good peers' streams close: their echo threads end too. Wait for
    // the service to shed every attacker.
    let deadline = Instant::now() + SETTLE;
    let settled = loop {
        let u = usage();
        if u.fds <= pre.fds + SETTLE_FDS
            && u.tasks <= pre.tasks + SETTLE_TASKS
            && u.threads <= pre.threads
        {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: resources did not return near baseline within {SETTLE:?}: \
             before {pre:?}, now {u:?}, {} echo threads live, endings {:?}, threads {:?}",
            target.live.load(Ordering::Relaxed),
            target.endings(),
            thread_names()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let settle_time = started.elapsed() - took;
    let peak = sampler.peak();
    println!(
        "figure {name}: attack ran {took:?}; peak above baseline: fds +{} (bound {}), threads +{} (bound {}), \
         rss +{} KiB (bound {}); right after: {after_attack:?}; settled in {settle_time:?} to {settled:?} \
         (before the good peers and the attack {pre:?}, with the good peers {base:?}); accepted {} streams, endings {:?}",
        peak.fds.saturating_sub(base.fds),
        bounds.peak_fds,
        peak.threads.saturating_sub(base.threads),
        bounds.peak_threads,
        peak.rss_kib.saturating_sub(base.rss_kib),
        bounds.peak_rss_kib,
        target.accepted.load(Ordering::Relaxed),
        target.endings()
    );
    assert_eq!(panics(), panics_before, "{name}: something panicked");
    assert!(
        peak.fds <= base.fds + bounds.peak_fds,
        "{name}: fds peaked at {}",
        peak.fds
    );
    assert!(
        peak.threads <= base.threads + bounds.peak_threads,
        "{name}: threads peaked at {}",
        peak.threads
    );
    assert!(
        peak.rss_kib <= base.rss_kib + bounds.peak_rss_kib,
        "{name}: rss peaked at {} KiB",
        peak.rss_kib
    );
    r
}

/// Our side of a valid transport handshake from a fresh (unknown) key.
pub fn unknown_key(ep: &Endpoint) -> crust::transport::Result<crust::transport::Stream> {
    crust::transport::Stream::direct_connect(&Identity::generate(), *ep, T)
}

/// A valid hello for `network`.
pub fn hello_bytes(network: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Hello {
        version: CRUST_VERSION,
        network: network.into(),
        inactivity_timeout: Duration::from_secs(30),
        listeners: Vec::new(),
    }
    .encode(&mut out);
    out
}

/// Reads the target's answer to our hello: `Ok(frame)` or the error.
pub fn read_answer(s: &mut crust::transport::Stream) -> std::io::Result<Frame> {
    s.set_read_timeout(Some(T))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match crust::proto::decode_frame(&buf, 1 << 20) {
            Ok(Some((f, _))) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e)),
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A stream past both hellos, from a fresh key.
pub fn hello_done(ep: &Endpoint, network: &str) -> std::io::Result<crust::transport::Stream> {
    let mut s = unknown_key(ep).map_err(std::io::Error::other)?;
    s.write_all(&hello_bytes(network))?;
    match read_answer(&mut s)? {
        Frame::Hello(_) => Ok(s),
        other => Err(std::io::Error::other(format!("answered {other:?}"))),
    }
}

/// Reads until the target ends the stream (EOF or reset); returns how long
/// that took, or `None` if it kept the stream open for `limit`.
pub fn ended_within(s: &mut crust::transport::Stream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let _ = s.set_read_timeout(Some(limit));
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) if t0.elapsed() < limit => continue,
            Ok(_) => return None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
}

/// `n` TCP connections to `to`, each writing `bytes` random bytes, then
/// closed.
pub fn tcp_garbage(to: SocketAddr, n: usize, bytes: usize, rng: &mut Rng) -> usize {
    let mut sent = 0;
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&to, T) else {
            continue;
        };
        let len = 1 + rng.below(bytes as u64) as usize;
        let junk = rng.bytes(len);
        if s.write_all(&junk).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// `n` random datagrams (1 to `max_len` bytes) to `to`; some start with
/// `prefix` so they pass a first magic check.
pub fn udp_garbage(to: SocketAddr, n: usize, max_len: usize, prefix: &[u8], rng: &mut Rng) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        let len = 1 + rng.below(max_len as u64) as usize;
        let mut d = rng.bytes(len);
        if i % 2 == 0 && d.len() >= prefix.len() {
            d[..prefix.len()].copy_from_slice(prefix);
        }
        let _ = sock.send_to(&d, to);
        if i % 64 == 0 {
            // Loopback drops what the receive buffer cannot take; pace the
            // flood a little so the target actually reads it.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
