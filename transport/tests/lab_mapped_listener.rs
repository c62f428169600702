//! Network lab: a listener with a mapping context behind a UPnP router
//! lists its local, STUN-learned (NAT-restricted) and UPnP-mapped endpoints
//! for TCP and uTP; the UPnP mappings are in miniupnpd's table while the
//! listener lives (renewed past their lease) and gone once it is dropped.
//! Run with `CRUST_LAB=1` as
//! root (see `.ci/run`).

use std::path::Path;
use std::time::Duration;

use netlab::lab::{Helper, Host, Lab, NatKind};

const T: Duration = Duration::from_secs(20);

fn agent(host: &Host) -> Helper {
    host.spawn(Path::new(env!("CARGO_BIN_EXE_transport_lab_agent")), &[])
        .expect("start agent")
}

fn cmd(h: &mut Helper, line: &str) -> String {
    h.send_line(line).expect("send to agent");
    h.recv_line(T).expect("agent answer")
}

/// The ports miniupnpd forwards (its nft chain), as text.
fn upnp_rules(router: &Host) -> String {
    router.miniupnpd_rules().unwrap()
}

/// Whether the rules forward `port` (`dport PORT`, not a longer number).
fn forwards(rules: &str, port: &str) -> bool {
    netlab::lab::forwards_port(rules, port.parse().expect("a port number"))
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_mapped_listener_upnp_mappings_live_with_the_listener() {
    let lab = Lab::new("mapped_listener").expect("build lab");
    let (stun_host, stun_ip) = lab.public_host("stun").unwrap();
    let mut server = agent(&stun_host);
    let stun = format!("{stun_ip}:3478");
    assert_eq!(cmd(&mut server, &format!("stun-server {stun}")), "ready");
    let site = lab
        .site("a", NatKind::EasyUpnp, Default::default())
        .unwrap();
    let (router, wan) = site.router.as_ref().unwrap().clone();
    let mut a = agent(&site.host);
    let r = cmd(&mut a, &format!("listen {stun} igd"));
    assert!(r.starts_with("listening "), "{r}");
    let eps: Vec<&str> = r.trim_start_matches("listening eps=").split(',').collect();
    let rules = upnp_rules(&router);
    for proto in ["tcp", "utp"] {
        // Local (not restricted) and UPnP (public; the STUN-seen address,
        // restricted, is the same one when the NAT keeps the port, and is
        // then listed once, as public).
        assert!(
            eps.iter()
                .any(|e| e.starts_with(&format!("{proto}://{}:", site.addr)) && !e.ends_with('r')),
            "{proto}: no local endpoint in {r}"
        );
        let upnp: Vec<&str> = eps
            .iter()
            .filter(|e| e.starts_with(&format!("{proto}://{wan}:")) && !e.ends_with('r'))
            .copied()
            .collect();
        assert_eq!(upnp.len(), 1, "{proto}: one UPnP endpoint expected in {r}");
        let restricted = eps
            .iter()
            .filter(|e| e.starts_with(&format!("{proto}://{wan}:")) && e.ends_with('r'))
            .count();
        assert!(restricted <= 1, "{r}");
        let port = upnp[0].rsplit(':').next().unwrap();
        assert!(
            forwards(&rules, port),
            "{proto} mapping of port {port} not in miniupnpd's table: {rules}"
        );
    }
    let ports: Vec<String> = eps
        .iter()
        .filter(|e| e.contains(&format!("://{wan}:")) && !e.ends_with('r'))
        .map(|e| e.rsplit(':').next().unwrap().to_string())
        .collect();
    assert_eq!(cmd(&mut a, "drop"), "dropped");
    let rules = upnp_rules(&router);
    for port in &ports {
        assert!(
            !forwards(&rules, port),
            "mapping of port {port} left after the listener dropped: {rules}"
        );
    }
    assert_eq!(cmd(&mut a, "quit"), "bye");
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_mapped_listener_upnp_lease_is_renewed_while_it_lives() {
    let lab = Lab::new("mapped_listener_lease").expect("build lab");
    let site = lab
        .site("a", NatKind::EasyUpnp, Default::default())
        .unwrap();
    let (router, wan) = site.router.as_ref().unwrap().clone();
    let mut a = agent(&site.host);
    // No STUN server: the UPnP mapping alone, with a 3 s lease.
    let r = cmd(&mut a, "listen - igd lease=3");
    let ports: Vec<String> = r
        .trim_start_matches("listening eps=")
        .split(',')
        .filter(|e| e.contains(&format!("://{wan}:")) && !e.ends_with('r'))
        .map(|e| e.rsplit(':').next().unwrap().to_string())
        .collect();
    assert_eq!(ports.len(), 2, "a TCP and a uTP mapping expected: {r}");
    // Three leases later both are still there: they were renewed.
    std::thread::sleep(Duration::from_secs(9));
    let rules = upnp_rules(&router);
    for port in &ports {
        assert!(
            forwards(&rules, port),
            "mapping of {port} expired although in use: {rules}"
        );
    }
    assert_eq!(cmd(&mut a, "drop"), "dropped");
    let rules = upnp_rules(&router);
    for port in &ports {
        assert!(
            !forwards(&rules, port),
            "mapping of {port} left after drop: {rules}"
        );
    }
    assert_eq!(cmd(&mut a, "quit"), "bye");
}
