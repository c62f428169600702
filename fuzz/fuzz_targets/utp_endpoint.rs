//! Feeds arbitrary sequences of datagrams, timer jumps and application
//! commands to a listening uTP endpoint machine: it must never panic and
//! its state must stay bounded.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use transport::utp::proto::{Endpoint, EndpointConfig, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let config = EndpointConfig::default().backlog(8).max_connections(32).max_pending_resets(16);
    let mut ep = Endpoint::new(config, now);
    ep.set_listening(true);
    let peers: [SocketAddr; 3] = [
        "10.0.0.1:1".parse().unwrap(),
        "10.0.0.2:2".parse().unwrap(),
        "[2001:db8::1]:3".parse().unwrap(),
    ];
    let mut handles = Vec::new();
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut rbuf = [0u8; 4096];
    let mut i = 0;
    while i < data.len() {
        let op = data[i];
        i += 1;
        match op % 8 {
            // A datagram: length byte, then that many bytes.
            0..=3 => {
                let len = data.get(i).copied().unwrap_or(0) as usize;
                i += 1;
                let end = (i + len).min(data.len());
                let from = peers[(op as usize / 8) % peers.len()];
                ep.handle_datagram(now, from, &data[i.min(end)..end]);
                i = end;
            }
            4 => {
                let ms = data.get(i).copied().unwrap_or(0) as u64 * 50;
                i += 1;
                now += Duration::from_millis(ms);
                ep.handle_timeout(now);
            }
            5 => {
                if let Ok(h) = ep.connect(now, peers[op as usize % peers.len()]) {
                    handles.push(h);
                }
            }
            6 => {
                if let Some((h, _)) = ep.accept() {
                    handles.push(h);
                }
                for h in &handles {
                    if let Some(c) = ep.connection_mut(*h) {
                        c.write(&data[..data.len().min(3000)]);
                        while let Some(n) = c.read(&mut rbuf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            }
            _ => {
                if let Some(h) = handles.pop() {
                    if op & 0x10 != 0 {
                        if let Some(c) = ep.connection_mut(h) {
                            c.abort();
                        }
                    }
                    ep.release(h);
                }
            }
        }
        let mut sent = 0;
        while let Some(t) = ep.poll_transmit(now, &mut out) {
            assert!(t.len <= MAX_DATAGRAM);
            sent += 1;
            assert!(sent < 100_000, "poll_transmit does not terminate");
        }
        if let Some(t) = ep.poll_timeout() {
            assert!(t >= start);
        }
        assert!(ep.connection_count() <= 32);
    }
});
