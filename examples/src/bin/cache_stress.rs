//! Test helper (not a user program): rewrites a crust bootstrap cache file
//! in a loop until killed, generation after generation, so a test can kill
//! it at random moments and check the file always parses.
//!
//! Generation `g` holds `g % 7 + 1` entries, all with the key byte `g % 256`.

use std::net::{Ipv4Addr, SocketAddr};

use crust::{Endpoint, Protocol, PublicKey};

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .expect("usage: cache_stress FILE");
    let path = std::path::PathBuf::from(path);
    for g in 0u64.. {
        let n = (g % 7 + 1) as u16;
        let entries: Vec<Endpoint> = (0..n)
            .map(|i| {
                Endpoint::new(
                    Protocol::Tcp,
                    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 1000 + i)),
                    PublicKey::from_bytes([(g % 256) as u8; 32]),
                )
            })
            .collect();
        if let Err(e) = crust::cache::write_file(&path, &entries) {
            eprintln!("cache_stress: {e}");
            std::process::exit(1);
        }
    }
}
