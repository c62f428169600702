//! Network lab: each NAT kind builds and behaves as its name says.
//! Run with `CRUST_LAB=1` as root (see `.ci/lab`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use netlab::lab::{Helper, Lab, NatKind, Site, SiteOptions};

const T: Duration = Duration::from_secs(10);

fn agent(host: &netlab::lab::Host) -> Helper {
    host.spawn(Path::new(env!("CARGO_BIN_EXE_nat_lab_agent")), &[])
        .expect("start agent")
}

fn cmd(h: &mut Helper, line: &str) -> String {
    h.send_line(line).expect("send to agent");
    h.recv_line(T).expect("agent answer")
}

/// Sends from `local_port` on the site's host to `server:port`, returns the
/// source address the server saw.
fn seen_from(
    site_agent: &mut Helper,
    local_port: u16,
    srv: &mut Helper,
    dst: SocketAddr,
) -> SocketAddr {
    assert_eq!(
        cmd(site_agent, &format!("udp-send {local_port} {dst} hi")),
        "sent"
    );
    let got = cmd(srv, &format!("udp-recv {} 3000", dst.port()));
    let from = got
        .strip_prefix("got ")
        .unwrap_or_else(|| panic!("server heard nothing: {got}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    from.parse().unwrap()
}

struct Probe {
    site: Site,
    a: Helper,
    s: Helper,
    srv_ip: std::net::Ipv4Addr,
    _lab: Lab,
}

fn build(test: &str, kind: NatKind) -> Probe {
    let lab = Lab::new(test).expect("build lab");
    let site = lab
        .site("a", kind, SiteOptions::default())
        .expect("build site");
    let (srv, srv_ip) = lab.public_host("srv").expect("public host");
    let mut a = agent(&site.host);
    let mut s = agent(&srv);
    assert!(cmd(&mut a, "udp-open 0.0.0.0:40000").starts_with("ready"));
    assert!(cmd(&mut s, "udp-open 0.0.0.0:4000").starts_with("ready"));
    assert!(cmd(&mut s, "udp-open 0.0.0.0:4001").starts_with("ready"));
    Probe {
        site,
        a,
        s,
        srv_ip,
        _lab: lab,
    }
}

/// Whether a packet from the server's port 4001 (which we never sent to)
/// reaches us at `mapped`.
fn unsolicited_arrives(p: &mut Probe, mapped: SocketAddr) -> bool {
    assert_eq!(
        cmd(&mut p.s, &format!("udp-send 4001 {mapped} unsolicited")),
        "sent"
    );
    cmd(&mut p.a, "udp-recv 40000 1000").starts_with("got")
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_public_is_not_translated() {
    let mut p = build("kind_public", NatKind::Public);
    let dst = SocketAddr::from((p.srv_ip, 4000));
    let seen = seen_from(&mut p.a, 40000, &mut p.s, dst);
    assert_eq!(seen, SocketAddr::from((p.site.addr, 40000)));
    assert!(unsolicited_arrives(&mut p, seen));
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_easy_keeps_port_and_filters_unsolicited() {
    let mut p = build("kind_easy", NatKind::Easy);
    let s1 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4000).into());
    let wan = p.site.router.as_ref().unwrap().1;
    assert_eq!(
        s1,
        SocketAddr::from((wan, 40000)),
        "masquerade keeps the port"
    );
    // Endpoint-independent mapping: same mapping to another destination port.
    let s2 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4000).into());
    assert_eq!(s1, s2);
    // Port-restricted filtering: the server's other port cannot get in...
    assert!(!unsolicited_arrives(&mut p, s1));
    // ...but the server's port we talked to can.
    assert_eq!(cmd(&mut p.s, &format!("udp-send 4000 {s1} back")), "sent");
    let got = cmd(&mut p.a, "udp-recv 40000 3000");
    assert!(got.ends_with("back"), "{got}");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_hard_maps_each_destination_to_a_new_port() {
    let mut p = build("kind_hard", NatKind::Hard);
    let s1 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4000).into());
    let s2 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4001).into());
    let wan = p.site.router.as_ref().unwrap().1;
    assert_eq!(s1.ip(), std::net::IpAddr::V4(wan));
    assert_ne!(s1.port(), s2.port(), "endpoint-dependent mapping");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_full_cone_admits_any_source() {
    let mut p = build("kind_fullcone", NatKind::FullCone);
    let s1 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4000).into());
    let wan = p.site.router.as_ref().unwrap().1;
    assert_eq!(s1, SocketAddr::from((wan, 40000)));
    assert!(unsolicited_arrives(&mut p, s1));
}

fn upnpc(site: &Site, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", site.host.namespace(), "upnpc"])
        .args(args)
        .output()
        .expect("run upnpc");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// `upnpc -a` from the host: returns upnpc's output and whether it worked.
/// miniupnpd may call itself "not connected" (DESIGN.md §4), so the IGD is
/// found by discovery and then used by its URL (`-u`).
fn upnpc_add(site: &Site, port: u16) -> (String, bool) {
    upnpc_add_lease(site, port, 60)
}

fn upnpc_add_lease(site: &Site, port: u16, lease: u32) -> (String, bool) {
    let disc = upnpc(site, &["-m", "eth0", "-s"]);
    let url = disc
        .lines()
        .find_map(|l| l.trim().strip_prefix("desc: "))
        .unwrap_or_else(|| panic!("no IGD found by SSDP:\n{disc}"))
        .trim()
        .to_string();
    let ip = site.addr.to_string();
    let p = port.to_string();
    let lease = lease.to_string();
    let text = upnpc(site, &["-u", &url, "-a", &ip, &p, &p, "UDP", &lease]);
    let ok = text.contains("is redirected to internal");
    (text, ok)
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_easy_upnp_maps_a_port_with_miniupnpd() {
    let mut p = build("kind_upnp", NatKind::EasyUpnp);
    // Before the mapping, the server cannot get in.
    let wan = p.site.router.as_ref().unwrap().1;
    let ext = SocketAddr::from((wan, 40000));
    assert!(!unsolicited_arrives(&mut p, ext));
    let (text, ok) = upnpc_add(&p.site, 40000);
    assert!(ok, "miniupnpd refused the mapping:\n{text}");
    assert!(
        unsolicited_arrives(&mut p, ext),
        "mapped port not reachable"
    );
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_double_nat_refuses_upnp_mappings() {
    let mut p = build("kind_double", NatKind::DoubleNat);
    let s1 = seen_from(&mut p.a, 40000, &mut p.s, (p.srv_ip, 4000).into());
    assert_eq!(s1.ip(), std::net::IpAddr::V4(p.site.public_addr));
    let (text, ok) = upnpc_add(&p.site, 40000);
    assert!(!ok, "miniupnpd behind a second NAT should refuse:\n{text}");
    assert!(text.contains("501") || text.contains("failed"), "{text}");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_kind_easy_upnp_expires_a_lease_nobody_renews() {
    // The control for nat_traversal's renewal test: miniupnpd does remove a
    // mapping whose lease ran out.
    let p = build("kind_upnp_lease", NatKind::EasyUpnp);
    let (text, ok) = upnpc_add_lease(&p.site, 40000, 3);
    assert!(ok, "{text}");
    let router = p.site.router.as_ref().unwrap().0.clone();
    let listed = || router.miniupnpd_forwards(40000);
    assert!(listed());
    assert!(
        netlab::lab::wait_until(Duration::from_secs(20), || !listed()),
        "miniupnpd kept an expired mapping"
    );
}
