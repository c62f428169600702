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

/// Find other copies of this program on the local network: each copy
/// beacons its data and prints every peer it hears.
#[derive(clap::Parser)]
#[command(name = "lan_peers", version)]
struct Args {
    /// Use only this interface (repeatable), e.g. `--interface lo` to stay
    /// on this machine. Without it, every interface: the program broadcasts
    /// on your LAN.
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// The beacon port every copy shares.
    #[arg(long, default_value_t = 5483, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// What to announce (default: host name and process id).
    #[arg(long)]
    data: Option<String>,
    /// Time between two beacons, in milliseconds.
    #[arg(long = "period-ms", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    period_ms: u64,
    /// IPv4 only.
    #[arg(long = "no-ipv6")]
    no_ipv6: bool,
}

fn default_data() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("lan_peers on {host}, pid {}", std::process::id())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = <Args as clap::Parser>::parse();
    let interfaces = args.interfaces;
    let port = args.port;
    let data = args.data.unwrap_or_else(default_data);
    let period = Duration::from_millis(args.period_ms);
    let ipv6 = !args.no_ipv6;

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
