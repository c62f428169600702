//! Bad input to the uTP endpoint machine: malformed datagrams, strays,
//! acks for data never sent, sequence numbers far outside the window, a
//! SYN flood. Dropped or answered with RESET, counted, never a panic and
//! never unbounded state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use transport::utp::proto::packet::HEADER_LEN;
use transport::utp::proto::{
    ConnectionHandle, Endpoint, EndpointConfig, Header, MAX_DATAGRAM, Packet, PacketType,
    SynCookies,
};

struct Pair {
    a: Endpoint,
    b: Endpoint,
    aa: SocketAddr,
    ba: SocketAddr,
    now: Instant,
    buf: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(EndpointConfig::default())
    }

    fn with(b_config: EndpointConfig) -> Pair {
        let now = Instant::now();
        let mut b = Endpoint::new(b_config, now);
        b.set_listening(true);
        Pair {
            a: Endpoint::new(EndpointConfig::default().seed(9), now),
            b,
            aa: "192.0.2.1:1000".parse().unwrap(),
            ba: "192.0.2.2:2000".parse().unwrap(),
            now,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Delivers everything both sides send, instantly, until quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            self.now += Duration::from_millis(1);
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                self.b
                    .handle_datagram(self.now, self.aa, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                self.a
                    .handle_datagram(self.now, self.ba, &self.buf[..t.len]);
                moved = true;
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    fn established(&mut self) -> (ConnectionHandle, ConnectionHandle) {
        let ha = self.a.connect(self.now, self.ba).unwrap();
        self.pump();
        let (hb, peer) = self.b.accept().unwrap();
        assert_eq!(peer, self.aa);
        assert!(self.a.connection(ha).unwrap().is_established());
        (ha, hb)
    }
}

fn packet(t: PacketType, id: u16, seq: u16, ack: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    Header {
        packet_type: t,
        connection_id: id,
        timestamp: 1,
        timestamp_difference: 0,
        wnd_size: 1 << 20,
        seq_nr: seq,
        ack_nr: ack,
    }
    .encode(None, payload, &mut buf);
    buf
}

#[test]
fn malformed_datagrams_are_counted_and_dropped() {
    let mut p = Pair::new();
    let good = packet(PacketType::Data, 7, 1, 0, b"x");
    let mut bad_version = good.clone();
    bad_version[0] = 0x02;
    let mut bad_type = good.clone();
    bad_type[0] = 0x71;
    let mut overrun = good.clone();
    overrun[1] = 1; // extension announced; bytes "x" cannot hold it
    let mut looped = packet(PacketType::Data, 7, 1, 0, &[9, 0, 9, 0, 9, 0, 9]);
    looped[1] = 9;
    for d in [
        &good[..5],
        &bad_version[..],
        &bad_type[..],
        &overrun[..],
        &looped[..],
        &[][..],
    ] {
        p.b.handle_datagram(p.now, p.aa, d);
    }
    assert_eq!(p.b.stats().malformed, 6);
    assert_eq!(p.b.connection_count(), 0);
    assert!(p.b.poll_transmit(p.now, &mut p.buf).is_none(), "no reply");
}

#[test]
fn strays_get_reset_but_resets_get_nothing() {
    let mut p = Pair::new();
    p.b.handle_datagram(p.now, p.aa, &packet(PacketType::Data, 77, 5, 0, b"hi"));
    let t = p.b.poll_transmit(p.now, &mut p.buf).unwrap();
    assert_eq!(t.destination, p.aa);
    let r = Packet::decode(&p.buf[..t.len]).unwrap();
    assert_eq!(r.header.packet_type, PacketType::Reset);
    assert_eq!(r.header.connection_id, 77);
    assert_eq!(r.header.ack_nr, 5);
    p.b.handle_datagram(p.now, p.aa, &packet(PacketType::Reset, 78, 5, 0, b""));
    assert!(p.b.poll_transmit(p.now, &mut p.buf).is_none());
    assert_eq!(p.b.stats().strays, 2);
    assert_eq!(p.b.stats().resets_sent, 1);
}

#[test]
fn syn_flood_is_bounded_by_backlog_and_displaces_itself() {
    // Without cookies (see utp_syn_cookies.rs for the flood with them).
    let mut p = Pair::with(EndpointConfig::default().syn_cookies(SynCookies::Off));
    for i in 0..10_000u32 {
        let from = SocketAddr::from(([198, 51, 100, (i % 250) as u8], 1024 + (i / 250) as u16));
        p.b.handle_datagram(p.now, from, &packet(PacketType::Syn, i as u16, 1, 0, b""));
    }
    let backlog = EndpointConfig::default().backlog;
    assert_eq!(p.b.connection_count(), backlog);
    assert_eq!(p.b.backlog_len(), backlog);
    let s = p.b.stats().clone();
    // Each newer SYN displaced the oldest waiting one never heard from;
    // none was refused.
    assert_eq!(s.syns_evicted, 10_000 - backlog as u64);
    assert_eq!(s.syns_refused, 0);
    let mut out = 0;
    while p.b.poll_transmit(p.now, &mut p.buf).is_some() {
        out += 1;
    }
    // One STATE per SYN still held; the displaced ones never got to send.
    assert_eq!(out, backlog);
    // A good SYN after the flood still gets in.
    p.b.handle_datagram(
        p.now,
        "203.0.113.5:9".parse().unwrap(),
        &packet(PacketType::Syn, 4242, 1, 0, b""),
    );
    assert_eq!(p.b.connection_count(), backlog);
    assert_eq!(p.b.stats().syns_evicted, 10_001 - backlog as u64);
    let t = p.b.poll_transmit(p.now, &mut p.buf).unwrap();
    assert_eq!(t.destination, "203.0.113.5:9".parse().unwrap());
    assert!(p.b.poll_transmit(p.now, &mut p.buf).is_none());
    // Released before the peer said anything more: forgotten at once, with
    // no FIN.
    let (h, _) = p.b.accept().unwrap();
    p.b.release(h);
    assert_eq!(p.b.connection_count(), backlog - 1);
    assert_eq!(p.b.stats().unheard_released, 1);
    assert!(p.b.poll_transmit(p.now, &mut p.buf).is_none(), "no FIN");
}

#[test]
fn acks_for_unsent_data_and_far_sequence_numbers_are_ignored() {
    let mut p = Pair::new();
    let (ha, hb) = p.established();
    let a_send_id = p.a.connection(ha).unwrap().send_id();
    p.a.connection_mut(ha).unwrap().write(b"1");
    p.pump();
    let mut buf = [0u8; 64];
    assert_eq!(p.b.connection_mut(hb).unwrap().read(&mut buf), Some(1));
    let before = p.b.connection(hb).unwrap().stats().invalid;
    // An ack for 30,000 packets B never sent.
    p.b.handle_datagram(
        p.now,
        p.aa,
        &packet(PacketType::State, a_send_id, 0, 30_000, b""),
    );
    // Data 30,000 packets ahead: outside any window.
    for k in 0..50u16 {
        p.b.handle_datagram(
            p.now,
            p.aa,
            &packet(PacketType::Data, a_send_id, 30_000 + k, 0, &[0u8; 1000]),
        );
    }
    let cb = p.b.connection(hb).unwrap();
    assert!(cb.stats().invalid > before, "{:?}", cb.stats());
    assert_eq!(cb.readable_bytes(), 0);
    assert!(cb.error().is_none());
    // The connection still works, both ways.
    p.a.connection_mut(ha).unwrap().write(b"after");
    p.b.connection_mut(hb).unwrap().write(b"back");
    p.pump();
    let n = p.b.connection_mut(hb).unwrap().read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after");
    let n = p.a.connection_mut(ha).unwrap().read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
}

#[test]
fn random_garbage_never_panics_and_state_stays_bounded() {
    let mut p = Pair::new();
    let (ha, _hb) = p.established();
    let id = p.a.connection(ha).unwrap().send_id();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..100_000 {
        let len = (rnd() % 64) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if d.len() >= HEADER_LEN && rnd() % 2 == 0 {
            // Make it look like uTP for this connection, half the time.
            d[0] = ((rnd() % 5) as u8) << 4 | 1;
            d[2..4].copy_from_slice(&id.to_be_bytes());
            if rnd() % 2 == 0 {
                d[1] = 0;
            }
        }
        p.b.handle_datagram(p.now, p.aa, &d);
        while p.b.poll_transmit(p.now, &mut p.buf).is_some() {}
    }
    assert!(p.b.connection_count() <= 1 + EndpointConfig::default().backlog);
    assert!(p.b.stats().malformed > 0);
}

/// A peer that never closes its half cannot pin a released connection
/// forever: after `fin_wait` it is reset and forgotten.
#[test]
fn released_connection_is_dropped_when_peer_never_fins() {
    let mut p = Pair::new();
    let (ha, hb) = p.established();
    p.a.connection_mut(ha).unwrap().write(b"bye");
    p.a.release(ha);
    p.pump();
    assert_eq!(p.a.connection_count(), 1, "waiting for the peer's FIN");
    let mut buf = [0u8; 8];
    let cb = p.b.connection_mut(hb).unwrap();
    assert_eq!(cb.read(&mut buf), Some(3));
    assert_eq!(cb.read(&mut buf), Some(0), "EOF after A's FIN");
    // B never closes. Keep-alives flow; after fin_wait A gives up.
    let end = p.now + EndpointConfig::default().fin_wait + Duration::from_secs(1);
    while p.now < end {
        p.now += Duration::from_secs(1);
        p.a.handle_timeout(p.now);
        p.b.handle_timeout(p.now);
        p.pump();
    }
    assert_eq!(p.a.connection_count(), 0);
    let e = p.b.connection(hb).unwrap().error().unwrap().to_string();
    assert!(e.contains("reset by peer"), "{e}");
}
