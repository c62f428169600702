//! An echo between two crust services.
//!
//! With no arguments it is a complete demo that needs nothing set up and
//! sends nothing off `lo`: it starts a second copy of itself as a child
//! process; both build a `crust::Service` with the beacon on loopback and a
//! network name random to this run, find each other by beacon, and the
//! parent connects over TCP and over uTP and echoes messages from several
//! threads at once, checking every one.
//!
//! Across two terminals or machines:
//!
//! ```text
//! echo_peer listen tcp://0.0.0.0:5483,utp://0.0.0.0:5483
//! echo_peer connect tcp://192.0.2.7:5483/?pubkey=...
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use crust::{Config, Endpoint, Protocol, Service, ServiceListener};

/// Threads per protocol in the demo, each with its own stream.
const DEMO_THREADS: usize = 4;
/// Messages each demo thread sends and checks.
const DEMO_MESSAGES: usize = 50;
/// The demo's bound on finding the other process by beacon.
const FIND_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(version, about = "An encrypted echo between two crust services")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve echo: every message on every stream comes back. Each client is
    /// served on its own thread, so a slow or silent one holds up nobody.
    Listen {
        /// Listen endpoints, comma-separated.
        #[arg(default_value = "tcp://0.0.0.0:5483,utp://0.0.0.0:5483")]
        endpoints: String,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Connect, send messages and check the echo.
    Connect {
        /// The endpoint `echo_peer listen` printed.
        endpoint: Endpoint,
        /// How many messages to send.
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// The demo's second process (started by the demo itself).
    #[command(hide = true)]
    DemoChild {
        #[arg(long)]
        network: String,
        #[arg(long)]
        beacon_port: u16,
    },
}

#[derive(clap::Args)]
struct ServiceOpts {
    /// The network name (peers of other networks are refused).
    #[arg(long, default_value = "crust-echo")]
    network: String,
    /// Beacon only on this interface (repeat for more); default: all.
    #[arg(long = "beacon-interface")]
    beacon_interfaces: Vec<String>,
    /// Do not beacon on the LAN.
    #[arg(long)]
    no_beacon: bool,
    /// Do not look for a UPnP gateway.
    #[arg(long)]
    no_igd: bool,
    /// Use a fresh identity instead of the stored one.
    #[arg(long)]
    ephemeral: bool,
}

impl ServiceOpts {
    fn config(&self, listen: &str) -> crust::Result<Config> {
        let mut c = Config::default()
            .listen(listen.split(',').map(str::trim).filter(|s| !s.is_empty()))?
            .network_name(&self.network)
            .beacon_enabled(!self.no_beacon)
            .igd(!self.no_igd)
            .ephemeral_identity(self.ephemeral);
        if !self.beacon_interfaces.is_empty() {
            c = c.beacon_interfaces(self.beacon_interfaces.clone());
        }
        Ok(c)
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let result = match args.command {
        None => demo(),
        Some(Cmd::Listen { endpoints, opts }) => listen(&endpoints, &opts),
        Some(Cmd::Connect {
            endpoint,
            count,
            opts,
        }) => connect(&endpoint, count, &opts),
        Some(Cmd::DemoChild {
            network,
            beacon_port,
        }) => demo_child(&network, beacon_port),
    };
    if let Err(e) = result {
        eprintln!("echo_peer: {e}");
        std::process::exit(1);
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Echoes every message of `stream` until it ends.
fn echo(stream: crust::Stream) {
    let peer = stream.peer_endpoint();
    let mut buf = Vec::new();
    let n = loop {
        match stream.recv_into(&mut buf) {
            Ok(()) => {
                if let Err(e) = stream.send(&buf) {
                    log::info!("{peer}: {e}");
                    break 0;
                }
            }
            Err(crust::Error::Closed(_)) => break 1,
            Err(e) => {
                log::info!("{peer}: {e}");
                break 0;
            }
        }
    };
    log::debug!("{peer} done (clean close: {})", n == 1);
}

/// Accepts for ever, each stream echoed on its own thread.
fn serve(acceptor: ServiceListener) {
    for stream in acceptor.incoming() {
        log::info!(
            "accepted {} over {}",
            stream.peer_public_key(),
            stream.path()
        );
        thread::spawn(move || echo(stream));
    }
}

fn listen(endpoints: &str, opts: &ServiceOpts) -> BoxResult<()> {
    let service = Service::new_from_config(opts.config(endpoints)?)?;
    println!("echo_peer {} listening", service.controller.public_key());
    for a in service.controller.accepting_endpoints() {
        for m in a.known_endpoints() {
            println!("reachable at {}", m.endpoint);
        }
    }
    std::io::stdout().flush()?;
    serve(service.acceptor);
    Ok(())
}

fn connect(endpoint: &Endpoint, count: usize, opts: &ServiceOpts) -> BoxResult<()> {
    let config = opts
        .config("tcp://0.0.0.0:0")?
        .beacon_enabled(false)
        .ephemeral_identity(true);
    let service = Service::new_from_config(config)?;
    println!("dialling {endpoint}");
    let stream = service.controller.connect(endpoint)?;
    println!(
        "connected over {} to {}",
        stream.path(),
        stream.peer_public_key()
    );
    for i in 0..count {
        let msg = format!("message {i} from {}", service.controller.public_key());
        let t = Instant::now();
        stream.send(msg.as_bytes())?;
        let back = stream.recv()?;
        if back != msg.as_bytes() {
            return Err(format!("message {i} came back different").into());
        }
        println!(
            "sent and got back {} bytes in {:?}",
            back.len(),
            t.elapsed()
        );
    }
    stream.close()?;
    Ok(())
}

fn demo_config(network: &str, beacon_port: u16) -> Config {
    Config::loopback()
        .network_name(network)
        .beacon_port(beacon_port)
        .beacon_period(Duration::from_millis(200))
}

/// The child: serves echo until its stdin closes (the parent ended).
fn demo_child(network: &str, beacon_port: u16) -> BoxResult<()> {
    let service = Service::new_from_config(demo_config(network, beacon_port))?;
    println!("child {}", service.controller.public_key());
    std::io::stdout().flush()?;
    let acceptor = service.acceptor;
    thread::spawn(move || serve(acceptor));
    // The parent closes our stdin when it is done (or dies).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line)? > 0 {
        line.clear();
    }
    Ok(())
}

/// Reaps the child in every case: on drop, closes its stdin, waits a
/// little, then kills it.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn demo() -> BoxResult<()> {
    let nonce: u64 = rand_u64();
    let network = format!("echo-demo-{nonce:016x}");
    let beacon_port = 40_000 + (nonce % 20_000) as u16;
    println!("1. network {network:?}, beacon on lo port {beacon_port} (nothing leaves loopback)");

    let service = Service::new_from_config(demo_config(&network, beacon_port))?;
    println!("2. this process: key {}", service.controller.public_key());
    for a in service.controller.accepting_endpoints() {
        for m in a.known_endpoints() {
            println!("   reachable at {}", m.endpoint);
        }
    }

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "demo-child",
            "--network",
            &network,
            "--beacon-port",
            &beacon_port.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let guard = ChildGuard(Some(child));
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let child_key = first
        .trim()
        .strip_prefix("child ")
        .ok_or_else(|| format!("the child said {first:?}"))?
        .to_owned();
    println!("3. started a second process: key {child_key}");

    // Find the child's TCP and uTP endpoints by beacon.
    let mut receiver = service.beacon_receiver;
    let (mut tcp, mut utp) = (None, None);
    let deadline = Instant::now() + FIND_TIMEOUT;
    while tcp.is_none() || utp.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let ep = receiver
            .next_timeout(left)
            .map_err(|e| format!("the child's beacon was not heard: {e}"))?;
        if ep.public_key.to_string() != child_key {
            continue;
        }
        match ep.protocol {
            Protocol::Tcp if tcp.is_none() => tcp = Some(ep),
            Protocol::Utp if utp.is_none() => utp = Some(ep),
            _ => {}
        }
    }
    let found = [tcp.ok_or("no tcp")?, utp.ok_or("no utp")?];
    for ep in &found {
        println!("4. heard by beacon: {ep}");
    }

    let controller = service.controller;
    let echoed = Arc::new(AtomicUsize::new(0));
    for (step, ep) in found.iter().enumerate() {
        println!("{}. dialling {ep}", 5 + 2 * step);
        let mut threads = Vec::new();
        for t in 0..DEMO_THREADS {
            let controller = controller.clone();
            let ep = *ep;
            let echoed = echoed.clone();
            threads.push(thread::spawn(
                move || -> Result<(Duration, String), String> {
                    let stream = controller.connect(&ep).map_err(|e| e.to_string())?;
                    let path = stream.path().to_string();
                    let start = Instant::now();
                    for i in 0..DEMO_MESSAGES {
                        let msg = format!("thread {t} message {i} over {path}");
                        stream.send(msg.as_bytes()).map_err(|e| e.to_string())?;
                        let back = stream.recv().map_err(|e| e.to_string())?;
                        if back != msg.as_bytes() {
                            return Err(format!("thread {t}: message {i} came back different"));
                        }
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    let per = start.elapsed() / DEMO_MESSAGES as u32;
                    stream.close().map_err(|e| e.to_string())?;
                    Ok((per, path))
                },
            ));
        }
        for (t, th) in threads.into_iter().enumerate() {
            let (per, path) = th.join().map_err(|_| "a demo thread panicked")??;
            println!(
                "   thread {t}: connected {path}, {DEMO_MESSAGES} messages sent and got back, \
                 {per:?} per round trip"
            );
        }
        println!(
            "{}. {ep} echoed from {DEMO_THREADS} threads at once",
            6 + 2 * step
        );
    }
    drop(guard);
    let total = echoed.load(Ordering::Relaxed);
    let want = 2 * DEMO_THREADS * DEMO_MESSAGES;
    if total != want {
        return Err(format!("only {total} of {want} echoes matched").into());
    }
    println!("verified: {total} of {want} messages echoed intact over tcp and utp");
    Ok(())
}

/// A random number for this run (no need for a crypto RNG here).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
