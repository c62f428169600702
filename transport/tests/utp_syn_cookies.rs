//! uTP SYN cookies in the endpoint machine (virtual time, no sockets): a
//! SYN answered with a cookie leaves no state; the peer's next packet
//! proves it (also when its first data packets were lost) and creates the
//! connection; forged proofs fail, are rate-limited per source, and a
//! cookie expires after two time buckets; a flood of SYNs leaves nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use transport::utp::proto::packet::HEADER_LEN;
use transport::utp::proto::{
    Endpoint, EndpointConfig, Header, MAX_DATAGRAM, Packet, PacketType, SynCookies,
};

fn config(cookies: SynCookies) -> EndpointConfig {
    EndpointConfig::default().syn_cookies(cookies)
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

struct Server {
    ep: Endpoint,
    now: Instant,
    buf: Vec<u8>,
}

impl Server {
    fn new(cookies: SynCookies) -> Server {
        let now = Instant::now();
        let mut ep = Endpoint::new(config(cookies), now);
        ep.set_listening(true);
        Server {
            ep,
            now,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn send(&mut self, from: SocketAddr, d: &[u8]) {
        self.ep.handle_datagram(self.now, from, d);
    }

    /// Everything the server sends now, decoded headers.
    fn out(&mut self) -> Vec<(SocketAddr, Header)> {
        let mut v = Vec::new();
        while let Some(t) = self.ep.poll_transmit(self.now, &mut self.buf) {
            v.push((
                t.destination,
                Packet::decode(&self.buf[..t.len]).unwrap().header,
            ));
        }
        v
    }
}

const PEER: &str = "192.0.2.1:1000";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

#[test]
fn a_cookie_syn_leaves_no_state_and_the_next_packet_creates_the_connection() {
    let mut s = Server::new(SynCookies::Always);
    s.send(peer(), &packet(PacketType::Syn, 100, 5000, 0, b""));
    let out = s.out();
    assert_eq!(out.len(), 1, "exactly one reply");
    let (to, h) = out[0];
    assert_eq!(to, peer());
    assert_eq!(
        (h.packet_type, h.connection_id, h.ack_nr),
        (PacketType::State, 100, 5000)
    );
    assert_eq!(s.ep.connection_count(), 0, "no state for a cookie SYN");
    assert_eq!(s.ep.stats().cookies_sent, 1);
    // The initiator's first data packet acks cookie - 1.
    s.send(
        peer(),
        &packet(
            PacketType::Data,
            101,
            5001,
            h.seq_nr.wrapping_sub(1),
            b"hello",
        ),
    );
    assert_eq!(s.ep.stats().cookies_proven, 1);
    let (hb, from) = s.ep.accept().unwrap();
    assert_eq!(from, peer());
    let mut got = [0u8; 16];
    let n = s.ep.connection_mut(hb).unwrap().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"hello");
    // It acks the data, from the cookie sequence on.
    let acks: Vec<_> = s.out().into_iter().map(|(_, h)| h).collect();
    assert!(
        acks.iter()
            .any(|h| h.ack_nr == 5001 && h.connection_id == 100)
    );
}

#[test]
fn a_lost_first_data_packet_is_found_in_the_window() {
    let mut s = Server::new(SynCookies::Always);
    s.send(peer(), &packet(PacketType::Syn, 7, 65534, 0, b""));
    let cookie = s.out()[0].1.seq_nr;
    // Packets 65535 and 0 were lost; 1 (three after the SYN) arrives.
    s.send(
        peer(),
        &packet(PacketType::Data, 8, 1, cookie.wrapping_sub(1), b"c"),
    );
    assert_eq!(s.ep.stats().cookies_proven, 1);
    assert!(s.ep.accept().is_some());
}

#[test]
fn forged_proofs_fail_and_are_rate_limited_per_source() {
    let mut s = Server::new(SynCookies::Always);
    s.send(peer(), &packet(PacketType::Syn, 7, 10, 0, b""));
    let cookie = s.out()[0].1.seq_nr;
    let mut failures = 0;
    for guess in 0..1000u16 {
        let g = cookie.wrapping_add(1 + guess);
        s.send(
            peer(),
            &packet(PacketType::Data, 8, 11, g.wrapping_sub(1), b"x"),
        );
        failures = s.ep.stats().cookie_failures;
    }
    assert_eq!(s.ep.connection_count(), 0);
    assert_eq!(s.ep.stats().cookies_proven, 0);
    // Only the first few guesses were even checked.
    assert!(failures <= 32, "{failures} cookie checks for one source");
    // Then even the right cookie is not checked for that source in this
    // bucket; another source is unaffected.
    s.send(
        peer(),
        &packet(PacketType::Data, 8, 11, cookie.wrapping_sub(1), b"x"),
    );
    assert_eq!(s.ep.stats().cookies_proven, 0);
    s.out(); // the RESETs to the failed guesses
    let other: SocketAddr = "192.0.2.9:1".parse().unwrap();
    s.send(other, &packet(PacketType::Syn, 7, 10, 0, b""));
    let c2 = s.out().last().unwrap().1.seq_nr;
    s.send(
        other,
        &packet(PacketType::Data, 8, 11, c2.wrapping_sub(1), b"x"),
    );
    assert_eq!(s.ep.stats().cookies_proven, 1);
}

#[test]
fn a_cookie_lasts_one_to_two_buckets() {
    let mut s = Server::new(SynCookies::Always);
    s.send(peer(), &packet(PacketType::Syn, 7, 10, 0, b""));
    let cookie = s.out()[0].1.seq_nr;
    // Up to the end of the next bucket: still good.
    s.now += Duration::from_secs(59);
    s.send(
        peer(),
        &packet(PacketType::Data, 8, 11, cookie.wrapping_sub(1), b"x"),
    );
    assert_eq!(s.ep.stats().cookies_proven, 1);

    let mut s = Server::new(SynCookies::Always);
    s.send(peer(), &packet(PacketType::Syn, 7, 10, 0, b""));
    let cookie = s.out()[0].1.seq_nr;
    s.now += Duration::from_secs(60);
    s.send(
        peer(),
        &packet(PacketType::Data, 8, 11, cookie.wrapping_sub(1), b"x"),
    );
    assert_eq!(
        s.ep.stats().cookies_proven,
        0,
        "two buckets later the cookie is stale"
    );
}

#[test]
fn under_pressure_a_flood_leaves_only_the_threshold_behind() {
    let mut s = Server::new(SynCookies::UnderPressure(64));
    for i in 0..20_000u32 {
        let from = SocketAddr::from(([198, 51, 100, (i % 250) as u8], 1024 + (i / 250) as u16));
        s.send(from, &packet(PacketType::Syn, i as u16, 1, 0, b""));
        // Replies go out as they are made (one each).
        assert!(s.out().len() <= 1);
    }
    assert_eq!(s.ep.connection_count(), 64);
    assert_eq!(s.ep.stats().cookies_sent, 20_000 - 64);
    // A good peer still gets in, by cookie.
    s.send(peer(), &packet(PacketType::Syn, 500, 77, 0, b""));
    let cookie = s.out()[0].1.seq_nr;
    s.send(
        peer(),
        &packet(PacketType::Data, 501, 78, cookie.wrapping_sub(1), b"hi"),
    );
    assert_eq!(s.ep.stats().cookies_proven, 1);
    assert_eq!(s.ep.connection_count(), 65);
}

#[test]
fn off_means_state_for_every_syn() {
    let mut s = Server::new(SynCookies::Off);
    for i in 0..100u16 {
        s.send(peer(), &packet(PacketType::Syn, i * 2, 1, 0, b""));
    }
    assert_eq!(s.ep.connection_count(), 100);
    assert_eq!(s.ep.stats().cookies_sent, 0);
}

#[test]
fn two_endpoints_connect_and_talk_through_a_cookie() {
    let mut now = Instant::now();
    let mut a = Endpoint::new(config(SynCookies::Off).seed(3), now);
    let mut b = Endpoint::new(config(SynCookies::Always), now);
    b.set_listening(true);
    let (aa, ba): (SocketAddr, SocketAddr) = (
        "192.0.2.1:1".parse().unwrap(),
        "192.0.2.2:2".parse().unwrap(),
    );
    let ha = a.connect(now, ba).unwrap();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut hb = None;
    let mut got = Vec::new();
    for step in 0..2000 {
        now += Duration::from_millis(1);
        if a.connection(ha).unwrap().is_established() && step % 100 == 0 {
            a.connection_mut(ha).unwrap().write(b"ping");
        }
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_datagram(now, aa, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_datagram(now, ba, &buf[..t.len]);
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        if hb.is_none() {
            hb = b.accept().map(|(h, _)| h);
        }
        if let Some(h) = hb {
            let mut r = [0u8; 64];
            while let Some(n) = b.connection_mut(h).unwrap().read(&mut r) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&r[..n]);
            }
        }
        if got.len() >= 8 {
            break;
        }
    }
    assert_eq!(&got[..8], b"pingping");
    assert_eq!(b.stats().cookies_proven, 1);
}
