//! Sends a stream of bytes over an encrypted crust transport stream and
//! checks on arrival that every byte is intact.
//!
//! ```text
//! bulk_transfer listen utp://0.0.0.0:5483        # prints "endpoint: utp://...?pubkey=..."
//! bulk_transfer send utp://HOST:5483/?pubkey=... 5242880
//! ```
//!
//! The receiver prints `received: N bytes intact` (exit 0) or where the data
//! went wrong (exit 1); the sender prints `sent: N bytes in S s (R MB/s)`.
//! The network-lab tests run it inside namespaces over a lossy link.

use std::error::Error;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use transport::{Endpoint, Identity, ListenEndpoint, Listener, Stream};

type Res<T> = Result<T, Box<dyn Error>>;

/// The byte at `offset` of every transfer.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8 ^ (offset >> 16) as u8
}

/// Sends a stream of bytes over an encrypted crust transport stream and
/// checks on arrival that every byte is intact.
#[derive(clap::Parser)]
#[command(name = "bulk_transfer", version)]
enum Command {
    /// Accept one stream and check what arrives; prints `endpoint: ...` for
    /// each endpoint it listens on.
    Listen {
        /// Where to listen, e.g. `utp://0.0.0.0:5483`.
        listen_endpoint: String,
    },
    /// Connect and send BYTES bytes of the test pattern.
    Send {
        /// The receiver's endpoint, `utp://HOST:PORT/?pubkey=...`.
        endpoint: String,
        /// How many bytes to send.
        bytes: String,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match <Command as clap::Parser>::parse() {
        Command::Listen { listen_endpoint } => listen(&listen_endpoint),
        Command::Send { endpoint, bytes } => send(&endpoint, &bytes),
    };
    if let Err(e) = result {
        eprintln!("bulk_transfer: {e}");
        std::process::exit(1);
    }
}

fn listen(le: &str) -> Res<()> {
    let le: ListenEndpoint = le.parse()?;
    let listener = Listener::bind(&Identity::generate(), le)?;
    for ep in listener.endpoints() {
        println!("endpoint: {ep}");
    }
    let mut stream = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            let at = offset + i as u64;
            if *b != pattern(at) {
                println!("received: corrupt byte at offset {at}");
                std::process::exit(1);
            }
        }
        offset += n as u64;
    }
    println!("received: {offset} bytes intact");
    // Our close goes out as a uTP FIN that the transport's driver task
    // resends until it is acknowledged; a process that exits at once can
    // take it along under loss, and the sender would wait for it in vain.
    // So wait (bounded) until those tasks have finished.
    drop(stream);
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(8);
    while crust_runtime::alive_tasks() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn send(ep: &str, bytes: &str) -> Res<()> {
    let ep: Endpoint = ep.parse()?;
    let total: u64 = bytes.parse()?;
    let mut stream = Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(20))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    while offset < total {
        let n = (total - offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(offset + i as u64);
        }
        stream.write_all(&buf[..n])?;
        offset += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // The receiver closes once it has everything.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent: {total} bytes in {secs:.2} s ({:.2} MB/s)",
        total as f64 / secs / 1e6
    );
    Ok(())
}
