//! `nat_check`: a diagnosis of this host's NAT a person can read.
//!
//! ```text
//! nat_check [--stun HOST:PORT ...] [--no-igd] [--local-ip IP] [--json]
//! ```
//!
//! Contacts only the STUN servers given with `--stun` (there is no built-in
//! list) and, unless `--no-igd`, looks for a UPnP gateway by SSDP on the
//! local network. Every network wait is bounded. The diagnosis itself is
//! [`nat_traversal::diagnose`]; this prints it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use nat_traversal::diagnose::{DiagnoseOptions, Diagnosis, diagnose};
use serde_json::json;

/// A diagnosis of this host's NAT a person can read: which addresses STUN
/// servers see, how the NAT maps and filters, whether a UPnP gateway maps
/// ports, and whether hole punching can work.
///
/// Contacts only the STUN servers given with --stun (there is no built-in
/// list) and, unless --no-igd, looks for a UPnP gateway by SSDP on the local
/// network. Every network wait is bounded.
#[derive(clap::Parser)]
#[command(name = "nat_check", version)]
struct Args {
    /// A STUN server to ask (repeatable); two or more tell the mapping kind.
    #[arg(long = "stun", value_name = "HOST:PORT", value_parser = stun_addr)]
    stun: Vec<SocketAddr>,
    /// Do not look for a UPnP gateway.
    #[arg(long = "no-igd", action = clap::ArgAction::SetFalse)]
    igd: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The local address to send from (and to look for a gateway from).
    #[arg(long = "local-ip", value_name = "IP")]
    local_ip: Option<std::net::IpAddr>,
}

fn stun_addr(v: &str) -> Result<SocketAddr, String> {
    v.to_socket_addrs()
        .map_err(|e| format!("{v}: {e}"))?
        .next()
        .ok_or(format!("{v}: no address"))
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let opts = DiagnoseOptions::default()
        .stun_servers(args.stun.clone())
        .igd(args.igd)
        .local_ip(args.local_ip);
    let d = match diagnose(&opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nat_check: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", json(&d));
    } else {
        println!("{d}");
    }
    ExitCode::SUCCESS
}

fn json(d: &Diagnosis) -> serde_json::Value {
    let views = |v: &[nat_traversal::diagnose::StunView]| {
        v.iter()
            .map(|(s, r)| {
                let seen = match r {
                    Ok(a) => a.to_string(),
                    Err(e) => format!("no answer ({e})"),
                };
                json!({"server": s.to_string(), "seen": seen})
            })
            .collect::<Vec<_>>()
    };
    json!({
        "local_addresses": d.local_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "stun_udp": views(&d.stun_udp),
        "stun_tcp": views(&d.stun_tcp),
        "mapping": format!("{:?}", d.nat.mapping),
        "filtering": format!("{:?}", d.nat.filtering),
        "upnp": {
            "gateway": d.gateway.map(|g| g.to_string()),
            "outcome": d.igd_kind(),
            "detail": d.igd_text(),
            "test_mapping_removed": d.test_mapping_removed.as_ref().map(|r| r.is_ok()),
        },
        "hairpinning": d.hairpinning,
        "verdict": d.verdict.kind(),
        "verdict_text": d.verdict.to_string(),
    })
}
