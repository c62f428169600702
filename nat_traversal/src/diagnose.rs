//! A diagnosis of this host's NAT a person can read: which addresses STUN
//! servers see, how the NAT maps and filters, whether a UPnP gateway maps
//! ports, whether the NAT hairpins, and a verdict on which peers hole
//! punching can reach. `nat_check` prints it; a program (the crust
//! `Service`) can make the same one with [`diagnose`].
//!
//! The verdict is a pure function of what was learned ([`verdict`]), so it
//! is tested for every NAT kind without a network:
//!
//! ```
//! use nat_traversal::diagnose::{verdict, Verdict};
//! use nat_traversal::{Filtering, Mapping, NatBehaviour};
//! let nat = NatBehaviour { mapping: Mapping::EndpointDependent, filtering: Filtering::AddressAndPortDependent };
//! let v = verdict(nat, false, true);
//! assert_eq!(v, Verdict::Hard);
//! assert_eq!(v.kind(), "hard");
//! assert!(v.to_string().starts_with("hard NAT"));
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::portmap::IgdOutcome;
use crate::rendezvous::{Filtering, Mapping, NatBehaviour};
use crate::{MappedTcpSocket, MappedUdpSocket, MappingContext, MappingOptions, Result};

/// Who can reach this host, in one word ([`kind`](Verdict::kind)) and one
/// sentence (`Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Reachable by every kind of peer: no NAT and no filter, or a UPnP
    /// port mapping.
    Open,
    /// No NAT, but inbound filtering unknown or restricted.
    NoNatFiltered,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, restricted filtering.
    Easy,
    /// Endpoint-dependent mapping (symmetric NAT).
    Hard,
    /// No STUN server answered.
    NoAnswer,
    /// The mapping behaviour could not be told.
    Unknown,
}

impl Verdict {
    /// The one-word kind, as `nat_check --json` prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Open => "open",
            Verdict::NoNatFiltered => "no-nat-filtered",
            Verdict::FullCone => "full-cone",
            Verdict::Easy => "easy",
            Verdict::Hard => "hard",
            Verdict::NoAnswer | Verdict::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Open => "peers of every kind can reach this host directly (no NAT and nothing filters, or a UPnP port mapping)",
            Verdict::NoNatFiltered => "no NAT; inbound filtering unknown or restricted: peers behind easy, full-cone or no NAT after punching",
            Verdict::FullCone => "full-cone NAT: after a rendezvous every kind of peer can reach this host, even behind a hard NAT",
            Verdict::Easy => "easy NAT (endpoint-independent mapping, restricted filtering): peers with no NAT, full-cone or easy NATs can be reached by hole punching; peers behind hard (symmetric) NATs cannot",
            Verdict::Hard => "hard NAT (a new port per destination): only peers with no NAT, a full-cone NAT or a UPnP mapping can be reached; easy and hard NAT peers cannot",
            Verdict::NoAnswer => "no STUN server answered: cannot tell how peers see this host; give STUN servers that are reachable",
            Verdict::Unknown => "mapping behaviour unknown: it takes two STUN servers on different IPs, or one RFC 5780 server",
        })
    }
}

/// The verdict from what was learned: the NAT's behaviour, whether a UPnP
/// gateway mapped our port, and whether any STUN server answered.
pub fn verdict(nat: NatBehaviour, igd_mapped: bool, answered: bool) -> Verdict {
    if igd_mapped {
        return Verdict::Open;
    }
    if !answered {
        return Verdict::NoAnswer;
    }
    match (nat.mapping, nat.filtering) {
        (Mapping::NoNat, Filtering::EndpointIndependent) => Verdict::Open,
        (Mapping::NoNat, _) => Verdict::NoNatFiltered,
        (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => Verdict::FullCone,
        (Mapping::EndpointIndependent, _) => Verdict::Easy,
        (Mapping::EndpointDependent, _) => Verdict::Hard,
        (Mapping::Unknown, _) => Verdict::Unknown,
    }
}

/// What [`diagnose`] uses.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DiagnoseOptions {
    /// The STUN servers to ask (two on different IPs, or one RFC 5780
    /// server, tell the mapping kind). No built-in list.
    pub stun_servers: Vec<SocketAddr>,
    /// Whether to look for a UPnP gateway (SSDP on the local network).
    pub igd: bool,
    /// The local address to send from.
    pub local_ip: Option<IpAddr>,
}

/// Chainable setters, one per field: start from
/// `DiagnoseOptions::default()` (no server, no UPnP, any address).
///
/// ```
/// let o = nat_traversal::diagnose::DiagnoseOptions::default().igd(true);
/// assert!(o.igd);
/// ```
impl DiagnoseOptions {
    /// Sets [`stun_servers`](DiagnoseOptions::stun_servers).
    pub fn stun_servers(mut self, stun_servers: Vec<SocketAddr>) -> Self {
        self.stun_servers = stun_servers;
        self
    }

    /// Sets [`igd`](DiagnoseOptions::igd).
    pub fn igd(mut self, igd: bool) -> Self {
        self.igd = igd;
        self
    }

    /// Sets [`local_ip`](DiagnoseOptions::local_ip).
    pub fn local_ip(mut self, local_ip: Option<IpAddr>) -> Self {
        self.local_ip = local_ip;
        self
    }
}

/// One STUN server's view of us: the address it saw, or why not.
pub type StunView = (SocketAddr, std::result::Result<SocketAddr, String>);

/// A diagnosis (see the [module docs](self)); `Display` gives the text
/// `nat_check` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// Our own addresses (not NAT mappings).
    pub local_addresses: Vec<IpAddr>,
    /// Each STUN server's view over UDP, in the order given.
    pub stun_udp: Vec<StunView>,
    /// Each STUN server's view over TCP.
    pub stun_tcp: Vec<StunView>,
    /// The NAT's mapping and filtering (UDP).
    pub nat: NatBehaviour,
    /// Whether a gateway was looked for.
    pub igd_searched: bool,
    /// The gateway's control address, if one was found.
    pub gateway: Option<SocketAddr>,
    /// What the gateway did with a test mapping.
    pub igd: IgdOutcome,
    /// Whether the test mapping was removed again (`None`: none was made).
    pub test_mapping_removed: Option<std::result::Result<(), String>>,
    /// Whether a datagram to our own mapped address comes back (`None`: no
    /// NAT mapping seen, not tested).
    pub hairpinning: Option<bool>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Diagnosis {
    /// The UPnP outcome in one word: `not-searched`, `none`, `mapped`,
    /// `double-nat`, `refusing-gateway` or `failed`.
    pub fn igd_kind(&self) -> &'static str {
        match &self.igd {
            IgdOutcome::NoGateway if !self.igd_searched => "not-searched",
            IgdOutcome::NoGateway => "none",
            IgdOutcome::Mapped { .. } => "mapped",
            IgdOutcome::DoubleNat { .. } => "double-nat",
            IgdOutcome::Refused { .. } => "refusing-gateway",
            _ => "failed",
        }
    }

    /// The UPnP outcome in a sentence.
    pub fn igd_text(&self) -> String {
        match &self.igd {
            IgdOutcome::NoGateway if !self.igd_searched => "not looked for (--no-igd)".into(),
            IgdOutcome::NoGateway => "no UPnP gateway answered".into(),
            other => other.to_string(),
        }
    }
}

fn view(v: &std::result::Result<SocketAddr, String>) -> String {
    match v {
        Ok(a) => a.to_string(),
        Err(e) => format!("no answer ({e})"),
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locals: Vec<String> = self.local_addresses.iter().map(|a| a.to_string()).collect();
        writeln!(
            f,
            "local addresses: {}",
            if locals.is_empty() {
                "none found".into()
            } else {
                locals.join(", ")
            }
        )?;
        if self.stun_udp.is_empty() {
            writeln!(
                f,
                "STUN: no server given (use --stun HOST:PORT; there is no built-in list)"
            )?;
        }
        for (s, v) in &self.stun_udp {
            writeln!(f, "STUN {s} (UDP) sees us as {}", view(v))?;
        }
        for (s, v) in &self.stun_tcp {
            writeln!(f, "STUN {s} (TCP) sees us as {}", view(v))?;
        }
        writeln!(
            f,
            "mapping behaviour: {}",
            match self.nat.mapping {
                Mapping::NoNat => "no NAT (servers see our own address)",
                Mapping::EndpointIndependent =>
                    "endpoint-independent (one external port for every destination)",
                Mapping::EndpointDependent =>
                    "endpoint-dependent (a new external port per destination)",
                Mapping::Unknown =>
                    "unknown (needs two STUN servers on different IPs, or one RFC 5780 server)",
            }
        )?;
        writeln!(
            f,
            "filtering behaviour: {}",
            match self.nat.filtering {
                Filtering::EndpointIndependent =>
                    "endpoint-independent (anyone may send to a mapping)",
                Filtering::AddressDependent => "address-dependent (only hosts we sent to)",
                Filtering::AddressAndPortDependent =>
                    "address-and-port-dependent (only the exact host and port we sent to)",
                Filtering::Unknown => "unknown (needs an RFC 5780 STUN server)",
            }
        )?;
        match &self.gateway {
            Some(g) => writeln!(f, "UPnP gateway: {g}: {}", self.igd_text())?,
            None => writeln!(f, "UPnP gateway: {}", self.igd_text())?,
        }
        match &self.test_mapping_removed {
            Some(Ok(())) => writeln!(f, "UPnP test mapping: removed again")?,
            Some(Err(e)) => writeln!(f, "UPnP test mapping: could not be removed: {e}")?,
            None => {}
        }
        match self.hairpinning {
            Some(true) => writeln!(f, "hairpinning: yes (our own mapped address reaches us)")?,
            Some(false) => writeln!(f, "hairpinning: no")?,
            None => writeln!(f, "hairpinning: not tested (no NAT mapping seen)")?,
        }
        write!(f, "verdict: {}", self.verdict)
    }
}

/// Whether a datagram sent to our own mapped address comes back in (at
/// most 1 s).
fn hairpin(socket: &UdpSocket, mapped: SocketAddr) -> bool {
    let ip = socket
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let Ok(other) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
        return false;
    };
    let token: [u8; 16] = rand::random();
    if other.send_to(&token, mapped).is_err() {
        return false;
    }
    let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && buf[..n] == token
        {
            return true;
        }
    }
    false
}

fn views(servers: &[SocketAddr], seen: &[(SocketAddr, Result<SocketAddr>)]) -> Vec<StunView> {
    servers
        .iter()
        .map(|s| {
            let v = seen
                .iter()
                .find(|(srv, _)| srv == s)
                .map(|(_, r)| r.as_ref().map(|a| *a).map_err(|e| e.to_string()))
                .unwrap_or_else(|| Err("not asked".into()));
            (*s, v)
        })
        .collect()
}

/// Diagnoses this host's NAT (blocking): maps a UDP socket (with the
/// RFC 5780 tests and, if `opts.igd`, a UPnP test mapping that is removed
/// again), maps a TCP socket (no UPnP), tests hairpinning, and gives the
/// verdict. Every wait is bounded (each STUN transaction by its timeout,
/// the gateway's requests by 5 s, hairpinning by 1 s).
///
/// ```
/// use nat_traversal::diagnose::{diagnose, DiagnoseOptions, Verdict};
/// // No server and no UPnP: nothing answers, and the verdict says so.
/// let d = diagnose(&DiagnoseOptions::default().local_ip(Some("127.0.0.1".parse().unwrap()))).unwrap();
/// assert_eq!(d.verdict, Verdict::NoAnswer);
/// ```
pub fn diagnose(opts: &DiagnoseOptions) -> Result<Diagnosis> {
    let mc = MappingContext::with_options(
        MappingOptions::default()
            .stun_servers(opts.stun_servers.clone())
            .igd(opts.igd)
            .local_ip(opts.local_ip),
    )?;
    let gateway = mc.igd().map(|g| g.addr());
    let udp = MappedUdpSocket::new(&mc)?;
    // TCP: no UPnP (the UDP test mapping is enough to judge the gateway).
    let mc_tcp = MappingContext::with_options(
        MappingOptions::default()
            .stun_servers(opts.stun_servers.clone())
            .igd(false)
            .local_ip(opts.local_ip),
    );
    let tcp = mc_tcp.and_then(|m| MappedTcpSocket::new(&m));
    let igd_external = udp.igd.as_ref().map(|m| m.external());
    let mut local_addresses: Vec<IpAddr> = Vec::new();
    for e in &udp.endpoints {
        if !e.nat_restricted
            && Some(e.addr) != igd_external
            && !local_addresses.contains(&e.addr.ip())
        {
            local_addresses.push(e.addr.ip());
        }
    }
    let stun_udp = views(&opts.stun_servers, &udp.stun_seen);
    let stun_tcp = match &tcp {
        Ok(t) => views(&opts.stun_servers, &t.stun_seen),
        Err(e) => opts
            .stun_servers
            .iter()
            .map(|s| (*s, Err(e.to_string())))
            .collect(),
    };
    let mapped = udp
        .endpoints
        .iter()
        .find(|e| e.nat_restricted)
        .map(|e| e.addr);
    let hairpinning = mapped.map(|m| hairpin(&udp.socket, m));
    let answered = stun_udp.iter().any(|(_, v)| v.is_ok());
    let igd_mapped = matches!(udp.igd_outcome, IgdOutcome::Mapped { .. });
    let test_mapping_removed = udp.igd.map(|m| m.remove().map_err(|e| e.to_string()));
    Ok(Diagnosis {
        local_addresses,
        stun_udp,
        stun_tcp,
        nat: udp.nat,
        igd_searched: opts.igd,
        gateway,
        igd: udp.igd_outcome,
        test_mapping_removed,
        hairpinning,
        verdict: verdict(udp.nat, igd_mapped, answered),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(mapping: Mapping, filtering: Filtering) -> NatBehaviour {
        NatBehaviour { mapping, filtering }
    }

    #[test]
    fn the_verdict_for_each_nat_kind() {
        use Filtering as F;
        use Mapping as M;
        for (m, f, want) in [
            (M::NoNat, F::EndpointIndependent, Verdict::Open),
            (M::NoNat, F::Unknown, Verdict::NoNatFiltered),
            (M::NoNat, F::AddressAndPortDependent, Verdict::NoNatFiltered),
            (
                M::EndpointIndependent,
                F::EndpointIndependent,
                Verdict::FullCone,
            ),
            (M::EndpointIndependent, F::AddressDependent, Verdict::Easy),
            (
                M::EndpointIndependent,
                F::AddressAndPortDependent,
                Verdict::Easy,
            ),
            (M::EndpointIndependent, F::Unknown, Verdict::Easy),
            (
                M::EndpointDependent,
                F::AddressAndPortDependent,
                Verdict::Hard,
            ),
            (M::EndpointDependent, F::EndpointIndependent, Verdict::Hard),
            (M::Unknown, F::Unknown, Verdict::Unknown),
        ] {
            assert_eq!(verdict(nat(m, f), false, true), want, "{m:?}/{f:?}");
            // A UPnP mapping opens any NAT.
            assert_eq!(verdict(nat(m, f), true, true), Verdict::Open);
            // No answer: unknown, whatever else.
            assert_eq!(verdict(nat(m, f), false, false), Verdict::NoAnswer);
        }
        // A UPnP mapping without any STUN answer still opens.
        assert_eq!(
            verdict(nat(M::Unknown, F::Unknown), true, false),
            Verdict::Open
        );
        assert_eq!(Verdict::NoAnswer.kind(), "unknown");
        assert_eq!(Verdict::NoNatFiltered.kind(), "no-nat-filtered");
        assert_eq!(Verdict::FullCone.kind(), "full-cone");
    }

    fn sample() -> Diagnosis {
        Diagnosis {
            local_addresses: vec!["10.0.0.2".parse().unwrap()],
            stun_udp: vec![(
                "203.0.113.1:3478".parse().unwrap(),
                Ok("198.51.100.9:4000".parse().unwrap()),
            )],
            stun_tcp: vec![("203.0.113.1:3478".parse().unwrap(), Err("timed out".into()))],
            nat: nat(
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
            ),
            igd_searched: true,
            gateway: Some("10.0.0.1:5000".parse().unwrap()),
            igd: IgdOutcome::Refused {
                reason: "501".into(),
            },
            test_mapping_removed: None,
            hairpinning: Some(false),
            verdict: Verdict::Easy,
        }
    }

    #[test]
    fn the_report_reads_as_nat_check_prints_it() {
        let d = sample();
        assert_eq!(d.igd_kind(), "refusing-gateway");
        let text = d.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "local addresses: 10.0.0.2");
        assert_eq!(
            lines[1],
            "STUN 203.0.113.1:3478 (UDP) sees us as 198.51.100.9:4000"
        );
        assert_eq!(
            lines[2],
            "STUN 203.0.113.1:3478 (TCP) sees us as no answer (timed out)"
        );
        assert!(lines[3].starts_with("mapping behaviour: endpoint-independent"));
        assert!(lines[4].starts_with("filtering behaviour: address-and-port-dependent"));
        assert!(lines[5].starts_with("UPnP gateway: 10.0.0.1:5000: the UPnP gateway refuses"));
        assert_eq!(lines[6], "hairpinning: no");
        assert!(lines[7].starts_with("verdict: easy NAT"));
        assert_eq!(lines.len(), 8);
        let mut d = sample();
        d.igd = IgdOutcome::NoGateway;
        d.igd_searched = false;
        d.gateway = None;
        d.stun_udp.clear();
        assert_eq!(d.igd_kind(), "not-searched");
        let text = d.to_string();
        assert!(text.contains("UPnP gateway: not looked for (--no-igd)"));
        assert!(text.contains("STUN: no server given"));
    }
}
