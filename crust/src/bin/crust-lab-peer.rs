//! `crust-lab-peer`: one crust service driven by lines over stdin and
//! stdout. A diagnostic tool, and the helper process of crust's
//! network-lab tests (`crust/tests/lab_*.rs`), which run it in a network
//! namespace with `ip netns exec`.
//!
//! ```text
//! crust-lab-peer [--listen EP]... [--network NAME] [--beacon-port P]
//!                [--beacon-period-ms N] [--poll-ms N] [--connect-timeout-ms N]
//!                [--inactivity-ms N] [--no-beacon]
//! ```
//!
//! It beacons on every interface of its network namespace (the lab's
//! interfaces are all there is): do not run it like that outside one.
//!
//! Output on stdout, one line each:
//! - `endpoints <endpoint>...` once at start;
//! - `changed <endpoint>...` for each network-change event
//!   (`ServiceController::endpoints_changed`);
//! - `accepted <local address> <peer endpoint>` per accepted stream, and
//!   `connected <local address> <peer endpoint>` after `connect`;
//! - `ended <accepted|dialled> <kind> <error>` when a stream ends, where kind
//!   is `address-lost`, `peer-lost`, `closed` or `other`;
//! - `bootstrapped <peer endpoint> <tries>` or `bootstrap-failed <error>`.
//!
//! Commands on stdin: `connect <endpoint>`; `bootstrap <limit ms> <endpoint>`
//! (bootstraps until a stream to that endpoint's key is up, waiting for a
//! beacon between tries, within the limit); `quit`. End of input quits too.
//! Every stream echoes what it receives.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::{Config, Endpoint, Error, Service, Stream};

fn say(line: String) {
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::AddressLost { .. } => "address-lost",
        Error::PeerLost { .. } => "peer-lost",
        Error::Closed(_) => "closed",
        _ => "other",
    }
}

fn list(eps: &[Endpoint]) -> String {
    eps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Echoes on `s` until it ends, then says how.
fn serve(role: &'static str, s: Stream) {
    std::thread::spawn(move || {
        loop {
            match s.recv() {
                Ok(m) => {
                    if let Err(e) = s.send(&m) {
                        say(format!("ended {role} {} {e}", kind(&e)));
                        return;
                    }
                }
                Err(e) => {
                    say(format!("ended {role} {} {e}", kind(&e)));
                    return;
                }
            }
        }
    });
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("crust-lab-peer: {msg}");
    eprintln!(
        "usage: crust-lab-peer [--listen EP]... [--network NAME] [--beacon-port P] \
         [--beacon-period-ms N] [--poll-ms N] [--connect-timeout-ms N] [--inactivity-ms N] \
         [--no-beacon]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut config = Config::default()
        .ephemeral_identity(true)
        .igd(false)
        .network_name("crust-lab");
    let mut listen: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    let ms = |v: Option<String>| -> Option<Duration> {
        v.and_then(|v| v.parse().ok()).map(Duration::from_millis)
    };
    while let Some(a) = args.next() {
        config = match a.as_str() {
            "--listen" => match args.next() {
                Some(ep) => {
                    listen.push(ep);
                    config
                }
                None => return usage("--listen needs an endpoint"),
            },
            "--network" => match args.next() {
                Some(n) => config.network_name(n),
                None => return usage("--network needs a name"),
            },
            "--beacon-port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => config.beacon_port(p),
                None => return usage("--beacon-port needs a port"),
            },
            "--beacon-period-ms" => match ms(args.next()) {
                Some(d) => config.beacon_period(d),
                None => return usage("--beacon-period-ms needs milliseconds"),
            },
            "--poll-ms" => match ms(args.next()) {
                Some(d) => config.network_poll_interval(d),
                None => return usage("--poll-ms needs milliseconds"),
            },
            "--connect-timeout-ms" => match ms(args.next()) {
                Some(d) => config.connect_timeout(d),
                None => return usage("--connect-timeout-ms needs milliseconds"),
            },
            "--inactivity-ms" => match ms(args.next()) {
                Some(d) => config.heartbeat_period(d / 4).inactivity_timeout(d),
                None => return usage("--inactivity-ms needs milliseconds"),
            },
            "--no-beacon" => config.beacon_enabled(false),
            other => return usage(&format!("unknown argument {other:?}")),
        };
    }
    if !listen.is_empty() {
        config = match config.listen(&listen) {
            Ok(c) => c,
            Err(e) => return usage(&e.to_string()),
        };
    }
    let service = match Service::new_from_config(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crust-lab-peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Service {
        acceptor,
        beacon_state,
        beacon_receiver,
        controller,
    } = service;
    say(format!("endpoints {}", list(&controller.endpoints())));
    let changes = controller.endpoints_changed();
    std::thread::spawn(move || {
        for c in changes {
            say(format!("changed {}", list(&c.endpoints)));
        }
    });
    std::thread::spawn(move || {
        for s in acceptor.incoming() {
            say(format!("accepted {} {}", s.local_addr(), s.peer_endpoint()));
            serve("accepted", s);
        }
    });
    let beacons = Arc::new(Mutex::new(beacon_receiver));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("connect"), Some(ep), None) => match ep.parse::<Endpoint>() {
                Ok(ep) => match controller.connect(&ep) {
                    Ok(s) => {
                        say(format!(
                            "connected {} {}",
                            s.local_addr(),
                            s.peer_endpoint()
                        ));
                        serve("dialled", s);
                    }
                    Err(e) => say(format!("connect-failed {e}")),
                },
                Err(e) => say(format!("connect-failed {e}")),
            },
            (Some("bootstrap"), Some(limit), Some(ep)) => {
                let (Ok(limit), Ok(ep)) = (limit.parse::<u64>(), ep.parse::<Endpoint>()) else {
                    say("bootstrap-failed bad arguments".into());
                    continue;
                };
                let deadline = Instant::now() + Duration::from_millis(limit);
                let mut tries = 0;
                let mut last = String::from("no try");
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        say(format!("bootstrap-failed after {tries} tries: {last}"));
                        break;
                    }
                    tries += 1;
                    match controller.bootstrap_timeout(left) {
                        Ok(s) if s.peer_public_key() == ep.public_key => {
                            say(format!("bootstrapped {} {tries}", s.peer_endpoint()));
                            serve("dialled", s);
                            break;
                        }
                        Ok(s) => {
                            last = format!("bootstrapped to another peer, {}", s.peer_endpoint())
                        }
                        Err(e) => last = e.to_string(),
                    }
                    // Wait for news (a beacon) rather than spin.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        let _ = lock(&beacons).next_timeout(left);
                    }
                }
            }
            (Some("quit"), None, None) => break,
            _ => say(format!("unknown-command {line}")),
        }
    }
    drop(beacon_state);
    ExitCode::SUCCESS
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
