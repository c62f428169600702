//! Which interfaces a beacon sends on, and whom it listens to.
//!
//! Pure functions over an interface list (from `if-addrs`), so the choice is
//! tested without touching the host's network.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use if_addrs::{IfAddr, Interface};

/// An IPv4 interface address a beacon broadcasts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct V4Target {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) netmask: Ipv4Addr,
    pub(crate) broadcast: Ipv4Addr,
}

/// An interface a beacon joins the IPv6 group on and multicasts to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct V6Target {
    pub(crate) name: String,
    pub(crate) index: u32,
    /// The interface's IPv6 addresses with their prefix length.
    pub(crate) addrs: Vec<(Ipv6Addr, u8)>,
}

/// Where a beacon sends, recomputed from the interface list now and then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    pub(crate) v4: Vec<V4Target>,
    pub(crate) v6: Vec<V6Target>,
}

/// Picks the targets among `ifaces`: interfaces that are up (running) and,
/// when `only` is `Some`, named in it.
///
/// - IPv4: each address's broadcast address, or the subnet's directed
///   broadcast address when the reported one is not a broadcast address of the
///   subnet (an address added without `brd` reports itself); for loopback,
///   which has no broadcast flag, the directed broadcast (127.255.255.255 for
///   127.0.0.1/8), so beacons on one host hear each other. Interfaces without
///   the broadcast flag (point-to-point) and /31, /32 subnets are skipped.
/// - IPv6: every interface with an IPv6 address and an index, except loopback
///   (Linux cannot send multicast on `lo`).
pub(crate) fn select(
    ifaces: &[Interface],
    only: Option<&[String]>,
    ipv4: bool,
    ipv6: bool,
) -> Targets {
    let wanted = |i: &Interface| i.is_oper_up() && only.is_none_or(|names| names.contains(&i.name));
    let mut v4 = BTreeSet::new();
    let mut v6: Vec<V6Target> = Vec::new();
    for i in ifaces.iter().filter(|i| wanted(i)) {
        match &i.addr {
            IfAddr::V4(a) if ipv4 => {
                let mask = u32::from(a.netmask);
                let directed = Ipv4Addr::from(u32::from(a.ip) | !mask);
                let in_subnet = |b: Ipv4Addr| u32::from(b) & mask == u32::from(a.ip) & mask;
                let broadcast = match a.broadcast {
                    _ if a.prefixlen >= 31 => None,
                    // An address added without `brd` reports its own address
                    // (or nothing useful) as broadcast; the kernel still routes
                    // the subnet's directed broadcast.
                    Some(b) if b != a.ip && in_subnet(b) => Some(b),
                    Some(_) => Some(directed),
                    None if a.ip.is_loopback() => Some(directed),
                    None => None,
                };
                if let Some(broadcast) = broadcast {
                    v4.insert(V4Target {
                        name: i.name.clone(),
                        ip: a.ip,
                        netmask: a.netmask,
                        broadcast,
                    });
                }
            }
            IfAddr::V6(a) if ipv6 && !a.ip.is_loopback() && !i.is_p2p() => {
                let Some(index) = i.index else { continue };
                match v6.iter_mut().find(|t| t.index == index) {
                    Some(t) => t.addrs.push((a.ip, a.prefixlen)),
                    None => v6.push(V6Target {
                        name: i.name.clone(),
                        index,
                        addrs: vec![(a.ip, a.prefixlen)],
                    }),
                }
            }
            _ => {}
        }
    }
    v6.sort();
    Targets {
        v4: v4.into_iter().collect(),
        v6,
    }
}

impl Targets {
    /// The distinct IPv4 broadcast addresses.
    pub(crate) fn broadcasts(&self) -> Vec<Ipv4Addr> {
        let set: BTreeSet<Ipv4Addr> = self.v4.iter().map(|t| t.broadcast).collect();
        set.into_iter().collect()
    }

    /// Whether a datagram from `from` came from one of our interfaces' links,
    /// for a beacon restricted to some interfaces: an IPv4 source in one of
    /// their subnets, or an IPv6 source whose scope is one of them (link-local)
    /// or that lies in one of their prefixes.
    pub(crate) fn accepts(&self, from: SocketAddr) -> bool {
        match from {
            SocketAddr::V4(a) => self.v4.iter().any(|t| {
                let mask = u32::from(t.netmask);
                u32::from(*a.ip()) & mask == u32::from(t.ip) & mask
            }),
            SocketAddr::V6(a) => {
                if let Some(v4) = a.ip().to_ipv4_mapped() {
                    return self.accepts(SocketAddr::new(IpAddr::V4(v4), a.port()));
                }
                if a.scope_id() != 0 {
                    return self.v6.iter().any(|t| t.index == a.scope_id());
                }
                self.v6.iter().any(|t| {
                    t.addrs
                        .iter()
                        .any(|(ip, len)| same_prefix(*ip, *a.ip(), *len))
                })
            }
        }
    }
}

fn same_prefix(a: Ipv6Addr, b: Ipv6Addr, len: u8) -> bool {
    let len = u32::from(len.min(128));
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - len);
    u128::from(a) & mask == u128::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use if_addrs::{IfOperStatus, Ifv4Addr, Ifv6Addr};
    use std::net::SocketAddrV6;

    fn v4(name: &str, index: u32, ip: [u8; 4], prefix: u8, bcast: bool, up: bool) -> Interface {
        let ip = Ipv4Addr::from(ip);
        let netmask = Ipv4Addr::from(if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        });
        Interface {
            name: name.into(),
            addr: IfAddr::V4(Ifv4Addr {
                ip,
                netmask,
                prefixlen: prefix,
                broadcast: bcast.then(|| Ipv4Addr::from(u32::from(ip) | !u32::from(netmask))),
            }),
            index: Some(index),
            oper_status: if up {
                IfOperStatus::Up
            } else {
                IfOperStatus::Unknown
            },
            is_p2p: false,
        }
    }

    fn v6(name: &str, index: u32, ip: &str, prefix: u8) -> Interface {
        Interface {
            name: name.into(),
            addr: IfAddr::V6(Ifv6Addr {
                ip: ip.parse().unwrap(),
                netmask: Ipv6Addr::UNSPECIFIED,
                prefixlen: prefix,
                broadcast: None,
            }),
            index: Some(index),
            oper_status: IfOperStatus::Up,
            is_p2p: false,
        }
    }

    fn host() -> Vec<Interface> {
        vec![
            v4("lo", 1, [127, 0, 0, 1], 8, false, true),
            v6("lo", 1, "::1", 128),
            v4("eth0", 2, [192, 0, 2, 2], 24, true, true),
            v6("eth0", 2, "fd00::2", 64),
            v6("eth0", 2, "fe80::1", 64),
            v4("eth1", 3, [198, 51, 100, 9], 27, true, false),
            v4("tun0", 4, [203, 0, 113, 1], 32, false, true),
        ]
    }

    #[test]
    fn all_interfaces() {
        let t = select(&host(), None, true, true);
        assert_eq!(
            t.broadcasts(),
            vec![
                Ipv4Addr::new(127, 255, 255, 255),
                Ipv4Addr::new(192, 0, 2, 255)
            ]
        );
        assert_eq!(t.v6.len(), 1);
        assert_eq!(t.v6[0].index, 2);
        assert_eq!(t.v6[0].addrs.len(), 2);
    }

    #[test]
    fn loopback_only() {
        let only = vec!["lo".to_string()];
        let t = select(&host(), Some(&only), true, true);
        assert_eq!(t.broadcasts(), vec![Ipv4Addr::new(127, 255, 255, 255)]);
        assert!(t.v6.is_empty());
        assert!(t.accepts("127.0.0.1:5".parse().unwrap()));
        assert!(!t.accepts("192.0.2.7:5".parse().unwrap()));
        assert!(!t.accepts("[fe80::9%2]:5".parse().unwrap()));
    }

    #[test]
    fn families_can_be_turned_off() {
        assert!(select(&host(), None, false, true).v4.is_empty());
        assert!(select(&host(), None, true, false).v6.is_empty());
    }

    #[test]
    fn accepts_by_subnet_scope_and_prefix() {
        let only = vec!["eth0".to_string()];
        let t = select(&host(), Some(&only), true, true);
        assert!(t.accepts("192.0.2.200:1".parse().unwrap()));
        assert!(!t.accepts("192.0.3.1:1".parse().unwrap()));
        assert!(t.accepts(SocketAddr::V6(SocketAddrV6::new(
            "fe80::77".parse().unwrap(),
            1,
            0,
            2
        ))));
        assert!(!t.accepts(SocketAddr::V6(SocketAddrV6::new(
            "fe80::77".parse().unwrap(),
            1,
            0,
            3
        ))));
        assert!(t.accepts("[fd00::abcd]:1".parse().unwrap()));
        assert!(!t.accepts("[fd01::abcd]:1".parse().unwrap()));
        assert!(t.accepts("[::ffff:192.0.2.9]:1".parse().unwrap()));
    }

    #[test]
    fn address_without_brd_uses_directed_broadcast() {
        let mut i = v4("eth0", 2, [198, 51, 100, 1], 27, true, true);
        if let IfAddr::V4(a) = &mut i.addr {
            a.broadcast = Some(a.ip); // what if-addrs reports without `brd`
        }
        let t = select(&[i], None, true, false);
        assert_eq!(t.broadcasts(), vec![Ipv4Addr::new(198, 51, 100, 31)]);
        // /32 (e.g. a tunnel address) has no broadcast.
        let t = select(
            &[v4("tun0", 4, [203, 0, 113, 1], 32, true, true)],
            None,
            true,
            false,
        );
        assert!(t.broadcasts().is_empty());
    }

    #[test]
    fn down_interface_is_skipped_then_used_when_up() {
        let mut ifs = host();
        let t = select(&ifs, None, true, false);
        assert!(!t.broadcasts().contains(&Ipv4Addr::new(198, 51, 100, 31)));
        ifs[5].oper_status = IfOperStatus::Up;
        let t = select(&ifs, None, true, false);
        assert!(t.broadcasts().contains(&Ipv4Addr::new(198, 51, 100, 31)));
    }
}
