//! Bad datagrams sent straight to a beacon's port (unicast to 127.0.0.1, so
//! nothing leaves `lo`) are dropped and counted; good messages still arrive.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use beacon::Beacon;
use beacon::packet::{MAX_DATA_LEN, MAX_PACKET_LEN, encode};
use common::HANG_GUARD;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn bad_datagrams_are_dropped_and_counted_good_ones_delivered() {
    let port = common::test_port(21301);
    let (mut b, _c) = Beacon::builder(port)
        .data("victim")
        .period(Duration::from_secs(3600)) // few own echoes; they do not count anyway
        .interfaces(["lo"])
        .build()
        .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);

    let mut good = Vec::new();
    encode(b"\x01\x02\x03\x04\x05\x06\x07\x08", b"good one", &mut good).unwrap();

    let mut bad: Vec<Vec<u8>> = Vec::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Random datagrams of many sizes (none can start with the magic by
    // chance at these odds, but check so the count stays exact).
    for n in [0usize, 1, 5, 6, 7, 100, 500, 1200, 1500] {
        let mut d = rng.bytes(n);
        if d.starts_with(b"CRBN") {
            d[0] = 0;
        }
        bad.push(d);
    }
    // Every truncation of a good message that cuts into the header or id.
    for cut in 0..(6 + 8) {
        bad.push(good[..cut].to_vec());
    }
    // Foreign magic, other version, bad id length.
    let mut foreign = good.clone();
    foreign[0] = b'X';
    bad.push(foreign);
    let mut v2 = good.clone();
    v2[4] = 2;
    bad.push(v2);
    let mut long_id = good.clone();
    long_id[5] = 200;
    bad.push(long_id);
    // Oversized: valid header, data over the limit; and a near-maximal UDP
    // datagram.
    let mut over = Vec::new();
    encode(b"\x09", &[b'x'; MAX_DATA_LEN], &mut over).unwrap();
    over.extend_from_slice(&[b'y'; 50]);
    assert!(
        over.len() <= MAX_PACKET_LEN,
        "still within the datagram limit"
    );
    bad.push(over);
    let mut huge = good.clone();
    huge.resize(65_000, 0xee);
    bad.push(huge);

    for d in &bad {
        tx.send_to(d, to).unwrap();
    }
    tx.send_to(&good, to).unwrap();

    let mut buf = Vec::new();
    let from = b.next_message_timeout(&mut buf, HANG_GUARD).unwrap();
    assert_eq!(buf, b"good one");
    assert_eq!(from, tx.local_addr().unwrap());
    // Datagrams from one socket arrive in order, so all the bad ones were
    // handled before the good one.
    assert_eq!(b.dropped(), bad.len() as u64, "{:?}", b.stats());
    assert_eq!(b.stats().delivered, 1);

    // And it keeps working: more garbage, then another good one.
    for _ in 0..100 {
        let n = (rng.next() % 1400) as usize;
        tx.send_to(&rng.bytes(n), to).unwrap();
    }
    let mut good2 = Vec::new();
    encode(b"\x0a\x0b", b"second", &mut good2).unwrap();
    tx.send_to(&good2, to).unwrap();
    b.next_message_timeout(&mut buf, HANG_GUARD).unwrap();
    assert_eq!(buf, b"second");
    assert_eq!(b.dropped(), bad.len() as u64 + 100);
    assert!(
        b.try_next_message().unwrap().is_none(),
        "nothing else came through"
    );
}

#[test]
fn a_full_queue_loses_messages_but_never_grows() {
    let port = common::test_port(21302);
    let (mut b, _c) = Beacon::builder(port)
        .period(Duration::from_secs(3600))
        .interfaces(["lo"])
        .queue_len(4)
        .build()
        .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        let mut w = Vec::new();
        encode(&[i, 1], &[i], &mut w).unwrap();
        tx.send_to(&w, ("127.0.0.1", port)).unwrap();
    }
    common::wait_for("all 50 handled", || {
        let s = b.stats();
        (s.delivered == 50).then_some(())
    });
    let mut got = Vec::new();
    while let Some(m) = b.try_next_message().unwrap() {
        got.push(m.data[0]);
    }
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(b.stats().overflowed, 46);
}
