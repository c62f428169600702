//! Network lab: STUN interop with coturn (both directions), NAT behaviour
//! discovery behind each kind, UPnP behind a double NAT, and UPnP mappings
//! made, removed, and re-made after the gateway restarts.
//! Run with `CRUST_LAB=1` as root (see `.ci/lab`).

mod common;
use common::*;
use netlab::lab::NatKind::{self, *};

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_stun_our_client_against_coturn() {
    let w = world("stun_client_coturn");
    let (_, c1, _) = w.lab.coturn().unwrap();
    for kind in [Public, Easy] {
        let site = w
            .lab
            .site(
                &format!("{kind:?}").to_lowercase(),
                kind,
                Default::default(),
            )
            .unwrap();
        let mut a = agent(&site.host);
        let r = cmd(&mut a, &format!("stun-client {c1}:3478"));
        let mapped: std::net::SocketAddr = r
            .strip_prefix("mapped ")
            .unwrap_or_else(|| panic!("{kind:?}: {r}"))
            .parse()
            .unwrap();
        assert_eq!(
            mapped.ip(),
            std::net::IpAddr::V4(site.public_addr),
            "{kind:?}"
        );
    }
}

fn turnutils_stunclient(host: &netlab::lab::Host, server: std::net::IpAddr) -> (bool, String) {
    // turnutils_stunclient has no timeout of its own: bound it.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            host.namespace(),
            "timeout",
            "20",
            "turnutils_stunclient",
            "-p",
            "3478",
        ])
        .arg(server.to_string())
        .output()
        .expect("run turnutils_stunclient");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_stun_coturn_client_against_our_server() {
    let w = world("stun_coturn_client");
    // From a public host coturn's client runs its whole RFC 5780 sequence
    // (CHANGE-REQUEST, RESPONSE-PORT) against our server and exits.
    let site = w.lab.site("pub", Public, Default::default()).unwrap();
    let (ok, text) = turnutils_stunclient(&site.host, w.stun.ip());
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("UDP reflexive addr: {}:", site.addr)),
        "{text}"
    );
    assert!(
        text.contains(&format!("Other addr: : {}", w.stun_alt)),
        "{text}"
    );
    // From behind an easy NAT it gets the NAT's address (then waits for
    // its RESPONSE-PORT test, which the NAT filters: it is cut by timeout).
    let site = w.lab.site("easy", Easy, Default::default()).unwrap();
    let (_, text) = turnutils_stunclient(&site.host, w.stun.ip());
    assert!(
        text.contains(&format!("UDP reflexive addr: {}:", site.public_addr)),
        "{text}"
    );
}

fn behaviour(test: &str, kind: NatKind, use_coturn: bool) -> String {
    let w = world(test);
    let stun = if use_coturn {
        let (_, c1, _) = w.lab.coturn().unwrap();
        format!("{c1}:3478")
    } else {
        w.stun.to_string()
    };
    let site = w.lab.site("a", kind, Default::default()).unwrap();
    let mut a = agent(&site.host);
    let r = cmd(&mut a, &format!("map-udp {stun} noigd"));
    assert!(r.starts_with("mapped"), "{r}");
    field(&r, "nat").to_string()
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_stun_nat_behaviour_seen_behind_each_kind() {
    // Our client with our RFC 5780 server.
    assert_eq!(
        behaviour("nat_public", Public, false),
        "NoNat/EndpointIndependent"
    );
    assert_eq!(
        behaviour("nat_easy", Easy, false),
        "EndpointIndependent/AddressAndPortDependent"
    );
    assert_eq!(
        behaviour("nat_hard", Hard, false),
        "EndpointDependent/AddressAndPortDependent"
    );
    assert_eq!(
        behaviour("nat_fullcone", FullCone, false),
        "EndpointIndependent/EndpointIndependent"
    );
    // Our client with coturn as the RFC 5780 server.
    assert_eq!(
        behaviour("nat_easy_coturn", Easy, true),
        "EndpointIndependent/AddressAndPortDependent"
    );
    assert_eq!(
        behaviour("nat_hard_coturn", Hard, true),
        "EndpointDependent/AddressAndPortDependent"
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_upnp_double_nat_mapping_is_refused_and_not_offered() {
    let w = world("upnp_double");
    let site = w.lab.site("a", DoubleNat, Default::default()).unwrap();
    let mut a = agent(&site.host);
    let r = cmd(&mut a, &format!("map-udp {} igd", w.stun));
    assert_eq!(field(&r, "igd"), "refused", "{r}");
    // Offered: the local address and the STUN mapping (restricted) only.
    let eps = field(&r, "eps");
    for e in eps.split(',') {
        let restricted = e.ends_with('r');
        let addr: std::net::SocketAddr = e.trim_end_matches('r').parse().unwrap();
        if addr.ip() != std::net::IpAddr::V4(site.addr) {
            assert!(restricted, "{e} offered as public: {r}");
        }
    }
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_upnp_mapping_is_made_and_removed() {
    let w = world("upnp_remove");
    let site = w.lab.site("a", EasyUpnp, Default::default()).unwrap();
    let router = site.router.as_ref().unwrap().0.clone();
    let mut a = agent(&site.host);
    let r = cmd(&mut a, &format!("map-udp {} igd", w.stun));
    let igd = field(&r, "igd").to_string();
    assert!(igd.starts_with("mapped:"), "{r}");
    let port: u16 = igd.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        router.miniupnpd_forwards(port),
        "{:?}",
        router.miniupnpd_rules()
    );
    // The agent drops the mapping with the socket when it quits.
    assert_eq!(cmd(&mut a, "quit"), "bye");
    a.wait(std::time::Duration::from_secs(10)).unwrap();
    assert!(
        !router.miniupnpd_forwards(port),
        "mapping left after drop: {:?}",
        router.miniupnpd_rules()
    );
}

/// A router reboot under a live mapping: `miniupnpd` killed, its rules and
/// lease file gone, started afresh. The mapping's owner re-creates it at
/// its next renewal, so it is back within one renewal period (half the
/// 10 s lease) of the restart, plus the renewal request's own 5 s bound.
#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_upnp_mapping_comes_back_after_miniupnpd_restarts() {
    const LEASE_SECS: u64 = 10;
    let renewal = std::time::Duration::from_secs(LEASE_SECS / 2);
    let w = world("upnp_restart");
    let site = w.lab.site("a", EasyUpnp, Default::default()).unwrap();
    let router = site.router.as_ref().unwrap().0.clone();
    let mut a = agent(&site.host);
    let r = cmd(
        &mut a,
        &format!("map-udp {} igd lease={LEASE_SECS}", w.stun),
    );
    let igd = field(&r, "igd").to_string();
    assert!(igd.starts_with("mapped:"), "{r}");
    let port: u16 = igd.rsplit(':').next().unwrap().parse().unwrap();
    let mapped = || router.miniupnpd_forwards(port);
    assert!(mapped(), "no rule for port {port} after the mapping");
    w.lab.restart_miniupnpd(&site).unwrap();
    let restarted = std::time::Instant::now();
    assert!(
        !mapped(),
        "the restarted miniupnpd kept the rule of port {port}"
    );
    let back = netlab::lab::wait_until(renewal + std::time::Duration::from_secs(5), mapped);
    assert!(
        back,
        "port {port} not mapped again within one renewal period ({renewal:?}) + 5 s"
    );
    println!(
        "FIGURE upnp_restart: mapping of port {port} back {:?} after miniupnpd restarted (renewal every {renewal:?})",
        restarted.elapsed()
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_upnp_port_conflict_gets_another_port() {
    let w = world("upnp_conflict");
    let site = w.lab.site("a", EasyUpnp, Default::default()).unwrap();
    let lan = site.lan.clone().unwrap();
    let second = w.lab.host("a2").unwrap();
    w.lab.attach(&second, &lan, "eth0").unwrap();
    second.route_default(lan.subnet().nth(1)).unwrap();
    let mut a = agent(&site.host);
    let mut b = agent(&second);
    let ra = cmd(&mut a, &format!("map-udp {} igd port=40000", w.stun));
    let rb = cmd(&mut b, &format!("map-udp {} igd port=40000", w.stun));
    let wan = site.router.as_ref().unwrap().1;
    assert_eq!(field(&ra, "igd"), format!("mapped:{wan}:40000"), "{ra}");
    let igd_b = field(&rb, "igd");
    assert!(igd_b.starts_with(&format!("mapped:{wan}:")), "{rb}");
    assert_ne!(
        igd_b,
        format!("mapped:{wan}:40000"),
        "same external port given twice: {rb}"
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_upnp_lease_is_renewed_while_in_use() {
    let w = world("upnp_lease");
    let site = w.lab.site("a", EasyUpnp, Default::default()).unwrap();
    let router = site.router.as_ref().unwrap().0.clone();
    let mut a = agent(&site.host);
    let r = cmd(&mut a, &format!("map-udp {} igd lease=3", w.stun));
    let igd = field(&r, "igd").to_string();
    assert!(igd.starts_with("mapped:"), "{r}");
    let port: u16 = igd.rsplit(':').next().unwrap().parse().unwrap();
    let listed = || router.miniupnpd_forwards(port);
    // Three leases later the mapping is still there: it was renewed.
    std::thread::sleep(std::time::Duration::from_secs(9));
    assert!(listed(), "mapping expired although in use");
    assert_eq!(cmd(&mut a, "quit"), "bye");
    a.wait(std::time::Duration::from_secs(10)).unwrap();
    assert!(!listed(), "mapping left after drop");
}
