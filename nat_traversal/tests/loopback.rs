//! Drivers and the blocking API over real sockets on loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use nat_traversal::stun::StunConfig;
use nat_traversal::*;

fn no_igd(stun: Vec<SocketAddr>) -> MappingContext {
    MappingContext::with_options(
        MappingOptions::default()
            .igd(false)
            .stun_servers(stun)
            .local_ip(Some("127.0.0.1".parse().unwrap())),
    )
    .unwrap()
}

#[test]
fn stun_over_udp_and_tcp_reports_our_address() {
    let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let srv = server.addresses()[0];
    assert_eq!(server.tcp_addresses(), vec![srv]);
    let mc = no_igd(vec![srv]);
    let m = MappedUdpSocket::new(&mc).unwrap();
    let local = m.socket.local_addr().unwrap();
    assert_eq!(m.endpoints[0].addr, local);
    assert!(m.endpoints.iter().all(|e| !e.nat_restricted));
    assert_eq!(m.nat.mapping, Mapping::NoNat);
    let t = MappedTcpSocket::new(&mc).unwrap();
    let tl = t.socket.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(t.endpoints.len(), 1, "{:?}", t.endpoints);
    assert_eq!(t.endpoints[0].addr, tl);
}

#[test]
fn rfc5780_server_answers_change_requests_from_the_right_address() {
    let server = SimpleUdpHolePunchServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.2:0".parse().unwrap()),
    )
    .unwrap();
    let a = server.addresses();
    assert_eq!(a.len(), 4);
    let rt = crust_runtime::handle();
    rt.block_on(async {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = StunConfig::default();
        let r = aio::stun_binding(&s, a[0], Some((true, true)), &cfg)
            .await
            .unwrap();
        assert_eq!(r.from, a[3], "change IP and port: from the alternate");
        assert_eq!(r.other_address, Some(a[3]));
        let r = aio::stun_binding(&s, a[0], Some((false, true)), &cfg)
            .await
            .unwrap();
        assert_eq!(r.from, a[1]);
        let r = aio::stun_binding(&s, a[0], Some((true, false)), &cfg)
            .await
            .unwrap();
        assert_eq!(r.from, a[2]);
    });
    // No NAT on loopback: every test comes back.
    let m = MappedUdpSocket::new(&no_igd(vec![a[0]])).unwrap();
    assert_eq!(
        (m.nat.mapping, m.nat.filtering),
        (Mapping::NoNat, Filtering::EndpointIndependent)
    );
    // The three requests above, then test I, II and the alternate.
    assert_eq!(server.stats().answered, 6);
}

#[test]
fn the_server_rate_limits_a_source_prefix() {
    use nat_traversal::stun::{Message, RateLimitConfig, ResponderConfig};
    // A burst of 5 and no refill: exactly 5 answers, whatever the timing.
    let cfg = ResponderConfig::default().rate_limit(Some(
        RateLimitConfig::default()
            .prefix_burst(5)
            .prefix_rate(0.0)
            .exempt_loopback(false),
    ));
    let server =
        SimpleUdpHolePunchServer::bind_with("127.0.0.1:0".parse().unwrap(), None, cfg).unwrap();
    let srv = server.addresses()[0];
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        s.send_to(&Message::binding_request([i; 12]).encode(), srv)
            .unwrap();
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 100];
    let mut answers = 0;
    // Until the server has seen all 50 (the stats say so), then drain.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().requests < 50 && std::time::Instant::now() < deadline {
        if s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    while s.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    let st = server.stats();
    assert_eq!(st.requests, 50, "{st:?}");
    assert_eq!((st.answered, st.limited), (5, 45), "{st:?}");
    assert_eq!(answers, 5);
    // 28-byte requests, 40-byte answers.
    assert_eq!((st.bytes_in, st.bytes_out), (50 * 28, 5 * 40));
}

#[test]
fn stun_client_gives_up_after_exactly_its_request_budget() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = StunConfig::default()
        .rto(Duration::from_millis(20))
        .max_rto(Duration::from_millis(40))
        .max_transmits(3)
        .timeout(Duration::from_millis(300));
    let err = crust_runtime::handle()
        .block_on(async {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            aio::stun_binding(&s, silent.local_addr().unwrap(), None, &cfg).await
        })
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(err.to_string().contains("3 request"), "{err}");
    // It did send 3 requests, no more.
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 100];
    while silent.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn server_closes_its_sockets_on_drop() {
    let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let a = server.addresses()[0];
    drop(server);
    UdpSocket::bind(a).expect("UDP port free after drop");
    std::net::TcpListener::bind(a).expect("TCP port free after drop");
}

#[test]
fn udp_punch_on_loopback_and_data_flows() {
    let mc = no_igd(vec![]);
    let a = MappedUdpSocket::new(&mc).unwrap();
    let b = MappedUdpSocket::new(&mc).unwrap();
    let (ap, aq) = gen_rendezvous_info(a.endpoints.iter().map(|e| e.addr).collect());
    let (bp, bq) = gen_rendezvous_info(b.endpoints.iter().map(|e| e.addr).collect());
    let bsock = b.socket;
    let t = std::thread::spawn(move || PunchedUdpSocket::punch_hole(bsock, bp, aq));
    let pa = PunchedUdpSocket::punch_hole(a.socket, ap, bq).unwrap();
    let pb = t.join().unwrap().unwrap();
    assert_eq!(pa.peer_addr, pb.socket.local_addr().unwrap());
    assert_eq!(pb.peer_addr, pa.socket.local_addr().unwrap());
    pa.socket.send_to(b"data", pa.peer_addr).unwrap();
    pb.socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 100];
    loop {
        let (n, from) = pb.socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, pb.peer_addr);
        if &buf[..n] == b"data" {
            break;
        }
        assert_eq!(
            n,
            punch::PROBE_LEN,
            "only late probes may come before the data"
        );
    }
}

#[test]
fn udp_punch_with_the_wrong_secret_fails_typed() {
    let mc = no_igd(vec![]);
    let a = MappedUdpSocket::new(&mc).unwrap();
    let b = MappedUdpSocket::new(&mc).unwrap();
    let (ap, aq) = gen_rendezvous_info(a.endpoints.iter().map(|e| e.addr).collect());
    let (_, bq) = gen_rendezvous_info(b.endpoints.iter().map(|e| e.addr).collect());
    let (stale_bp, _) = gen_rendezvous_info(vec![]);
    let cfg = PunchConfig::default().timeout(Duration::from_millis(800));
    let cfg2 = cfg.clone();
    let bsock = b.socket;
    let t =
        std::thread::spawn(move || PunchedUdpSocket::punch_hole_with(bsock, stale_bp, aq, &cfg2));
    let err = PunchedUdpSocket::punch_hole_with(a.socket, ap, bq, &cfg).unwrap_err();
    assert_eq!(
        err.failure_kind(),
        Some(PunchFailureKind::WrongSecret),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("cannot punch this NAT pair"),
        "{err}"
    );
    assert!(t.join().unwrap().is_err());
}

#[test]
fn tcp_punch_on_loopback_leaves_one_stream_each() {
    let mc = no_igd(vec![]);
    let a = MappedTcpSocket::new(&mc).unwrap();
    let b = MappedTcpSocket::new(&mc).unwrap();
    let (ap, aq) = gen_rendezvous_info(a.endpoints.iter().map(|e| e.addr).collect());
    let (bp, bq) = gen_rendezvous_info(b.endpoints.iter().map(|e| e.addr).collect());
    let bsock = b.socket;
    let t = std::thread::spawn(move || tcp_punch_hole(bsock, bp, aq));
    let mut sa = tcp_punch_hole(a.socket, ap, bq).unwrap();
    let mut sb = t.join().unwrap().unwrap();
    assert_eq!(sa.local_addr().unwrap(), sb.peer_addr().unwrap());
    assert_eq!(sb.local_addr().unwrap(), sa.peer_addr().unwrap());
    sa.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    sb.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sb.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn rendezvous_decoder_rejects_junk() {
    let (_, q) = gen_rendezvous_info(vec![
        "203.0.113.1:1".parse().unwrap(),
        "[2001:db8::1]:2".parse().unwrap(),
    ]);
    let b = q.encode();
    assert_eq!(PubRendezvousInfo::decode(&b).unwrap(), q);
    let mut v3 = b.clone();
    v3[0] = 3;
    let e = PubRendezvousInfo::decode(&v3).unwrap_err();
    assert!(e.to_string().contains("version 3"), "{e}");
    // A dangling field header is truncation.
    let mut extra = b.clone();
    extra.push(0);
    assert!(PubRendezvousInfo::decode(&extra).is_err());
    assert!(PubRendezvousInfo::decode(&[]).is_err());
    // serde round trip too
    let j = serde_json::to_string(&q).unwrap();
    assert_eq!(serde_json::from_str::<PubRendezvousInfo>(&j).unwrap(), q);
}
