//! Network-namespace lab: real kernel NATs, `miniupnpd`, `coturn`.
//!
//! Lab tests run only when [`ENABLE_ENV`] is set to `1` (as root, with the
//! packages `.ci/run` installs: `iproute2`, `nftables`, `conntrack`, `miniupnpd`,
//! `miniupnpc`, `coturn`). Without it they are `#[ignore]`d with the reason
//! [`IGNORE_REASON`], and [`Lab::new`] panics with a clear message if one is
//! run anyway.
//!
//! # Design
//!
//! - Every lab object lives in a network namespace whose name starts with
//!   `crl<pid>-<n>-`, unique per process and per [`Lab`], so tests run in
//!   parallel. Nothing is created in the host's namespace: a bridge
//!   ([`Segment`]) lives in its own "switch" namespace and every veth pair is
//!   created directly between two lab namespaces.
//! - Dropping the [`Lab`] (also while a test panics) kills every process still
//!   running in its namespaces (helpers and daemons), then deletes the
//!   namespaces, which removes their interfaces. Namespaces left by a process
//!   that died without unwinding are removed by the next [`Lab::new`]
//!   (setup is idempotent).
//! - A tokio worker does not follow `setns`, so a program runs in a lab host as
//!   its own process: [`Host::spawn`] starts `ip netns exec NS <program>` and
//!   returns a [`Helper`] driven by lines over its stdin and stdout.
//! - Addresses come only from the documentation ranges 192.0.2.0/24,
//!   198.51.100.0/24 and 203.0.113.0/24 ([`Subnet`] refuses others). IPv6
//!   addresses (2001:db8::/32) are added with `nodad` and DAD is off.
//!
//! # Address plan of [`Lab::site`]
//!
//! | segment | subnet |
//! |---|---|
//! | the internet ([`Lab::internet`]) | 203.0.113.0/25 |
//! | LAN of site k | 192.0.2.(32k)/27, router at .1 |
//! | middle segment of a double NAT | 198.51.100.(32k)/27 |
//!
//! # Example
//!
//! ```no_run
//! use netlab::lab::{Lab, NatKind, SiteOptions};
//! let lab = Lab::new("example").unwrap();
//! let a = lab.site("a", NatKind::Easy, SiteOptions::default()).unwrap();
//! let server = lab.public_host("server").unwrap();
//! // ping the public host from behind the NAT
//! a.host.run(&["ping", "-c1", "-W2", &server.1.to_string()]).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable that enables the lab tests.
pub const ENABLE_ENV: &str = "CRUST_LAB";

/// Why lab tests are ignored by default.
pub const IGNORE_REASON: &str = "network lab: needs root and CRUST_LAB=1 (see .ci/run)";

/// Prefix of every namespace the lab creates.
const NS_PREFIX: &str = "crl";

/// The public segment of [`Lab::site`]: the lab's "internet".
pub const INTERNET: &str = "203.0.113.0/25";

/// The UDP port coturn listens on ([`Lab::coturn`]); it also answers on
/// `COTURN_PORT + 1` (RFC 5780 alternate port).
pub const COTURN_PORT: u16 = 3478;

/// Whether lab tests are enabled in this process (`CRUST_LAB=1`).
pub fn enabled() -> bool {
    std::env::var(ENABLE_ENV).as_deref() == Ok("1")
}

/// Panics with a clear message unless the lab is enabled and we are root.
///
/// Lab tests call this (through [`Lab::new`]) first, so running one by hand
/// without the environment fails loudly instead of half-building a lab.
pub fn require() {
    if !enabled() {
        panic!(
            "this is a network-lab test: it needs root, the packages that .ci/run installs \
             (iproute2 nftables conntrack miniupnpd miniupnpc coturn) and {ENABLE_ENV}=1 in the environment"
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!("network-lab tests need root (euid is {euid})");
    }
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Runs a command, failing with its stderr when it exits non-zero.
fn run_cmd(program: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run {program}: {e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(out)
}

fn ip(args: &[&str]) -> io::Result<Output> {
    run_cmd("ip", args)
}

/// An IPv4 subnet inside the documentation ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length (24 to 30).
    pub prefix: u8,
}

impl Subnet {
    /// The `n`th address of the subnet (1 is the first host).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    /// The number of usable host addresses.
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// Whether `addr` is inside this subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(addr) & mask == u32::from(self.base)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Subnet> {
        let bad = || err(format!("bad lab subnet {s:?}: want e.g. 192.0.2.32/27"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(24..=30).contains(&prefix) {
            return Err(bad());
        }
        let o = base.octets();
        let doc = matches!(
            (o[0], o[1], o[2]),
            (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
        );
        if !doc {
            return Err(err(format!(
                "lab subnet {s} is outside the documentation ranges \
                 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24"
            )));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(base) & !mask != 0 {
            return Err(bad());
        }
        Ok(Subnet { base, prefix })
    }
}

struct Inner {
    namespaces: Vec<String>,
    daemons: Vec<(String, Child)>,
    internet: Option<Segment>,
    coturn: Option<(Host, Ipv4Addr, Ipv4Addr)>,
    next_lan: u32,
    next_mid: u32,
    next_v6: u32,
    names: HashMap<String, u32>,
}

/// One lab: a set of namespaces, bridges and daemons torn down on drop.
pub struct Lab {
    id: String,
    dir: PathBuf,
    inner: Mutex<Inner>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab").field("id", &self.id).finish()
    }
}

/// Removes namespaces left by lab processes that are gone.
fn remove_stale_namespaces() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: u32 = match rest.split('-').next().and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => continue,
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            log::info!("lab: removing stale namespace {name}");
            kill_namespace_processes(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn kill_namespace_processes(ns: &str) {
    if let Ok(out) = ip(&["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
}

impl Lab {
    /// Creates an empty lab for the test `test` (the name only labels logs).
    ///
    /// # Panics
    ///
    /// Panics with a clear message if the lab is not enabled ([`require`]).
    pub fn new(test: &str) -> io::Result<Lab> {
        require();
        remove_stale_namespaces();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir()
            .join("crust-lab")
            .join(format!("{id}-{test}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        log::info!("lab {id} for {test} in {}", dir.display());
        Ok(Lab {
            id,
            dir,
            inner: Mutex::new(Inner {
                namespaces: Vec::new(),
                daemons: Vec::new(),
                internet: None,
                coturn: None,
                next_lan: 0,
                next_mid: 0,
                next_v6: 1,
                names: HashMap::new(),
            }),
        })
    }

    /// The directory holding this lab's config and log files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_namespace(&self, name: &str) -> io::Result<String> {
        let ns = {
            let mut inner = self.lock();
            let k = inner.names.entry(name.to_string()).or_insert(0);
            *k += 1;
            let ns = if *k == 1 {
                format!("{}-{name}", self.id)
            } else {
                format!("{}-{name}{k}", self.id)
            };
            inner.namespaces.push(ns.clone());
            ns
        };
        // Idempotent: a namespace of that name left over is replaced.
        if Path::new("/run/netns").join(&ns).exists() {
            kill_namespace_processes(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let host = Host { ns: ns.clone() };
        host.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        host.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// A new host (a namespace with only `lo` up).
    pub fn host(&self, name: &str) -> io::Result<Host> {
        Ok(Host {
            ns: self.new_namespace(name)?,
        })
    }

    /// A new segment: a bridge (in its own namespace) for `subnet`.
    pub fn segment(&self, name: &str, subnet: &str) -> io::Result<Segment> {
        let subnet: Subnet = subnet.parse()?;
        let ns = self.new_namespace(&format!("sw-{name}"))?;
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        let v6 = {
            let mut inner = self.lock();
            inner.next_v6 += 1;
            inner.next_v6
        };
        Ok(Segment {
            inner: Arc::new(SegmentInner {
                name: name.to_string(),
                ns,
                subnet,
                v6,
                next: Mutex::new(1),
            }),
        })
    }

    /// Connects `host` to `segment` with a veth named `ifname` in the host,
    /// gives it the next free address of the segment (and an IPv6 address
    /// 2001:db8:N::M/64, nodad), and brings it up.
    pub fn attach(&self, host: &Host, segment: &Segment, ifname: &str) -> io::Result<Ipv4Addr> {
        let addr = segment.next_addr()?;
        self.attach_with(host, segment, ifname, addr, true)?;
        Ok(addr)
    }

    /// Like [`Lab::attach`] but leaves the interface down (bring it up later
    /// with [`Host::set_link`]).
    pub fn attach_down(
        &self,
        host: &Host,
        segment: &Segment,
        ifname: &str,
    ) -> io::Result<Ipv4Addr> {
        let addr = segment.next_addr()?;
        self.attach_with(host, segment, ifname, addr, false)?;
        Ok(addr)
    }

    /// Connects `host` to `segment` with the given address.
    pub fn attach_with(
        &self,
        host: &Host,
        segment: &Segment,
        ifname: &str,
        addr: Ipv4Addr,
        up: bool,
    ) -> io::Result<()> {
        let s = &segment.inner;
        if !s.subnet.contains(addr) {
            return Err(err(format!("{addr} is not in segment {}", s.subnet)));
        }
        let port = {
            static PORTS: AtomicU32 = AtomicU32::new(0);
            format!("p{}", PORTS.fetch_add(1, Ordering::Relaxed))
        };
        ip(&[
            "-n", &host.ns, "link", "add", ifname, "type", "veth", "peer", "name", &port, "netns",
            &s.ns,
        ])?;
        ip(&["-n", &s.ns, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &s.ns, "link", "set", &port, "up"])?;
        let cidr = format!("{addr}/{}", s.subnet.prefix);
        ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", ifname])?;
        let host_part = u32::from(addr) - u32::from(s.subnet.base);
        let v6 = format!("2001:db8:{:x}::{:x}/64", s.v6, host_part);
        ip(&[
            "-n", &host.ns, "-6", "addr", "add", &v6, "dev", ifname, "nodad",
        ])?;
        if up {
            host.set_link(ifname, true)?;
        }
        Ok(())
    }

    /// Adds the next free address of `segment` to `host`'s interface
    /// `ifname` (already attached to it), for a host with two addresses.
    pub fn add_address(
        &self,
        host: &Host,
        segment: &Segment,
        ifname: &str,
    ) -> io::Result<Ipv4Addr> {
        let a = segment.next_addr()?;
        let cidr = format!("{a}/{}", segment.subnet().prefix);
        ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", ifname])?;
        Ok(a)
    }

    /// The lab's internet segment ([`INTERNET`]), created on first use.
    pub fn internet(&self) -> io::Result<Segment> {
        if let Some(s) = self.lock().internet.clone() {
            return Ok(s);
        }
        let s = self.segment("inet", INTERNET)?;
        self.lock().internet = Some(s.clone());
        Ok(s)
    }

    /// A host on the internet segment, with interface `eth0`; returns it and
    /// its address.
    pub fn public_host(&self, name: &str) -> io::Result<(Host, Ipv4Addr)> {
        let inet = self.internet()?;
        let h = self.host(name)?;
        let a = self.attach(&h, &inet, "eth0")?;
        Ok((h, a))
    }

    /// Starts a daemon in `host` (killed when the lab drops); its stdout and
    /// stderr go to `<lab dir>/<name>.log`.
    pub fn start_daemon(&self, host: &Host, name: &str, argv: &[&str]) -> io::Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| err(format!("cannot start {name}: {e}")))?;
        self.lock().daemons.push((name.to_string(), child));
        Ok(())
    }

    /// The log of a daemon started with [`Lab::start_daemon`].
    pub fn daemon_log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// A coturn STUN server (`turnserver --stun-only`) on the internet with
    /// two addresses, listening on [`COTURN_PORT`] and `COTURN_PORT + 1` on
    /// both (RFC 5780 capable), started on first use. Returns its host and
    /// its two addresses.
    pub fn coturn(&self) -> io::Result<(Host, Ipv4Addr, Ipv4Addr)> {
        if let Some(c) = self.lock().coturn.clone() {
            return Ok(c);
        }
        let (h, a1) = self.public_host("coturn")?;
        let inet = self.internet()?;
        let a2 = self.add_address(&h, &inet, "eth0")?;
        let pid = self.dir.join("turnserver.pid");
        let log = self.dir.join("turnserver-own.log");
        let (s1, s2, port, alt) = (
            a1.to_string(),
            a2.to_string(),
            COTURN_PORT.to_string(),
            (COTURN_PORT + 1).to_string(),
        );
        self.start_daemon(
            &h,
            "turnserver",
            &[
                "turnserver",
                "-n",
                "--stun-only",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip",
                &s1,
                "--listening-ip",
                &s2,
                "--listening-port",
                &port,
                "--alt-listening-port",
                &alt,
                "--simple-log",
                "--log-file",
                log.to_str().unwrap_or("/dev/null"),
                "--pidfile",
                pid.to_str().unwrap_or("/dev/null"),
            ],
        )?;
        let up = wait_until(Duration::from_secs(10), || {
            h.run(&["ss", "-Hlun"])
                .map(|o| o.contains(&format!("{a2}:{alt}")))
                .unwrap_or(false)
        });
        if !up {
            return Err(err(format!(
                "turnserver did not start listening: {}",
                self.daemon_log("turnserver")
            )));
        }
        let c = (h, a1, a2);
        self.lock().coturn = Some(c.clone());
        Ok(c)
    }

    /// Builds a site: one host (interface `eth0`) behind a NAT of `kind`
    /// whose WAN is on the lab's internet.
    pub fn site(&self, name: &str, kind: NatKind, opts: SiteOptions) -> io::Result<Site> {
        let inet = self.internet()?;
        if kind == NatKind::Public {
            let (host, addr) = self.public_host(name)?;
            return Ok(Site {
                kind,
                host,
                addr,
                public_addr: addr,
                router: None,
                lan: None,
                outer_router: None,
                name: name.to_string(),
            });
        }
        let (lan_k, mid_k) = {
            let mut inner = self.lock();
            inner.next_lan += 1;
            let mid = if kind == NatKind::DoubleNat {
                inner.next_mid += 1;
                inner.next_mid
            } else {
                0
            };
            (inner.next_lan - 1, mid.saturating_sub(1))
        };
        if lan_k >= 8 || mid_k >= 8 {
            return Err(err("a lab holds at most 8 NATed sites"));
        }
        let lan = self.segment(
            &format!("{name}-lan"),
            &format!("192.0.2.{}/27", lan_k * 32),
        )?;
        let host = self.host(name)?;
        let router = self.host(&format!("{name}-r"))?;
        let gw = lan.next_addr()?; // .1
        let addr = lan.next_addr()?; // .2
        self.attach_with(&router, &lan, "lan", gw, true)?;
        self.attach_with(&host, &lan, "eth0", addr, true)?;
        host.route_default(gw)?;

        let (outer_router, public_addr, inner_wan_seg) = if kind == NatKind::DoubleNat {
            let mid = self.segment(
                &format!("{name}-mid"),
                &format!("198.51.100.{}/27", mid_k * 32),
            )?;
            let outer = self.host(&format!("{name}-or"))?;
            let ogw = mid.next_addr()?;
            self.attach_with(&outer, &mid, "lan", ogw, true)?;
            let owan = self.attach(&outer, &inet, "wan")?;
            let rules = router_rules(NatKind::Easy, &opts, None, &[]);
            outer.setup_router(&rules)?;
            (Some((outer, ogw)), owan, mid)
        } else {
            (None, Ipv4Addr::UNSPECIFIED, inet.clone())
        };
        let wan = self.attach(&router, &inner_wan_seg, "wan")?;
        if let Some((_, ogw)) = &outer_router {
            router.route_default(*ogw)?;
        }
        let public_addr = if outer_router.is_some() {
            public_addr
        } else {
            wan
        };
        let stun_ips = if kind.has_upnp() {
            let (_, c1, c2) = self.coturn()?;
            vec![c1, c2]
        } else {
            Vec::new()
        };
        let rules = router_rules(kind, &opts, Some(addr), &stun_ips);
        router.setup_router(&rules)?;
        if kind.has_upnp() {
            self.start_miniupnpd(&router, name, stun_ips[0])?;
        }
        Ok(Site {
            kind,
            host,
            addr,
            public_addr,
            router: Some((router, wan)),
            lan: Some(lan),
            outer_router: outer_router.map(|(h, _)| h),
            name: name.to_string(),
        })
    }

    /// Restarts a UPnP site's `miniupnpd` as a router reboot would: the
    /// daemon is killed (`SIGKILL`), its port-forwarding rules and its
    /// lease file are gone, and it starts afresh; returns once it is ready
    /// again (as [`Lab::site`] does). Mappings come back only if their
    /// owners make them again.
    pub fn restart_miniupnpd(&self, site: &Site) -> io::Result<()> {
        let Some((router, _)) = site.router.as_ref().filter(|_| site.kind.has_upnp()) else {
            return Err(err(format!("site {} runs no miniupnpd", site.name)));
        };
        let daemon = format!("miniupnpd-{}", site.name);
        let old = {
            let mut inner = self.lock();
            inner
                .daemons
                .iter()
                .position(|(n, _)| *n == daemon)
                .map(|i| inner.daemons.remove(i).1)
        };
        if let Some(mut child) = old {
            let _ = child.kill();
            let _ = child.wait();
        }
        for chain in ["miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"] {
            router.run(&["nft", "flush", "chain", "inet", "filter", chain])?;
        }
        for file in ["leases", "pid"] {
            let _ = fs::remove_file(self.dir.join(format!("miniupnpd-{}.{file}", site.name)));
        }
        let (_, stun, _) = self.coturn()?;
        self.start_miniupnpd(router, &site.name, stun)
    }

    fn start_miniupnpd(&self, router: &Host, name: &str, stun: Ipv4Addr) -> io::Result<()> {
        let conf = self.dir.join(format!("miniupnpd-{name}.conf"));
        let lease = self.dir.join(format!("miniupnpd-{name}.leases"));
        let text = format!(
            "ext_ifname=wan\n\
             listening_ip=lan\n\
             http_port=0\n\
             enable_natpmp=no\n\
             enable_upnp=yes\n\
             ext_perform_stun=yes\n\
             ext_stun_host={stun}\n\
             ext_stun_port={COTURN_PORT}\n\
             secure_mode=yes\n\
             system_uptime=yes\n\
             notify_interval=60\n\
             clean_ruleset_interval=600\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             lease_file={}\n\
             allow 1024-65535 192.0.2.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            lease.display()
        );
        fs::write(&conf, text)?;
        let pid = self.dir.join(format!("miniupnpd-{name}.pid"));
        let daemon = format!("miniupnpd-{name}");
        self.start_daemon(
            router,
            &daemon,
            &[
                "miniupnpd",
                "-d",
                "-f",
                conf.to_str().unwrap_or(""),
                "-P",
                pid.to_str().unwrap_or(""),
            ],
        )?;
        // Ready once its STUN test is done and it listens for SSDP.
        let up = wait_until(Duration::from_secs(15), || {
            self.daemon_log(&daemon).contains("Port forwarding is now")
                && router
                    .run(&["ss", "-Hlun"])
                    .map(|o| o.contains(":1900"))
                    .unwrap_or(false)
        });
        if !up {
            return Err(err(format!(
                "miniupnpd did not start: {}",
                self.daemon_log(&daemon)
            )));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut inner = self.lock();
        for (name, child) in inner.daemons.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
            log::debug!("lab {}: stopped {name}", self.id);
        }
        // Helpers and anything else still running in our namespaces.
        for ns in inner.namespaces.iter() {
            kill_namespace_processes(ns);
        }
        for ns in inner.namespaces.iter() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                log::warn!("lab {}: cannot delete namespace {ns}: {e}", self.id);
            }
        }
        inner.namespaces.clear();
        if std::thread::panicking() || std::env::var_os("CRUST_LAB_KEEP").is_some() {
            eprintln!("lab {}: logs kept in {}", self.id, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `cond` every 50 ms until it holds (`true`) or `limit` passes
/// (`false`).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct SegmentInner {
    name: String,
    ns: String,
    subnet: Subnet,
    v6: u32,
    next: Mutex<u32>,
}

/// A layer-2 segment: a bridge in its own namespace with a subnet whose
/// addresses it hands out in order (the first is `.1` of the subnet).
#[derive(Clone)]
pub struct Segment {
    inner: Arc<SegmentInner>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({} {})", self.inner.name, self.inner.subnet)
    }
}

impl Segment {
    /// The segment's subnet.
    pub fn subnet(&self) -> Subnet {
        self.inner.subnet
    }

    /// The IPv6 /64 of the segment (`2001:db8:N::/64`).
    pub fn v6_prefix(&self) -> String {
        format!("2001:db8:{:x}::/64", self.inner.v6)
    }

    /// Reserves the next free address.
    pub fn next_addr(&self) -> io::Result<Ipv4Addr> {
        let mut next = self.inner.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next > self.inner.subnet.hosts() {
            return Err(err(format!("segment {} is full", self.inner.subnet)));
        }
        let a = self.inner.subnet.nth(*next);
        *next += 1;
        Ok(a)
    }

    /// The switch namespace holding the bridge `br0`.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }
}

/// A lab host: one network namespace.
#[derive(Clone, Debug)]
pub struct Host {
    ns: String,
}

impl Host {
    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Runs a command in the host and returns its stdout.
    pub fn run(&self, argv: &[&str]) -> io::Result<String> {
        let mut args = vec!["netns", "exec", &self.ns];
        args.extend_from_slice(argv);
        let out = run_cmd("ip", &args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl in the host's namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Brings an interface up or down.
    pub fn set_link(&self, ifname: &str, up: bool) -> io::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns, "link", "set", ifname, state]).map(|_| ())
    }

    /// Loads an nftables ruleset (multi-line text) into the host.
    pub fn nft(&self, ruleset: &str) -> io::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run nft: {e} (is nftables installed?)")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(ruleset.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(err(format!(
                "nft refused the ruleset in {}: {}\n--- ruleset:\n{ruleset}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Sets the default IPv4 route via `gateway`.
    pub fn route_default(&self, gateway: Ipv4Addr) -> io::Result<()> {
        ip(&[
            "-n",
            &self.ns,
            "route",
            "replace",
            "default",
            "via",
            &gateway.to_string(),
        ])
        .map(|_| ())
    }

    /// The port forwards `miniupnpd` keeps on this router (its nft chain
    /// `prerouting_miniupnpd`), as text.
    pub fn miniupnpd_rules(&self) -> io::Result<String> {
        self.run(&[
            "nft",
            "list",
            "chain",
            "inet",
            "filter",
            "prerouting_miniupnpd",
        ])
    }

    /// Whether `miniupnpd` on this router forwards external `port` (a rule
    /// with `dport PORT`, not a longer number); `false` if the chain cannot
    /// be read.
    pub fn miniupnpd_forwards(&self, port: u16) -> bool {
        self.miniupnpd_rules()
            .map(|rules| forwards_port(&rules, port))
            .unwrap_or(false)
    }

    /// Turns IPv4 forwarding on (a plain router, no NAT).
    pub fn enable_forwarding(&self) -> io::Result<()> {
        self.sysctl("net.ipv4.ip_forward", "1")
    }

    /// The host's addresses on `ifname`, as `ip -brief addr` prints them.
    pub fn addresses(&self, ifname: &str) -> io::Result<String> {
        let out = ip(&["-n", &self.ns, "-brief", "addr", "show", "dev", ifname])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn setup_router(&self, rules: &str) -> io::Result<()> {
        self.sysctl("net.ipv4.ip_forward", "1")?;
        self.nft(rules)
    }

    /// Starts `program args` in the host as a helper driven over its stdin
    /// and stdout (one line per message). Its stderr goes to ours.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> io::Result<Helper> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| err(format!("cannot start {}: {e}", program.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| err("helper has no stdout"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send((std::time::Instant::now(), l)).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Helper {
            name: format!("{} in {}", program.display(), self.ns),
            child,
            stdin,
            lines: rx,
        })
    }
}

/// A process running in a lab host, driven by lines over stdin and stdout.
/// Killed on drop.
pub struct Helper {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Each line with when it was read from the helper's stdout.
    lines: mpsc::Receiver<(std::time::Instant, String)>,
}

impl fmt::Debug for Helper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Helper({})", self.name)
    }
}

impl Helper {
    /// Sends one line to the helper's stdin.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| err("helper stdin closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
    }

    /// Closes the helper's stdin (many helpers exit then).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the next line the helper prints.
    pub fn recv_line(&mut self, timeout: Duration) -> io::Result<String> {
        self.recv_line_timed(timeout).map(|(_, l)| l)
    }

    /// Like [`recv_line`](Self::recv_line), with when the line arrived
    /// (read from the helper as it printed it, however late the caller
    /// asks).
    pub fn recv_line_timed(
        &mut self,
        timeout: Duration,
    ) -> io::Result<(std::time::Instant, String)> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} printed nothing for {timeout:?}", self.name),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} exited ({:?})", self.name, self.child.try_wait()),
            )),
        }
    }

    /// Waits up to `timeout` for a line starting with `prefix`, skipping
    /// others; returns the rest of the line.
    pub fn expect_prefix(&mut self, prefix: &str, timeout: Duration) -> io::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.recv_line(left)?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
            log::debug!("{}: {line}", self.name);
        }
    }

    /// Waits for the helper to exit, up to `timeout`, then kills it.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<std::process::ExitStatus> {
        self.close_stdin();
        let _ = wait_until(timeout, || matches!(self.child.try_wait(), Ok(Some(_))));
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        let _ = self.child.kill();
        self.child.wait()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the `key=value` word in a helper's output `line`; panics
/// (a test helper) with the line when there is none.
///
/// ```
/// assert_eq!(netlab::lab::field("connected path=tcp ms=3", "ms"), "3");
/// ```
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Whether nft `rules` (as [`Host::miniupnpd_rules`] gives them) hold
/// `dport PORT` for exactly `port`.
pub fn forwards_port(rules: &str, port: u16) -> bool {
    let pat = format!("dport {port}");
    rules.match_indices(&pat).any(|(i, _)| {
        !rules[i + pat.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// The kinds of NAT a [`Site`] can sit behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// No NAT: the host is on the internet segment.
    Public,
    /// `masquerade` (endpoint-independent mapping, port-preserving), router
    /// drops unsolicited inbound on input and forward: port-restricted cone.
    Easy,
    /// `masquerade fully-random`: a new external port per flow (symmetric).
    Hard,
    /// Easy plus a DNAT of every inbound port to the host: full cone.
    FullCone,
    /// Easy with `miniupnpd` serving the LAN (coturn on the internet for its
    /// STUN test).
    EasyUpnp,
    /// An easy NAT with `miniupnpd` behind another easy NAT.
    DoubleNat,
}

impl NatKind {
    /// Whether the (inner) router runs `miniupnpd`.
    pub fn has_upnp(self) -> bool {
        matches!(self, NatKind::EasyUpnp | NatKind::DoubleNat)
    }
}

/// Options of [`Lab::site`].
#[derive(Clone, Debug, Default)]
pub struct SiteOptions {
    /// Percentage (0..100) of forwarded packets the router drops at random.
    pub loss_percent: u8,
}

/// A host behind a NAT (or on the internet for [`NatKind::Public`]).
#[derive(Debug)]
pub struct Site {
    /// The NAT kind.
    pub kind: NatKind,
    /// The host (interface `eth0`).
    pub host: Host,
    /// The host's own address.
    pub addr: Ipv4Addr,
    /// The address the internet sees: the (outer) router's WAN address, or
    /// the host's for a public site.
    pub public_addr: Ipv4Addr,
    /// The (inner) router and its WAN address, if any.
    pub router: Option<(Host, Ipv4Addr)>,
    /// The LAN segment, to add more hosts (their default route is `.1`).
    pub lan: Option<Segment>,
    /// The outer router of a double NAT.
    pub outer_router: Option<Host>,
    /// The name the site was built with.
    name: String,
}

/// The nftables ruleset of a router with interfaces `wan` and `lan`.
fn router_rules(
    kind: NatKind,
    opts: &SiteOptions,
    host: Option<Ipv4Addr>,
    stun: &[Ipv4Addr],
) -> String {
    let masq = if kind == NatKind::Hard {
        "masquerade fully-random"
    } else {
        "masquerade"
    };
    let loss = if opts.loss_percent > 0 {
        format!(
            "        numgen random mod 100 < {} drop\n",
            opts.loss_percent.min(100)
        )
    } else {
        String::new()
    };
    let (fullcone_fwd, fullcone_dnat) = match (kind, host) {
        (NatKind::FullCone, Some(h)) => (
            "        iifname \"wan\" ct status dnat accept\n".to_string(),
            format!("        iifname \"wan\" meta l4proto {{ tcp, udp }} dnat ip to {h}\n"),
        ),
        _ => (String::new(), String::new()),
    };
    let upnp = kind.has_upnp();
    // miniupnpd's own STUN test (RFC 5780 from the alternate address and
    // port) must reach the router itself.
    let stun_in: String = if upnp {
        stun.iter()
            .map(|a| format!("        iifname \"wan\" ip saddr {a} udp sport {{ {COTURN_PORT}, {} }} accept\n", COTURN_PORT + 1))
            .collect()
    } else {
        String::new()
    };
    let upnp_jump = if upnp {
        "        iifname \"wan\" jump miniupnpd\n"
    } else {
        ""
    };
    format!(
        "table inet filter {{\n\
         \x20   chain input {{\n\
         \x20       type filter hook input priority filter; policy accept;\n\
         \x20       iifname \"wan\" ct state established,related accept\n\
         {stun_in}\
         \x20       iifname \"wan\" drop\n\
         \x20   }}\n\
         \x20   chain forward {{\n\
         \x20       type filter hook forward priority filter; policy accept;\n\
         {loss}\
         \x20       iifname \"wan\" ct state established,related accept\n\
         {fullcone_fwd}\
         {upnp_jump}\
         \x20       iifname \"wan\" drop\n\
         \x20   }}\n\
         \x20   chain miniupnpd {{\n\
         \x20   }}\n\
         \x20   chain prerouting_miniupnpd {{\n\
         \x20       type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   }}\n\
         \x20   chain postrouting_miniupnpd {{\n\
         \x20       type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   }}\n\
         \x20   chain prerouting {{\n\
         \x20       type nat hook prerouting priority dstnat + 10; policy accept;\n\
         {fullcone_dnat}\
         \x20   }}\n\
         \x20   chain postrouting {{\n\
         \x20       type nat hook postrouting priority srcnat + 10; policy accept;\n\
         \x20       oifname \"wan\" {masq}\n\
         \x20   }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_port_matches_whole_port_numbers_only() {
        let rules = "iif \"wan\" th dport 40000 dnat ip to 192.0.2.2:40000\n";
        assert!(forwards_port(rules, 40000));
        assert!(!forwards_port(rules, 4000));
        assert!(!forwards_port(rules, 400));
        assert!(!forwards_port("", 40000));
    }

    #[test]
    fn subnet_parses_documentation_ranges_only() {
        let s: Subnet = "192.0.2.32/27".parse().unwrap();
        assert_eq!(s.nth(1), Ipv4Addr::new(192, 0, 2, 33));
        assert_eq!(s.hosts(), 30);
        assert!(s.contains(Ipv4Addr::new(192, 0, 2, 63)));
        assert!(!s.contains(Ipv4Addr::new(192, 0, 2, 64)));
        assert!("10.0.0.0/24".parse::<Subnet>().is_err());
        assert!("192.0.2.1/27".parse::<Subnet>().is_err());
        assert!("192.0.2.0/16".parse::<Subnet>().is_err());
    }

    #[test]
    fn router_rules_name_no_fwd_chain_and_are_multiline() {
        let r = router_rules(NatKind::Hard, &SiteOptions { loss_percent: 20 }, None, &[]);
        assert!(r.contains("masquerade fully-random"));
        assert!(r.contains("numgen random mod 100 < 20 drop"));
        assert!(!r.contains("chain fwd"));
        assert!(r.lines().count() > 10);
    }
}
