//! `lan_peers`: find other copies of this program on the local network.
//!
//! Run it in two terminals (or on two machines on one LAN); each prints the
//! other's address and data as they appear:
//!
//! ```text
//! cargo run -p crust-examples --bin lan_peers -- --data "I am A"
//! cargo run -p crust-examples --bin lan_peers -- --data "I am B"
//! ```
//!
//! Options:
//! - `--interface NAME` (repeatable): use only these interfaces, e.g.
//!   `--interface lo` to stay on this machine. Without it, every interface:
//!   the program broadcasts on your LAN, which is the point when you run it
//!   yourself, but nothing automated may run it that way.
//! - `--port P` (default 5483), `--data TEXT` (default: host name and process
//!   id), `--period-ms N` (default 1000), `--no-ipv6`.
//!
//! `RUST_LOG=info` shows which interfaces the beacon uses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn usage(msg: &str) -> ExitCode {
    eprintln!("lan_peers: {msg}");
    eprintln!(
        "usage: lan_peers [--interface NAME]... [--port P] [--data TEXT] [--period-ms N] [--no-ipv6]"
    );
    ExitCode::from(2)
}

fn default_data() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("lan_peers on {host}, pid {}", std::process::id())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut interfaces = Vec::new();
    let mut port: u16 = 5483;
    let mut data = default_data();
    let mut period = Duration::from_secs(1);
    let mut ipv6 = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next();
        match a.as_str() {
            "--interface" => match value() {
                Some(v) => interfaces.push(v),
                None => return usage("--interface needs a name"),
            },
            "--port" => match value().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => return usage("--port needs a number from 1 to 65535"),
            },
            "--data" => match value() {
                Some(v) => data = v,
                None => return usage("--data needs a value"),
            },
            "--period-ms" => match value().and_then(|v| v.parse().ok()) {
                Some(ms) => period = Duration::from_millis(ms),
                None => return usage("--period-ms needs a number"),
            },
            "--no-ipv6" => ipv6 = false,
            "-h" | "--help" => return usage("find other copies of this program on the LAN"),
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }

    let mut builder = beacon::Beacon::builder(port)
        .data(&data)
        .period(period)
        .ipv6(ipv6);
    if !interfaces.is_empty() {
        builder = builder.interfaces(interfaces.clone());
    }
    let (mut beacon, _controller) = match builder.build() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lan_peers: cannot start the beacon: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "beaconing {data:?} on port {port} ({}); waiting for peers, Ctrl-C to stop",
        if interfaces.is_empty() {
            "all interfaces".to_string()
        } else {
            format!("interfaces {}", interfaces.join(", "))
        }
    );

    // Print each peer (its id, at one of its addresses) when it first appears
    // and when its data changes. Peers on one host share an address and port,
    // and a peer heard over IPv4 and IPv6 has two addresses: hence the key.
    let mut known: HashMap<(Vec<u8>, SocketAddr), Vec<u8>> = HashMap::new();
    for msg in beacon.messages() {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("lan_peers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let key = (msg.id.clone(), msg.from);
        if known.get(&key) != Some(&msg.data) {
            let verb = if known.contains_key(&key) {
                "changed"
            } else {
                "found"
            };
            let id: String = msg.id.iter().map(|b| format!("{b:02x}")).collect();
            println!(
                "{verb} {} (id {id}): {}",
                msg.from,
                String::from_utf8_lossy(&msg.data)
            );
            if known.len() >= 10_000 && !known.contains_key(&key) {
                known.clear(); // bounded memory on a very busy network
            }
            known.insert(key, msg.data);
        }
    }
    ExitCode::SUCCESS
}
