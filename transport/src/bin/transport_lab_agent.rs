//! Test support, not a user tool: the helper process the transport's
//! network-lab tests start in a lab namespace. It reads one command per
//! line on stdin and answers with one line on stdout; see
//! `transport/tests/lab_mapped_listener.rs`.
//!
//! Commands:
//! - `listen STUN[,STUN...]|- igd|noigd [lease=SECS]`: binds a mapped
//!   listener on `tcp://0.0.0.0:0` and `utp://0.0.0.0:0` (UPnP lease SECS);
//!   prints `listening eps=<proto://addr[r]>,...` (`r`: NAT-restricted).
//! - `stun-server ADDR`: runs our STUN server (UDP and TCP) on ADDR;
//!   prints `ready`.
//! - `drop`: drops the listener (its UPnP mappings go with it); prints
//!   `dropped`.
//! - `quit`.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nat_traversal::{MappingContext, MappingOptions};
use transport::{Identity, ListenEndpoint, Listener, ListenerOptions};

fn main() {
    let mut listener: Option<Listener> = None;
    let mut servers = Vec::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        let out = if w.first() == Some(&"stun-server") {
            match w.get(1).map(|a| a.parse::<SocketAddr>()) {
                Some(Ok(a)) => match nat_traversal::SimpleUdpHolePunchServer::bind(a, None) {
                    Ok(s) => {
                        servers.push(s);
                        "ready".to_string()
                    }
                    Err(e) => format!("error {e}"),
                },
                _ => "error stun-server ADDR".to_string(),
            }
        } else {
            match run(&w, &mut listener) {
                Ok(s) => s,
                Err(e) => format!("error {e}"),
            }
        };
        println!("{out}");
        let _ = io::stdout().flush();
        if w.first() == Some(&"quit") {
            break;
        }
    }
}

fn run(w: &[&str], listener: &mut Option<Listener>) -> Result<String, Box<dyn std::error::Error>> {
    match w.first().copied() {
        Some("listen") => {
            let stun = w
                .get(1)
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty() && *x != "-")
                        .map(|x| x.parse())
                        .collect::<Result<Vec<SocketAddr>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let mut opts = MappingOptions::default()
                .stun_servers(stun)
                .igd(w.get(2) == Some(&"igd"));
            if let Some(l) = w
                .iter()
                .find_map(|x| x.strip_prefix("lease="))
                .and_then(|v| v.parse().ok())
            {
                opts = opts.igd_lease(Duration::from_secs(l));
            }
            let mc = Arc::new(MappingContext::with_options(opts)?);
            let l = Listener::bind_with(
                &Identity::generate(),
                vec![
                    "tcp://0.0.0.0:0".parse::<ListenEndpoint>()?,
                    "utp://0.0.0.0:0".parse::<ListenEndpoint>()?,
                ],
                ListenerOptions::default().mapping(mc),
            )?;
            let eps: Vec<String> = l
                .published_endpoints()
                .iter()
                .map(|p| {
                    format!(
                        "{}://{}{}",
                        p.endpoint.protocol,
                        p.endpoint.addr,
                        if p.nat_restricted { "r" } else { "" }
                    )
                })
                .collect();
            *listener = Some(l);
            Ok(format!("listening eps={}", eps.join(",")))
        }
        Some("drop") => {
            drop(listener.take());
            Ok("dropped".into())
        }
        Some("quit") => {
            drop(listener.take());
            Ok("bye".into())
        }
        other => Ok(format!("error unknown command {other:?}")),
    }
}
