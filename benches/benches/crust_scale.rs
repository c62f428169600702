//! `cargo bench -p benches --bench crust_scale`
//!
//! Many idle and busy crust connections between two processes on loopback
//! (the bench re-executes itself as its two peers, a listener and a
//! dialler, so each holds one end of every connection and the open-files
//! limit applies per end). Every phase runs in a fresh pair of processes:
//!
//! 1. the baseline: `CRUST_SCALE_CONNS` (default 10,000) plain tokio
//!    `TcpStream`s, held and idle;
//! 2. TCP: as many `crust::aio` streams over TCP, idle and heartbeating
//!    (10 s, the default), then busy (each one 64-byte message a second for
//!    `CRUST_SCALE_BUSY_SECS`, default 30, echoed back);
//! 3. uTP: `CRUST_SCALE_UTP_CONNS` (default a tenth: 1,000) `crust::aio`
//!    streams over uTP, idle then busy.
//!
//! Figures (`name: value unit`, `[listener]`/`[dialer]` says whose):
//! `threads_1conn`, `threads_10k` and `ratio threads_10k/threads_1conn`
//! (target 1.0); `rss_per_idle_tcp_conn_end` (the growth of VmRSS from one
//! connection to all of them, after a settle of two heartbeat periods,
//! divided by the connections; target <= 8 KiB) beside the plain tokio
//! baseline; `heartbeat_cpu_10k` (utime + stime over two heartbeat periods,
//! % of one core; target <= 2 %); `open_rate_10k`; `msgs_per_s`,
//! `rtt_median`, `rtt_p99` for the busy phase; and the same for uTP. A
//! counting global allocator in each peer gives the heap profile behind the
//! memory figure (live heap bytes and allocations per connection, by size).
//!
//! Quick mode: `CRUST_SCALE_CONNS=1000 CRUST_SCALE_BUSY_SECS=5
//! CRUST_SCALE_SETTLE_SECS=3 CRUST_SCALE_CPU_SECS=3`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::aio::{Service, Stream};
use crust::{Config, Endpoint};

// ---------------------------------------------------------------------------
// The heap profile: a counting allocator over the system allocator.

struct Counting;

const BUCKETS: usize = 40;
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicI64 = AtomicI64::new(0);
/// Live allocations by size class: bucket `b` holds sizes in
/// `(2^(b-1), 2^b]`.
static BY_SIZE: [AtomicI64; BUCKETS] = [ZERO; BUCKETS];

fn bucket(size: usize) -> usize {
    ((usize::BITS - size.max(1).saturating_sub(1).leading_zeros()) as usize).min(BUCKETS - 1)
}

fn count(size: usize, sign: i64) {
    LIVE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(sign, Ordering::Relaxed);
    BY_SIZE[bucket(size)].fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc`, same layout.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc_zeroed`, same layout.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from this allocator with layout `l`.
        unsafe { System.dealloc(p, l) };
        count(l.size(), -1);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: `p` came from this allocator with layout `l`.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(l.size(), -1);
            count(new, 1);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------
// Process figures.

fn status_field(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields count from after its ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is f[0], so utime (14) is f[11], stime f[12].
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn stats_line() -> String {
    let buckets: Vec<String> = BY_SIZE
        .iter()
        .map(|b| b.load(Ordering::Relaxed).to_string())
        .collect();
    format!(
        "stats threads={} rss_kib={} ticks={} heap_bytes={} heap_allocs={} by_size={}",
        status_field("Threads:"),
        status_field("VmRSS:"),
        cpu_ticks(),
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
        buckets.join(",")
    )
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns both.
fn raise_nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    (r.rlim_cur, r.rlim_max)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// The peers: one process each, driven by line commands on stdin.

const MSG: usize = 64;
/// Connects in flight at once while opening.
const OPEN_CONCURRENCY: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn config(kind: &str) -> Config {
    Config::loopback()
        .network_name("crust-scale")
        .beacon_enabled(false)
        .listen([format!("{kind}://127.0.0.1:0")])
        .expect("a valid listen endpoint")
}

fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("the orchestrator reads our stdout");
    out.flush().expect("the orchestrator reads our stdout");
}

/// What a listener holds.
#[derive(Default)]
struct Held {
    crust: Mutex<Vec<Stream>>,
    plain: Mutex<Vec<tokio::net::TcpStream>>,
    count: AtomicUsize,
}

fn run_peer(role: &str) {
    raise_nofile();
    let kind = std::env::var("CRUST_SCALE_KIND").expect("CRUST_SCALE_KIND");
    let rt = crust_runtime::handle();
    let held = Arc::new(Held::default());
    // Keep the service (or listener) alive for the whole process.
    let mut service: Option<Service> = None;
    let mut target: Option<String> = std::env::var("CRUST_SCALE_TARGET").ok();
    let mut dialed_crust: Vec<Stream> = Vec::new();
    let mut dialed_plain: Vec<tokio::net::TcpStream> = Vec::new();
    let _plain_listener_task;
    // A listener's service parts (its acceptor moves to the accept task).
    let mut parts = None;
    match (role, kind.as_str()) {
        ("listen", "plain") => {
            let l = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let addr = l.local_addr().expect("local addr");
            let h = held.clone();
            _plain_listener_task = Some(rt.spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    h.plain.lock().unwrap().push(s);
                    h.count.fetch_add(1, Ordering::Relaxed);
                }
            }));
            reply(&format!("ready {addr}"));
        }
        ("listen", _) => {
            let s = rt
                .block_on(Service::new_from_config(config(&kind)))
                .expect("service");
            let ep = s.controller.endpoints()[0];
            let Service {
                acceptor,
                beacon_state,
                beacon_receiver,
                controller,
            } = s;
            parts = Some((beacon_state, beacon_receiver, controller));
            let h = held.clone();
            _plain_listener_task = Some(rt.spawn(async move {
                while let Ok(s) = acceptor.accept().await {
                    h.crust.lock().unwrap().push(s);
                    h.count.fetch_add(1, Ordering::Relaxed);
                }
            }));
            reply(&format!("ready {ep}"));
        }
        _ => {
            _plain_listener_task = None;
            if kind != "plain" {
                service = Some(
                    rt.block_on(Service::new_from_config(config(&kind)))
                        .expect("service"),
                );
            }
            reply("ready -");
        }
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("stats") => reply(&stats_line()),
            Some("wait") => {
                let n: usize = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let deadline = Instant::now() + Duration::from_secs(120);
                while held.count.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                reply(&format!("held {}", held.count.load(Ordering::Relaxed)));
            }
            Some("open") => {
                let n: usize = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let t = target.clone().expect("a dialler has a target");
                let t0 = Instant::now();
                let failed = if kind == "plain" {
                    let (got, failed) = rt.block_on(open_plain(&t, n));
                    dialed_plain.extend(got);
                    failed
                } else {
                    let ep: Endpoint = t.parse().expect("an endpoint");
                    let ctl = service.as_ref().expect("a service").controller.clone();
                    let (got, failed) = rt.block_on(open_crust(ctl, ep, n));
                    dialed_crust.extend(got);
                    failed
                };
                reply(&format!(
                    "opened {} {} {failed}",
                    n - failed,
                    t0.elapsed().as_secs_f64()
                ));
            }
            Some("heartbeat") => {
                // Plain streams only: the heartbeat baseline.
                let ms: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);
                let period = Duration::from_millis(ms);
                let streams = if role == "listen" {
                    std::mem::take(&mut *held.plain.lock().unwrap())
                } else {
                    std::mem::take(&mut dialed_plain)
                };
                let n = streams.len().max(1) as u32;
                for (i, s) in streams.into_iter().enumerate() {
                    let first = period * i as u32 / n;
                    rt.spawn(plain_heartbeat(s, period, first));
                }
                reply("heartbeating");
            }
            Some("echo") => {
                // The listener answers every message from now on.
                let streams = std::mem::take(&mut *held.crust.lock().unwrap());
                for mut s in streams {
                    rt.spawn(async move {
                        while let Ok(m) = s.recv().await {
                            if s.send(&m).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                reply("echoing");
            }
            Some("busy") => {
                let secs: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(30);
                let streams = std::mem::take(&mut dialed_crust);
                let (back, line) = rt.block_on(busy(streams, Duration::from_secs(secs)));
                dialed_crust = back;
                reply(&line);
            }
            Some("quit") | None => break,
            Some(other) => reply(&format!("error unknown command {other}")),
        }
    }
    target.take();
    drop(parts);
    drop(dialed_crust);
    drop(dialed_plain);
    // Exit without tearing 10,000 streams down one by one.
    std::process::exit(0);
}

async fn open_plain(addr: &str, n: usize) -> (Vec<tokio::net::TcpStream>, usize) {
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while started < n || !set.is_empty() {
        while started < n && set.len() < OPEN_CONCURRENCY {
            set.spawn(tokio::net::TcpStream::connect(addr));
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => out.push(s),
            Some(_) => failed += 1,
            None => {}
        }
    }
    (out, failed)
}

async fn open_crust(
    ctl: crust::aio::ServiceController,
    ep: Endpoint,
    n: usize,
) -> (Vec<Stream>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    let mut first_error = None;
    while started < n || !set.is_empty() {
        while started < n && set.len() < OPEN_CONCURRENCY {
            let ctl = ctl.clone();
            set.spawn(async move {
                // A busy listener (its accept queue full) says so: retry.
                let mut last = None;
                for _ in 0..5 {
                    match ctl.connect_timeout(&ep, CONNECT_TIMEOUT).await {
                        Ok(s) => return Ok(s),
                        Err(e) => {
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Err(last.expect("five attempts failed"))
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => out.push(s),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Some(Err(_)) => failed += 1,
            None => {}
        }
    }
    if let Some(e) = first_error {
        eprintln!("crust_scale: {failed} connects failed, the first: {e}");
    }
    (out, failed)
}

/// Each stream sends one 64-byte message a second (their starts spread
/// over the first second) for `secs` and waits for its echo.
async fn busy(streams: Vec<Stream>, secs: Duration) -> (Vec<Stream>, String) {
    let n = streams.len().max(1);
    let base = Instant::now();
    let start = base + Duration::from_millis(100);
    let mut set = tokio::task::JoinSet::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        let offset = Duration::from_secs(1) * i as u32 / n as u32;
        set.spawn(async move {
            let mut rtts: Vec<u32> = Vec::with_capacity(secs.as_secs() as usize + 1);
            let mut failures = 0u32;
            let mut tick =
                tokio::time::interval_at((start + offset).into(), Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = start + secs;
            loop {
                tick.tick().await;
                let now = Instant::now();
                if now >= end + offset {
                    break;
                }
                let mut msg = [0u8; MSG];
                let stamp = now.duration_since(base).as_nanos() as u64;
                msg[..8].copy_from_slice(&stamp.to_be_bytes());
                let ok = s.send(&msg).await.is_ok()
                    && matches!(
                        tokio::time::timeout(Duration::from_secs(10), s.recv()).await,
                        Ok(Ok(ref m)) if m.len() == MSG && m[..8] == msg[..8]
                    );
                if ok {
                    rtts.push(now.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    failures += 1;
                }
            }
            (s, rtts, failures)
        });
    }
    let mut back = Vec::with_capacity(n);
    let mut all: Vec<u32> = Vec::new();
    let mut failures = 0u32;
    while let Some(r) = set.join_next().await {
        if let Ok((s, rtts, f)) = r {
            back.push(s);
            all.extend(rtts);
            failures += f;
        }
    }
    all.sort_unstable();
    let q = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize]
        }
    };
    let line = format!(
        "busy msgs={} secs={} p50_us={} p99_us={} max_us={} failures={failures}",
        all.len(),
        secs.as_secs_f64(),
        q(0.5),
        q(0.99),
        all.last().copied().unwrap_or(0)
    );
    (back, line)
}

// ---------------------------------------------------------------------------
// The orchestrator.

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(name: &'static str, role: &str, kind: &str, target: Option<&str>) -> (Peer, String) {
        let exe = std::env::current_exe().expect("our own path");
        let mut cmd = Command::new(exe);
        cmd.env("CRUST_SCALE_ROLE", role)
            .env("CRUST_SCALE_KIND", kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(t) = target {
            cmd.env("CRUST_SCALE_TARGET", t);
        }
        let mut child = cmd.spawn().expect("re-executing the bench as a peer");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut p = Peer {
            child,
            stdin,
            stdout,
        };
        let ready = p.read_line();
        let arg = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{name} did not start: {ready:?}"))
            .to_owned();
        (p, arg)
    }

    fn read_line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("reading a peer");
        s.trim().to_owned()
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("writing to a peer");
        self.stdin.flush().expect("writing to a peer");
        self.read_line()
    }

    fn stats(&mut self) -> Stats {
        Stats::parse(&self.cmd("stats"))
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    threads: u64,
    rss_kib: u64,
    ticks: u64,
    heap_bytes: i64,
    heap_allocs: i64,
    by_size: Vec<i64>,
}

impl Stats {
    fn parse(line: &str) -> Stats {
        let kv: HashMap<&str, &str> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('='))
            .collect();
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        Stats {
            threads: num("threads") as u64,
            rss_kib: num("rss_kib") as u64,
            ticks: num("ticks") as u64,
            heap_bytes: num("heap_bytes"),
            heap_allocs: num("heap_allocs"),
            by_size: kv
                .get("by_size")
                .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default(),
        }
    }
}

fn print(name: &str, value: f64, unit: &str, whose: &str) {
    if value.abs() < 10.0 {
        println!("{name}: {value:.3} {unit} [{whose}]");
    } else {
        println!("{name}: {value:.1} {unit} [{whose}]");
    }
}

/// `ratio NAME: X (target <= T | >= T, meets|misses)`.
fn ratio_line(name: &str, value: f64, target: f64, at_most: bool, whose: &str) {
    let ok = if at_most {
        value <= target + 1e-9
    } else {
        value >= target - 1e-9
    };
    let op = if at_most { "<=" } else { ">=" };
    let verdict = if ok { "meets" } else { "misses" };
    println!("ratio {name}: {value:.3} [{whose}] (target {op} {target}, {verdict})");
}

/// The per-connection growth between `one` and `all` (`n` connections).
struct Growth {
    rss_kib: f64,
    heap_bytes: f64,
    heap_allocs: f64,
    by_size: Vec<f64>,
}

fn growth(one: &Stats, all: &Stats, n: usize) -> Growth {
    let d = (n.saturating_sub(1)).max(1) as f64;
    Growth {
        rss_kib: (all.rss_kib as f64 - one.rss_kib as f64) / d,
        heap_bytes: (all.heap_bytes - one.heap_bytes) as f64 / d,
        heap_allocs: (all.heap_allocs - one.heap_allocs) as f64 / d,
        by_size: all
            .by_size
            .iter()
            .zip(one.by_size.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| (a - b) as f64 / d)
            .collect(),
    }
}

fn size_class(b: usize) -> String {
    let hi = 1u64 << b;
    if hi >= 1024 {
        format!("<={}KiB", hi / 1024)
    } else {
        format!("<={hi}B")
    }
}

fn print_heap_profile(what: &str, g: &Growth, whose: &str) {
    let mut classes: Vec<(usize, f64)> = g
        .by_size
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| c.abs() >= 0.05)
        .collect();
    // Largest first by the bytes they can hold.
    classes.sort_by(|a, b| {
        let w = |(i, c): &(usize, f64)| c * (1u64 << i) as f64;
        w(b).total_cmp(&w(a))
    });
    let top: Vec<String> = classes
        .iter()
        .take(8)
        .map(|(b, c)| format!("{}:{c:.2}", size_class(*b)))
        .collect();
    println!(
        "heap_per_{what}: {:.0} B in {:.1} allocations [{whose}] (live per connection by size class: {})",
        g.heap_bytes,
        g.heap_allocs,
        top.join(" ")
    );
}

/// One phase's idle figures, from both ends.
struct Idle {
    rss: [f64; 2],
    /// CPU at rest with heartbeats (% of one core), per peer.
    cpu: [f64; 2],
}

/// A plain stream's heartbeat: 23 bytes every `period` (the first after
/// `first`), and whatever the other end sends read and dropped.
async fn plain_heartbeat(s: tokio::net::TcpStream, period: Duration, first: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = s.into_split();
    let mut buf = [0u8; 64];
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::select! {
            got = r.read(&mut buf) => match got {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(next) => {
                if w.write_all(&[0u8; 23]).await.is_err() {
                    return;
                }
                next += period;
            }
        }
    }
}

/// Opens `n` connections of `kind` between a fresh listener and dialler,
/// measures them idle, then (for crust) busy.
fn phase(kind: &str, n: usize, label: &str, opts: &Opts) -> Idle {
    let names = ["listener", "dialer"];
    let (mut listener, target) = Peer::spawn("listener", "listen", kind, None);
    let (mut dialer, _) = Peer::spawn("dialer", "dial", kind, Some(&target));
    let crust = kind != "plain";
    // One connection: the base line of every figure.
    let opened = dialer.cmd("open 1");
    assert!(opened.starts_with("opened 1 "), "first connect: {opened}");
    listener.cmd("wait 1");
    std::thread::sleep(Duration::from_millis(300));
    let one = [listener.stats(), dialer.stats()];
    let got = dialer.cmd(&format!("open {}", n - 1));
    let parts: Vec<&str> = got.split_whitespace().collect();
    let ok: usize = parts.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let secs: f64 = parts.get(2).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let failed: usize = parts.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
    let total = ok + 1;
    let held = listener.cmd(&format!("wait {total}"));
    if failed > 0 {
        println!("# {label}: {failed} of {} connects failed", n - 1);
    }
    let rate = ok as f64 / secs.max(1e-9);
    // Settle: all handshakes done, two heartbeat periods pass.
    let settle = if crust {
        opts.settle
    } else {
        opts.settle.min(Duration::from_secs(3))
    };
    std::thread::sleep(settle);
    let at = [listener.stats(), dialer.stats()];
    let mut idle = Idle {
        rss: [0.0; 2],
        cpu: [0.0; 2],
    };
    let (conns_name, what) = match kind {
        "plain" => ("10k", "plain_tokio_tcp_conn_end".to_owned()),
        "tcp" => ("10k", "idle_tcp_conn_end".to_owned()),
        _ => ("1k", "idle_utp_conn_end".to_owned()),
    };
    println!(
        "# {label}: {total} connections ({held} on the listener), opened in {secs:.2} s, settled {:.0} s",
        settle.as_secs_f64()
    );
    for (i, whose) in names.iter().enumerate() {
        let g = growth(&one[i], &at[i], total);
        idle.rss[i] = g.rss_kib;
        if crust {
            let t_name = if kind == "utp" {
                "threads_utp"
            } else {
                "threads"
            };
            print(
                &format!("{t_name}_1conn"),
                one[i].threads as f64,
                "threads",
                whose,
            );
            print(
                &format!("{t_name}_{conns_name}"),
                at[i].threads as f64,
                "threads",
                whose,
            );
            ratio_line(
                &format!("{t_name}_{conns_name}/{t_name}_1conn"),
                at[i].threads as f64 / one[i].threads.max(1) as f64,
                1.0,
                true,
                whose,
            );
        }
        print(&format!("rss_per_{what}"), g.rss_kib, "KiB", whose);
        print_heap_profile(what.as_str(), &g, whose);
    }
    if crust {
        print(
            &format!("open_rate_{}", if kind == "utp" { "utp_1k" } else { "10k" }),
            rate,
            "conn/s",
            "dialer",
        );
        // CPU at rest: two heartbeat periods by default.
        let t0 = [listener.stats(), dialer.stats()];
        let w0 = Instant::now();
        std::thread::sleep(opts.cpu_window);
        let t1 = [listener.stats(), dialer.stats()];
        let window = w0.elapsed().as_secs_f64();
        let name = if kind == "utp" {
            "heartbeat_cpu_utp_1k"
        } else {
            "heartbeat_cpu_10k"
        };
        for (i, whose) in names.iter().enumerate() {
            let pct = (t1[i].ticks - t0[i].ticks) as f64 / opts.clk_tck / window * 100.0;
            idle.cpu[i] = pct;
            print(name, pct, "%", whose);
            ratio_line(&format!("{name}/2%"), pct / 2.0, 1.0, true, whose);
        }
        // Busy.
        listener.cmd("echo");
        let t0 = [listener.stats(), dialer.stats()];
        let b = dialer.cmd(&format!("busy {}", opts.busy_secs));
        let t1 = [listener.stats(), dialer.stats()];
        let kv: HashMap<&str, f64> = b
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
        let p = if kind == "utp" { "utp_" } else { "" };
        let busy_secs = get("secs").max(1e-9);
        println!(
            "# {label} busy: {total} connections, one {MSG}-byte message a second each for {busy_secs:.0} s, echoed"
        );
        print(
            &format!("{p}msgs_per_s"),
            get("msgs") / busy_secs,
            "msg/s",
            "dialer",
        );
        ratio_line(
            &format!("{p}msgs_per_s/offered"),
            get("msgs") / busy_secs / total as f64,
            0.95,
            false,
            "dialer",
        );
        print(
            &format!("{p}rtt_median"),
            get("p50_us") / 1000.0,
            "ms",
            "dialer",
        );
        print(
            &format!("{p}rtt_p99"),
            get("p99_us") / 1000.0,
            "ms",
            "dialer",
        );
        print(
            &format!("{p}rtt_max"),
            get("max_us") / 1000.0,
            "ms",
            "dialer",
        );
        if get("failures") > 0.0 {
            println!("# {label} busy: {} round trips failed", get("failures"));
        }
        for (i, whose) in names.iter().enumerate() {
            let pct = (t1[i].ticks - t0[i].ticks) as f64 / opts.clk_tck / busy_secs * 100.0;
            print(&format!("{p}busy_cpu"), pct, "%", whose);
            print(
                &format!("{p}busy_threads"),
                t1[i].threads as f64,
                "threads",
                whose,
            );
            let g = growth(&one[i], &t1[i], total);
            print(
                &format!("{p}busy_rss_per_conn_end"),
                g.rss_kib,
                "KiB",
                whose,
            );
        }
    }
    if !crust {
        // The same heartbeat traffic over the plain streams: a 23-byte write
        // (a crust heartbeat record's size) every heartbeat period from each
        // end, read by the other, the first ones spread over the period as
        // crust's are by the opening.
        let period = Config::default().heartbeat_period.as_millis();
        listener.cmd(&format!("heartbeat {period}"));
        dialer.cmd(&format!("heartbeat {period}"));
        let t0 = [listener.stats(), dialer.stats()];
        let w0 = Instant::now();
        std::thread::sleep(opts.cpu_window);
        let t1 = [listener.stats(), dialer.stats()];
        let window = w0.elapsed().as_secs_f64();
        for (i, whose) in names.iter().enumerate() {
            let pct = (t1[i].ticks - t0[i].ticks) as f64 / opts.clk_tck / window * 100.0;
            idle.cpu[i] = pct;
            print("heartbeat_cpu_plain_tokio_10k", pct, "%", whose);
        }
    }
    listener.quit();
    dialer.quit();
    idle
}

struct Opts {
    settle: Duration,
    cpu_window: Duration,
    busy_secs: u64,
    clk_tck: f64,
}

fn main() {
    if let Ok(role) = std::env::var("CRUST_SCALE_ROLE") {
        return run_peer(&role);
    }
    // `cargo bench` passes `--bench`; any other argument is a filter we do
    // not support: run everything.
    let (soft, hard) = raise_nofile();
    let mut conns = env_num("CRUST_SCALE_CONNS", 10_000) as usize;
    let mut utp_conns = env_num("CRUST_SCALE_UTP_CONNS", (conns / 10).max(1) as u64) as usize;
    // Each peer holds one end of every connection, plus its own files.
    let reserve = 256;
    println!(
        "# RLIMIT_NOFILE: soft {soft}, hard {hard} (each peer raises its soft limit to the hard one)"
    );
    if (soft as usize) < conns + reserve {
        let fit = (soft as usize).saturating_sub(reserve).max(2);
        println!(
            "# the open-files limit does not fit {conns} connections per process: scaled down to {fit}"
        );
        conns = fit;
        utp_conns = utp_conns.min(fit);
    }
    let hb = Config::default().heartbeat_period;
    let opts = Opts {
        settle: Duration::from_secs(env_num("CRUST_SCALE_SETTLE_SECS", 2 * hb.as_secs())),
        cpu_window: Duration::from_secs(env_num("CRUST_SCALE_CPU_SECS", 2 * hb.as_secs())),
        busy_secs: env_num("CRUST_SCALE_BUSY_SECS", 30),
        clk_tck: clock_ticks_per_s(),
    };
    println!(
        "# crust_scale: {conns} TCP and {utp_conns} uTP connections, heartbeat {:?}, settle {:?}, CPU window {:?}, busy {} s",
        hb, opts.settle, opts.cpu_window, opts.busy_secs
    );
    let base = phase("plain", conns, "plain tokio TcpStream baseline", &opts);
    let tcp = phase("tcp", conns, "crust::aio over TCP", &opts);
    for (i, whose) in ["listener", "dialer"].iter().enumerate() {
        print(
            "rss_per_plain_tokio_tcp_conn_end",
            base.rss[i],
            "KiB",
            whose,
        );
        ratio_line(
            "rss_per_idle_tcp_conn_end/8KiB",
            tcp.rss[i] / 8.0,
            1.0,
            true,
            whose,
        );
        println!(
            "rss_per_idle_tcp_conn_end minus baseline: {:.2} KiB [{whose}]",
            tcp.rss[i] - base.rss[i]
        );
    }
    for (i, whose) in ["listener", "dialer"].iter().enumerate() {
        ratio_line(
            "heartbeat_cpu_10k/heartbeat_cpu_plain_tokio_10k",
            tcp.cpu[i] / base.cpu[i].max(1e-9),
            2.0,
            true,
            whose,
        );
    }
    let utp = phase("utp", utp_conns, "crust::aio over uTP", &opts);
    for (i, whose) in ["listener", "dialer"].iter().enumerate() {
        ratio_line(
            "rss_per_idle_utp_conn_end/8KiB",
            utp.rss[i] / 8.0,
            1.0,
            true,
            whose,
        );
    }
}
