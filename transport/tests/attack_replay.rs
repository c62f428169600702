//! Attack: one recorded first message (captured from a real dialler)
//! replayed 1,000 times, over TCP and over uTP, while good clients connect.
//!
//! The listener answers every replay (it cannot tell a replay from a
//! first message), but no replay ever proves itself with the admission
//! record, so none reaches `accept` or takes an accept-queue place, and the
//! replays, which hold their connections open, only ever displace each other
//! from the handshake slots.

mod attack_common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use attack_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::utp::aio::UtpSocket;
use transport::{Endpoint, Identity, Listener, ListenerOptions, Protocol, Stream};

const REPLAYS: usize = 1000;
/// Replays held open at once: more than the slots, so they contend.
const HELD: usize = 64;
const SLOTS: usize = 32;
/// A good client every this many replays.
const GOOD_EVERY: usize = 50;

fn options() -> ListenerOptions {
    ListenerOptions::default().max_pending_handshakes(SLOTS)
}

/// What a real dialler sends first to `ep`'s key, captured by a fake
/// listener at another address.
fn capture_tcp_first_message(key: transport::PublicKey) -> Vec<u8> {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = Endpoint::new(Protocol::Tcp, fake.local_addr().unwrap(), key);
    let dialler = std::thread::spawn(move || {
        // It never gets an answer: the error is expected.
        let _ = Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(2));
    });
    let (mut s, _) = fake.accept().unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).unwrap();
    let mut msg = hdr.to_vec();
    msg.resize(2 + u16::from_be_bytes(hdr) as usize, 0);
    s.read_exact(&mut msg[2..]).unwrap();
    drop(s);
    dialler.join().unwrap();
    msg
}

#[test]
fn tcp_replays_never_reach_accept() {
    let listener = Arc::new(
        Listener::bind_with(&Identity::generate(), "tcp://127.0.0.1:0", options()).unwrap(),
    );
    let ep = listener.endpoints()[0];
    let echo = Echoer::start(listener.clone());
    let msg1 = capture_tcp_first_message(ep.public_key);
    let fds = open_fds();

    let mut held = VecDeque::new();
    let (mut other, mut same) = (Tally::default(), Tally::default());
    let mut answered = 0;
    for i in 0..REPLAYS {
        let mut s = tcp_from(ip(ATTACKER), ep.addr).unwrap();
        s.write_all(&msg1).unwrap();
        // The answer comes (status 0 and a Noise message 2); the replayer
        // cannot use it.
        let mut reply = [0u8; 51];
        if s.read_exact(&mut reply).is_ok() {
            assert_eq!(&reply[..3], &[0, 49, 0]);
            answered += 1;
        }
        held.push_back(s);
        if held.len() > HELD {
            held.pop_front();
        }
        assert_eq!(listener.queued_streams(), 0, "a replay took a queue place");
        assert!(listener.pending_handshakes() <= SLOTS);
        if i % GOOD_EVERY == 0 {
            other.add(good_tcp(&ep, ip(OTHER)));
            same.add(good_tcp(&ep, ip(ATTACKER)));
        }
    }
    other.print("replay-tcp other-source");
    same.print("replay-tcp same-source");
    println!("figure replay-tcp: {answered} of {REPLAYS} replays answered, 0 admitted");
    other.assert_95("replay-tcp other-source");
    // Every stream that reached accept was a good client's.
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        other.served + same.served
    );
    assert!(
        open_fds() <= fds + 2 * HELD + 16,
        "fds grew: {} from {fds}",
        open_fds()
    );

    drop(held);
    wait_until("the replays' slots are free", || {
        listener.pending_handshakes() == 0
    });
    assert_eq!(listener.queued_streams(), 0);
    assert!(matches!(good_tcp(&ep, ip(OTHER)), Outcome::Served));
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        other.served + same.served + 1
    );
}

async fn read_frame(s: &mut transport::utp::aio::UtpStream) -> std::io::Result<Vec<u8>> {
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).await?;
    let mut msg = hdr.to_vec();
    msg.resize(2 + u16::from_be_bytes(hdr) as usize, 0);
    s.read_exact(&mut msg[2..]).await?;
    Ok(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utp_replays_never_reach_accept() {
    let listener = Arc::new(
        Listener::bind_with(&Identity::generate(), "utp://127.0.0.1:0", options()).unwrap(),
    );
    let ep = listener.endpoints()[0];
    let echo = Echoer::start(listener.clone());

    // Capture a real dialler's first message with a fake uTP listener.
    let fake = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    fake.set_listening(true);
    let fake_ep = Endpoint::new(Protocol::Utp, fake.local_addr(), ep.public_key);
    let dialler = tokio::spawn(async move {
        let _ = transport::aio::Stream::direct_connect(
            &Identity::generate(),
            fake_ep,
            Duration::from_secs(2),
        )
        .await;
    });
    let (mut s, _) = tokio::time::timeout(T, fake.accept())
        .await
        .unwrap()
        .unwrap();
    let msg1 = tokio::time::timeout(T, read_frame(&mut s))
        .await
        .unwrap()
        .unwrap();
    drop(s);
    dialler.await.unwrap();

    let attacker = UtpSocket::bind(SocketAddr::new(ip(ATTACKER), 0)).unwrap();
    let mut held = VecDeque::new();
    let (mut other, mut same) = (Tally::default(), Tally::default());
    let mut answered = 0;
    for i in 0..REPLAYS {
        let attempt = async {
            let mut s = attacker.connect(ep.addr).await?;
            s.write_all(&msg1).await?;
            let reply = read_frame(&mut s).await?;
            Ok::<_, std::io::Error>((s, reply))
        };
        if let Ok(Ok((s, reply))) = tokio::time::timeout(T, attempt).await {
            assert_eq!(&reply[..3], &[0, 49, 0]);
            answered += 1;
            held.push_back(s);
            if held.len() > HELD {
                held.pop_front();
            }
        }
        assert_eq!(listener.queued_streams(), 0, "a replay took a queue place");
        assert!(listener.pending_handshakes() <= SLOTS);
        if i % GOOD_EVERY == 0 {
            other.add(good_utp(&ep, ip(OTHER)).await);
            same.add(good_utp(&ep, ip(ATTACKER)).await);
        }
    }
    other.print("replay-utp other-source");
    same.print("replay-utp same-source");
    println!("figure replay-utp: {answered} of {REPLAYS} replays answered, 0 admitted");
    other.assert_95("replay-utp other-source");
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        other.served + same.served
    );
    drop(held);
    let l = listener.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the replays' slots are free", || {
            l.pending_handshakes() == 0
        })
    })
    .await
    .unwrap();
    assert_eq!(listener.queued_streams(), 0);
}
