//! `nat_check`: a diagnosis of this host's NAT a person can read.
//!
//! ```text
//! nat_check [--stun HOST:PORT ...] [--no-igd] [--local-ip IP] [--json]
//! ```
//!
//! Contacts only the STUN servers given with `--stun` (there is no built-in
//! list) and, unless `--no-igd`, looks for a UPnP gateway by SSDP on the
//! local network. Every network wait is bounded.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use nat_traversal::*;
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

/// Whether a datagram sent to our own mapped address comes back in.
fn hairpin(socket: &UdpSocket, mapped: SocketAddr) -> bool {
    let Ok(other) = UdpSocket::bind(SocketAddr::new(
        socket
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or([0, 0, 0, 0].into()),
        0,
    )) else {
        return false;
    };
    let token: [u8; 16] = rand_token();
    if other.send_to(&token, mapped).is_err() {
        return false;
    }
    let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 64];
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && buf[..n] == token
        {
            return true;
        }
    }
    false
}

fn rand_token() -> [u8; 16] {
    // A fresh rendezvous secret is 16 random bytes.
    gen_rendezvous_info(vec![]).1.secret
}

fn verdict(nat: NatBehaviour, igd_mapped: bool, answered: bool) -> (&'static str, String) {
    if !answered && !igd_mapped {
        return (
            "unknown",
            "no STUN server answered: cannot tell how peers see this host; give --stun servers that are reachable".into(),
        );
    }
    if igd_mapped {
        return (
            "open",
            "a UPnP port mapping makes this host reachable: peers of every kind can reach it directly".into(),
        );
    }
    match (nat.mapping, nat.filtering) {
        (Mapping::NoNat, Filtering::EndpointIndependent) => (
            "open",
            "no NAT and nothing filters: peers of every kind can reach this host directly".into(),
        ),
        (Mapping::NoNat, _) => (
            "no-nat-filtered",
            "no NAT; inbound filtering unknown or restricted: peers behind easy, full-cone or no NAT after punching".into(),
        ),
        (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => (
            "full-cone",
            "full-cone NAT: after a rendezvous every kind of peer can reach this host, even behind a hard NAT".into(),
        ),
        (Mapping::EndpointIndependent, _) => (
            "easy",
            "easy NAT (endpoint-independent mapping, restricted filtering): peers with no NAT, full-cone or easy NATs can be reached by hole punching; peers behind hard (symmetric) NATs cannot".into(),
        ),
        (Mapping::EndpointDependent, _) => (
            "hard",
            "hard NAT (a new port per destination): only peers with no NAT, a full-cone NAT or a UPnP mapping can be reached; easy and hard NAT peers cannot".into(),
        ),
        (Mapping::Unknown, _) => (
            "unknown",
            "mapping behaviour unknown: it takes two STUN servers on different IPs, or one RFC 5780 server".into(),
        ),
    }
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let mc = match MappingContext::with_options(
        MappingOptions::default()
            .stun_servers(args.stun.clone())
            .igd(args.igd)
            .local_ip(args.local_ip),
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("nat_check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = mc.igd().map(|g| g.addr().to_string());
    let udp = match MappedUdpSocket::new(&mc) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("nat_check: cannot map a UDP socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    // TCP: no UPnP here (the UDP test mapping is enough to judge the gateway).
    let mc_tcp = MappingContext::with_options(
        MappingOptions::default()
            .stun_servers(args.stun.clone())
            .igd(false)
            .local_ip(args.local_ip),
    );
    let tcp = mc_tcp.and_then(|m| MappedTcpSocket::new(&m));
    let locals: Vec<String> = udp
        .endpoints
        .iter()
        .filter(|e| !e.nat_restricted && Some(e.addr) != udp.igd.as_ref().map(|m| m.external()))
        .map(|e| e.addr.ip().to_string())
        .collect();
    let udp_report = views(&args.stun, &udp.stun_seen);
    let tcp_report = match &tcp {
        Ok(t) => views(&args.stun, &t.stun_seen),
        Err(e) => args
            .stun
            .iter()
            .map(|s| (*s, format!("no answer ({e})")))
            .collect(),
    };
    let mapped = udp
        .endpoints
        .iter()
        .find(|e| e.nat_restricted)
        .map(|e| e.addr);
    let hairpinning = mapped.map(|m| hairpin(&udp.socket, m));
    let answered = !udp_report.iter().all(|(_, v)| v.starts_with("no answer"));
    let igd_mapped = matches!(udp.igd_outcome, IgdOutcome::Mapped { .. });
    let (igd_text, igd_kind) = match &udp.igd_outcome {
        IgdOutcome::NoGateway if !args.igd => {
            ("not looked for (--no-igd)".to_string(), "not-searched")
        }
        IgdOutcome::NoGateway => ("no UPnP gateway answered".to_string(), "none"),
        IgdOutcome::Mapped { external } => (format!("UPnP gateway mapped {external}"), "mapped"),
        IgdOutcome::DoubleNat { .. } => (udp.igd_outcome.to_string(), "double-nat"),
        IgdOutcome::Refused { .. } => (udp.igd_outcome.to_string(), "refusing-gateway"),
        other => (other.to_string(), "failed"),
    };
    let removed = udp.igd.map(|m| m.remove().map_err(|e| e.to_string()));
    let (verdict_kind, verdict_text) = verdict(udp.nat, igd_mapped, answered);
    if args.json {
        let j = json!({
            "local_addresses": locals,
            "stun_udp": udp_report.iter().map(|(s, v)| json!({"server": s.to_string(), "seen": v})).collect::<Vec<_>>(),
            "stun_tcp": tcp_report.iter().map(|(s, v)| json!({"server": s.to_string(), "seen": v})).collect::<Vec<_>>(),
            "mapping": format!("{:?}", udp.nat.mapping),
            "filtering": format!("{:?}", udp.nat.filtering),
            "upnp": {
                "gateway": gateway,
                "outcome": igd_kind,
                "detail": igd_text,
                "test_mapping_removed": removed.as_ref().map(|r| r.is_ok()),
            },
            "hairpinning": hairpinning,
            "verdict": verdict_kind,
            "verdict_text": verdict_text,
        });
        println!("{j}");
        return ExitCode::SUCCESS;
    }
    println!(
        "local addresses: {}",
        if locals.is_empty() {
            "none found".into()
        } else {
            locals.join(", ")
        }
    );
    if args.stun.is_empty() {
        println!("STUN: no server given (use --stun HOST:PORT; there is no built-in list)");
    }
    for (s, v) in &udp_report {
        println!("STUN {s} (UDP) sees us as {v}");
    }
    for (s, v) in &tcp_report {
        println!("STUN {s} (TCP) sees us as {v}");
    }
    println!(
        "mapping behaviour: {}",
        match udp.nat.mapping {
            Mapping::NoNat => "no NAT (servers see our own address)",
            Mapping::EndpointIndependent =>
                "endpoint-independent (one external port for every destination)",
            Mapping::EndpointDependent =>
                "endpoint-dependent (a new external port per destination)",
            Mapping::Unknown =>
                "unknown (needs two STUN servers on different IPs, or one RFC 5780 server)",
        }
    );
    println!(
        "filtering behaviour: {}",
        match udp.nat.filtering {
            Filtering::EndpointIndependent => "endpoint-independent (anyone may send to a mapping)",
            Filtering::AddressDependent => "address-dependent (only hosts we sent to)",
            Filtering::AddressAndPortDependent =>
                "address-and-port-dependent (only the exact host and port we sent to)",
            Filtering::Unknown => "unknown (needs an RFC 5780 STUN server)",
        }
    );
    match &gateway {
        Some(g) => println!("UPnP gateway: {g}: {igd_text}"),
        None => println!("UPnP gateway: {igd_text}"),
    }
    if let Some(r) = &removed {
        match r {
            Ok(()) => println!("UPnP test mapping: removed again"),
            Err(e) => println!("UPnP test mapping: could not be removed: {e}"),
        }
    }
    match hairpinning {
        Some(true) => println!("hairpinning: yes (our own mapped address reaches us)"),
        Some(false) => println!("hairpinning: no"),
        None => println!("hairpinning: not tested (no NAT mapping seen)"),
    }
    println!("verdict: {verdict_text}");
    ExitCode::SUCCESS
}

fn views(
    servers: &[SocketAddr],
    seen: &[(SocketAddr, nat_traversal::Result<SocketAddr>)],
) -> Vec<(SocketAddr, String)> {
    servers
        .iter()
        .map(|s| {
            let v = seen
                .iter()
                .find(|(srv, _)| srv == s)
                .map(|(_, r)| match r {
                    Ok(a) => a.to_string(),
                    Err(e) => format!("no answer ({e})"),
                })
                .unwrap_or_else(|| "no answer".into());
            (*s, v)
        })
        .collect()
}
