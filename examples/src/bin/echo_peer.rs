//! An encrypted echo between two peers.
//!
//! With no arguments it runs both peers in this process on loopback: a
//! listener (on TCP and on uTP) and a client, which exchange a few messages
//! over an encrypted, key-authenticated stream on each protocol, and prints
//! both public keys and what each side verified.
//!
//! To run the two peers in two terminals:
//!
//! ```text
//! cargo run --release -p crust-examples --bin echo_peer -- listen tcp://127.0.0.1:5483
//! cargo run --release -p crust-examples --bin echo_peer -- connect tcp://127.0.0.1:5483/?pubkey=...
//! ```

use std::error::Error;
use std::io::{Read, Write};
use std::time::Duration;

use transport::{Endpoint, Identity, ListenEndpoint, Listener, Stream};

const TIMEOUT: Duration = Duration::from_secs(10);
const MESSAGES: [&str; 3] = ["hello, peer", "every byte here is encrypted", "goodbye"];

fn usage() -> ! {
    eprintln!(
        "usage: echo_peer                      run a listener and a client on loopback\n       \
         echo_peer listen [LISTEN_ENDPOINTS] serve echo (default tcp://127.0.0.1:0; a comma-separated list)\n       \
         echo_peer connect ENDPOINT         send a few messages and check the echo"
    );
    std::process::exit(2)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo(),
        ["listen"] => listen("tcp://127.0.0.1:0", None),
        ["listen", ep] => listen(ep, None),
        ["connect", ep] => ep
            .parse::<Endpoint>()
            .map_err(Into::into)
            .and_then(|ep| connect(&Identity::generate(), ep)),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("echo_peer: {e}");
        std::process::exit(1);
    }
}

/// Both peers in one process, on loopback.
fn demo() -> Result<(), Box<dyn Error + Send + Sync>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let server =
        std::thread::spawn(move || listen("tcp://127.0.0.1:0,utp://127.0.0.1:0", Some(tx)));
    let endpoints: Vec<Endpoint> = rx.recv()?;
    let client_id = Identity::generate();
    for endpoint in endpoints {
        connect(&client_id, endpoint)?;
    }
    server
        .join()
        .map_err(|_| "the listener thread panicked")??;
    println!("demo finished: both peers proved their keys and every message came back intact");
    Ok(())
}

/// Serves one connection per endpoint (in the demo) or connections forever.
/// `listen_endpoints` is a comma-separated list.
fn listen(
    listen_endpoints: &str,
    ready: Option<std::sync::mpsc::Sender<Vec<Endpoint>>>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let id = Identity::generate();
    let endpoints = listen_endpoints
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<ListenEndpoint>, _>>()?;
    let listener = Listener::bind(&id, endpoints)?;
    println!("[listener] public key  {}", id.public_key());
    for ep in listener.endpoints() {
        println!("[listener] reachable at {ep}");
    }
    let mut serve = usize::MAX;
    if let Some(tx) = ready {
        serve = listener.endpoints().len();
        tx.send(listener.endpoints())?;
    }
    for _ in 0..serve {
        let mut stream = listener.accept()?;
        println!(
            "[listener] accepted {} from {}: it proved it holds key {}",
            stream.protocol(),
            stream.peer_addr(),
            stream.peer_public_key()
        );
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            println!(
                "[listener] echoing {n} bytes: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            stream.write_all(&buf[..n])?;
        }
        println!("[listener] {} closed the stream", stream.peer_addr());
    }
    Ok(())
}

fn connect(id: &Identity, endpoint: Endpoint) -> Result<(), Box<dyn Error + Send + Sync>> {
    println!("[client]   public key  {}", id.public_key());
    println!("[client]   dialling {endpoint}");
    let mut stream = Stream::direct_connect(id, endpoint, TIMEOUT)?;
    println!(
        "[client]   connected over {}: the listener proved it holds key {} (the key in the endpoint)",
        stream.protocol(),
        stream.peer_public_key()
    );
    assert_eq!(stream.peer_public_key(), endpoint.public_key);
    stream.set_read_timeout(Some(TIMEOUT))?;
    for msg in MESSAGES {
        stream.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(format!("echo mismatch: sent {msg:?}, got {back:?}").into());
        }
        println!("[client]   sent and got back {msg:?}");
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok(())
}
