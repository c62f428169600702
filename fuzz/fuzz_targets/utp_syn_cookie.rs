//! The uTP SYN-cookie path: SYNs answered statelessly (cookies forced on),
//! then proofs that are right, off by a few sequence numbers, or forged, and
//! arbitrary datagrams. It must never panic, every SYN draws at most one
//! reply, a right proof within the window creates the connection, and state
//! stays bounded.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use transport::utp::proto::packet::HEADER_LEN;
use transport::utp::proto::{
    Endpoint, EndpointConfig, Header, MAX_DATAGRAM, Packet, PacketType, SynCookies,
};

fn header(t: PacketType, id: u16, seq: u16, ack: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    Header {
        packet_type: t,
        connection_id: id,
        timestamp: 1,
        timestamp_difference: 0,
        wnd_size: 1 << 16,
        seq_nr: seq,
        ack_nr: ack,
    }
    .encode(None, payload, &mut buf);
    buf
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = EndpointConfig::default().backlog(8).max_connections(32).max_pending_resets(16).syn_cookies(SynCookies::Always);
    let mut ep = Endpoint::new(config, now);
    ep.set_listening(true);
    let peers: [SocketAddr; 3] = [
        "10.0.0.1:1".parse().unwrap(),
        "10.0.0.2:2".parse().unwrap(),
        "[2001:db8::1]:3".parse().unwrap(),
    ];
    let mut out = vec![0u8; MAX_DATAGRAM];
    // The last cookie answer: (peer, syn id, syn seq, cookie).
    let mut last: Option<(SocketAddr, u16, u16, u16)> = None;
    let mut chunks = data.chunks(6);
    while let Some(c) = chunks.next() {
        let c: Vec<u8> = c
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(6)
            .collect();
        let from = peers[c[0] as usize % peers.len()];
        let a = u16::from_be_bytes([c[2], c[3]]);
        let b = u16::from_be_bytes([c[4], c[5]]);
        let mut syn = None;
        match c[1] % 5 {
            0 => {
                ep.handle_datagram(now, from, &header(PacketType::Syn, a, b, 0, b""));
                syn = Some((from, a, b));
            }
            1 => {
                // A proof: right cookie or off by `a & 0xff`, sequence number
                // 1 to 16 past the SYN's.
                if let Some((p, id, seq, cookie)) = last {
                    let off = a & 0xff;
                    let k = (b % 16) + 1;
                    let before = ep.stats().cookies_proven;
                    let fails = ep.stats().cookie_failures;
                    let pkt = header(
                        PacketType::Data,
                        id.wrapping_add(1),
                        seq.wrapping_add(k),
                        cookie.wrapping_sub(1).wrapping_add(off),
                        &c,
                    );
                    let existed = ep.connection_count();
                    ep.handle_datagram(now, p, &pkt);
                    if off == 0
                        && k <= 8
                        && fails < 32
                        && existed < 32
                        && ep.connection_count() > existed
                    {
                        assert_eq!(ep.stats().cookies_proven, before + 1);
                    }
                }
            }
            2 => {
                let len = (a as usize) % 64;
                let body: Vec<u8> = c.iter().cycle().take(len).copied().collect();
                ep.handle_datagram(now, from, &body);
            }
            3 => {
                now += Duration::from_millis(u64::from(b) * 10);
                ep.handle_timeout(now);
            }
            _ => {
                if let Some((h, _)) = ep.accept() {
                    ep.release(h);
                }
            }
        }
        let mut replies = 0;
        while let Some(t) = ep.poll_transmit(now, &mut out) {
            assert!(t.len <= MAX_DATAGRAM);
            replies += 1;
            assert!(replies < 100_000, "poll_transmit does not terminate");
            if let (Some((p, id, seq)), Ok(pkt)) = (syn, Packet::decode(&out[..t.len]))
                && pkt.header.packet_type == PacketType::State
                && t.destination == p
                && pkt.header.connection_id == id
            {
                last = Some((p, id, seq, pkt.header.seq_nr));
            }
        }
        if syn.is_some() {
            // At most one reply per SYN, plus acks and RESETs already due.
            assert!(replies <= 1 + 16 + 32, "{replies} packets after one SYN");
        }
        assert!(ep.connection_count() <= 32);
    }
});
