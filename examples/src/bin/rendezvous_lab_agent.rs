//! Test support, not a user tool: the helper process the rendezvous lab
//! tests (`examples/tests/lab_rendezvous.rs`) start in a lab namespace. It
//! reads one command per line on stdin and answers with one line:
//!
//! - `stun-server PRIMARY ALTERNATE`: run a STUN server (RFC 5780, two
//!   addresses); prints `ready`.
//! - `prepare STUN[,STUN...] igd|noigd`: a prepared rendezvous (kept);
//!   prints `info <hex of the rendezvous info>`.
//! - `connect HEX MS`: connects with the kept rendezvous to the peer whose
//!   info is HEX within MS ms; then both sides send `ping` and read the
//!   other's; prints
//!   `connected path=<path> ms=<n> peer=<addr> data=ok` or
//!   `failed ms=<n> <error>`.
//! - `fds`: prints `fds <n>` (open file descriptors of this process).
//! - `quit`.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nat_traversal::{MappingContext, MappingOptions, PubRendezvousInfo, SimpleUdpHolePunchServer};
use transport::Identity;
use transport::rendezvous::Rendezvous;

fn main() {
    let mut servers = Vec::new();
    let mut prepared: Option<Rendezvous> = None;
    let identity = Identity::generate();
    // Start the shared runtime now, so `fds` before and after a rendezvous
    // compares like with like.
    crust_runtime::handle();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        let out = match w.first().copied() {
            Some("stun-server") => (|| -> Result<String, Box<dyn std::error::Error>> {
                let p: SocketAddr = w.get(1).ok_or("no primary")?.parse()?;
                let a: SocketAddr = w.get(2).ok_or("no alternate")?.parse()?;
                servers.push(SimpleUdpHolePunchServer::bind(p, Some(a))?);
                Ok("ready".into())
            })(),
            Some("prepare") => (|| -> Result<String, Box<dyn std::error::Error>> {
                let stun = w
                    .get(1)
                    .ok_or("no STUN servers")?
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<Vec<SocketAddr>, _>>()?;
                let mc = MappingContext::with_options(
                    MappingOptions::default()
                        .stun_servers(stun)
                        .igd(w.get(2) == Some(&"igd")),
                )?;
                let r = Rendezvous::prepare(&mc, &identity)?;
                let hex: String = r
                    .info()
                    .encode()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                prepared = Some(r);
                Ok(format!("info {hex}"))
            })(),
            Some("connect") => (|| -> Result<String, Box<dyn std::error::Error>> {
                let hex = w.get(1).ok_or("no info")?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()?;
                let theirs = PubRendezvousInfo::decode(&bytes)?;
                let ms: u64 = w.get(2).ok_or("no timeout")?.parse()?;
                let r = prepared.take().ok_or("prepare first")?;
                let start = Instant::now();
                match r.connect(&theirs, Duration::from_millis(ms)) {
                    Ok(mut s) => {
                        let took = start.elapsed().as_millis();
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        s.write_all(b"ping")?;
                        let mut b = [0u8; 4];
                        s.read_exact(&mut b)?;
                        let data = if &b == b"ping" { "ok" } else { "bad" };
                        Ok(format!(
                            "connected path={} ms={took} peer={} data={data}",
                            s.path().to_string().replace(' ', "_"),
                            s.peer_addr()
                        ))
                    }
                    Err(e) => Ok(format!("failed ms={} {e}", start.elapsed().as_millis())),
                }
            })(),
            Some("fds") => std::fs::read_dir("/proc/self/fd")
                .map(|d| format!("fds {}", d.count()))
                .map_err(Into::into),
            Some("quit") => break,
            _ => Ok(format!("error unknown command {line:?}")),
        };
        let out = out.unwrap_or_else(|e| format!("error {e}"));
        println!("{out}");
        let _ = io::stdout().flush();
    }
}
