//! Attack: 20,000 uTP SYNs never followed up (as from spoofed sources),
//! sent as fast as the test can, while good uTP clients connect from
//! another source and from the attacker's own.
//!
//! Each SYN draws at most one reply (our STATE, or a RESET when refused):
//! a connection never heard from after its SYN is forgotten, without a FIN,
//! when its handshake slot is taken back, so the connection table never
//! fills and new connections are accepted right after the flood.

mod attack_common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;
use transport::utp::proto::{Header, PacketType};
use transport::{Identity, Listener, ListenerOptions};

const SYNS: usize = 20_000;
const GOOD_EVERY: usize = 500;

fn syn(i: usize) -> [u8; 20] {
    let h = Header {
        packet_type: PacketType::Syn,
        connection_id: (i as u16).wrapping_mul(7919),
        timestamp: 0,
        timestamp_difference: 0,
        wnd_size: 1 << 20,
        seq_nr: (i as u16).wrapping_mul(31),
        ack_nr: 0,
    };
    let mut out = [0u8; 20];
    h.encode(None, &[], &mut out);
    out
}

fn drain(sock: &UdpSocket) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while sock.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_flood_draws_one_reply_each_and_leaves_no_state() {
    let listener = Arc::new(
        Listener::bind_with(
            &Identity::generate(),
            "utp://127.0.0.1:0",
            ListenerOptions::default(),
        )
        .unwrap(),
    );
    let ep = listener.endpoints()[0];
    let _echo = Echoer::start(listener.clone());
    let (fds, rss) = (open_fds(), rss_kib());

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let (mut other, mut same) = (Tally::default(), Tally::default());
    let mut replies = 0;
    let mut sent = 0;
    let mut peak_rss = rss;
    for i in 0..SYNS {
        if attacker.send_to(&syn(i), ep.addr).is_ok() {
            sent += 1;
        }
        if i % 64 == 0 {
            replies += drain(&attacker);
        }
        if i % GOOD_EVERY == 0 {
            other.add(good_utp(&ep, ip(OTHER)).await);
            same.add(good_utp(&ep, ip(ATTACKER)).await);
            peak_rss = peak_rss.max(rss_kib());
        }
    }
    // Every flood connection leaves its slot (evicted or past the
    // first-message deadline), and with it the uTP connection table.
    let l = listener.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the flood's slots are free", || l.pending_handshakes() == 0)
    })
    .await
    .unwrap();
    // Replies still in flight, and any FIN a released connection would
    // send at once, arrive within a moment on loopback.
    attacker.set_nonblocking(false).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while attacker.recv(&mut buf).is_ok() {
        replies += 1;
    }
    other.print("utp-syn other-source");
    same.print("utp-syn same-source");
    println!(
        "figure utp-syn: {sent} SYNs drew {replies} replies (x{:.2}), rss +{} KiB at peak, fds +{}",
        replies as f64 / sent as f64,
        peak_rss.saturating_sub(rss),
        open_fds().saturating_sub(fds)
    );
    other.assert_95("utp-syn other-source");
    assert!(
        replies <= sent,
        "amplification: {sent} SYNs drew {replies} replies"
    );
    assert!(
        peak_rss <= rss + 64 * 1024,
        "rss grew from {rss} KiB to {peak_rss} KiB"
    );
    // Right after the flood, new connections are accepted.
    let mut after = Tally::default();
    for _ in 0..10 {
        after.add(good_utp(&ep, ip(ATTACKER)).await);
        after.add(good_utp(&ep, ip(OTHER)).await);
    }
    after.print("utp-syn right after the flood");
    after.assert_95("utp-syn right after the flood");
}
