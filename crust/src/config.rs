//! The service configuration: JSON, strict, every field optional.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport::{Endpoint, ListenEndpoint};

use crate::error::{Error, Result};
use crate::proto::MAX_NETWORK_NAME;

/// Environment variable naming the config file [`Service::new`] reads.
///
/// [`Service::new`]: crate::Service::new
pub const CONFIG_ENV: &str = "CRUST_CONFIG";
/// Environment variable naming the data directory (the identity file lives
/// there) instead of the platform's per-user one.
pub const DATA_DIR_ENV: &str = "CRUST_DATA_DIR";
/// The file name of the identity in the data directory.
pub const IDENTITY_FILE_NAME: &str = "identity.key";
/// The file name of the bootstrap cache beside the identity.
pub const CACHE_FILE_NAME: &str = "bootstrap.cache";

/// The longest period or timeout a config may set: a day.
const MAX_PERIOD: Duration = Duration::from_secs(86_400);

/// A service's configuration.
///
/// Read from JSON by [`Config::load`] (every field is optional; unknown
/// fields are errors), or built in code from [`Config::default`] with the
/// chainable setters:
///
/// ```
/// use std::time::Duration;
/// let config = crust::Config::default()
///     .network_name("my-app")
///     .listen(["tcp://127.0.0.1:0", "utp://127.0.0.1:0"])?
///     .beacon_interfaces(["lo"])
///     .heartbeat_period(Duration::from_secs(5))
///     .inactivity_timeout(Duration::from_secs(15));
/// assert_eq!(config.network_name, "my-app");
/// # Ok::<(), crust::Error>(())
/// ```
///
/// The JSON form, with every field at its default:
///
/// ```json
/// {
///   "listen": ["tcp://0.0.0.0:0", "utp://0.0.0.0:0"],
///   "network_name": "crust",
///   "beacon": { "enabled": true, "port": 5484, "period_ms": 1000, "interfaces": null },
///   "hole_punch_servers": [],
///   "igd": true,
///   "mapping_local_ip": null,
///   "heartbeat_period_ms": 10000,
///   "inactivity_timeout_ms": 30000,
///   "connect_timeout_ms": 10000,
///   "handshake_timeout_ms": 10000,
///   "max_message_size": 16777216,
///   "limits": { "max_inbound": 20000, "max_per_peer": 20000, "max_pending_handshakes": 256, "accept_queue": 1024 },
///   "identity_file": null,
///   "ephemeral_identity": false,
///   "hard_coded_contacts": [],
///   "cache_file": null,
///   "cache_size": 256,
///   "network_poll_interval_ms": 2000
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// Where to accept connections. Default: TCP and uTP on every interface,
    /// ephemeral ports.
    #[serde(with = "text_list")]
    pub listen: Vec<ListenEndpoint>,
    /// Services only talk to services of the same network name (at most 64
    /// bytes). Default `"crust"`.
    pub network_name: String,
    /// The LAN beacon.
    pub beacon: BeaconConfig,
    /// STUN servers (`HOST:PORT`, UDP and TCP) to learn our external
    /// addresses from. Default: none (crust ships no list of public servers).
    pub hole_punch_servers: Vec<SocketAddr>,
    /// Whether to look for a UPnP gateway on the local network (SSDP
    /// multicast) at start. Default `true`.
    pub igd: bool,
    /// Keep NAT discovery (SSDP, STUN) on this local address. Default: any.
    pub mapping_local_ip: Option<IpAddr>,
    /// Send a heartbeat after this long without sending. Default 10 s.
    #[serde(rename = "heartbeat_period_ms", with = "millis")]
    pub heartbeat_period: Duration,
    /// Declare a peer lost after this long without hearing from it.
    /// Default 30 s; must exceed the heartbeat period.
    #[serde(rename = "inactivity_timeout_ms", with = "millis")]
    pub inactivity_timeout: Duration,
    /// The default bound of [`ServiceController::connect`](crate::ServiceController::connect).
    /// Default 10 s.
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// How long an accepted connection may take for the transport handshake
    /// and the hello. Default 10 s.
    #[serde(rename = "handshake_timeout_ms", with = "millis")]
    pub handshake_timeout: Duration,
    /// The largest message, in bytes, sent or received. Default 16 MiB.
    pub max_message_size: usize,
    /// Connection limits.
    pub limits: Limits,
    /// The identity key file. Default: `identity.key` in the data directory
    /// (`$CRUST_DATA_DIR`, else the platform's per-user data directory).
    pub identity_file: Option<PathBuf>,
    /// Use a fresh identity and store nothing (tests, throw-away peers):
    /// no identity file, and the bootstrap cache stays in memory unless
    /// [`cache_file`](Config::cache_file) names one. Default `false`.
    pub ephemeral_identity: bool,
    /// Peers to try first when bootstrapping (endpoints with keys).
    /// Default: none.
    #[serde(with = "text_list")]
    pub hard_coded_contacts: Vec<Endpoint>,
    /// The bootstrap cache file. Default: `bootstrap.cache` in the data
    /// directory (beside the identity), or memory only with
    /// [`ephemeral_identity`](Config::ephemeral_identity).
    pub cache_file: Option<PathBuf>,
    /// How many endpoints the bootstrap cache keeps (1 to 10,000). Default
    /// 256.
    pub cache_size: usize,
    /// How often the host's interface addresses are read to notice a
    /// network change (an address added or removed, an interface down or
    /// up): then listeners' endpoints are re-derived and re-announced, the
    /// beacon follows the interfaces, streams whose local address vanished
    /// are reported lost, and
    /// [`ServiceController::endpoints_changed`](crate::ServiceController::endpoints_changed)
    /// yields an event. A change is seen within one interval. Default 2 s.
    #[serde(rename = "network_poll_interval_ms", with = "millis")]
    pub network_poll_interval: Duration,
}

/// The beacon part of a [`Config`].
///
/// ```
/// let c = crust::Config::default().beacon_port(6000).beacon_interfaces(["eth0"]);
/// assert_eq!(c.beacon.port, 6000);
/// assert_eq!(c.beacon.interfaces, Some(vec!["eth0".to_string()]));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BeaconConfig {
    /// Whether the beacon sends at start. Default `true`.
    pub enabled: bool,
    /// The UDP port every service of a LAN beacons on. Default 5484.
    pub port: u16,
    /// Time between beacons. Default 1 s.
    #[serde(rename = "period_ms", with = "millis")]
    pub period: Duration,
    /// Interfaces to beacon on (e.g. `["lo"]`); `null`: every interface.
    pub interfaces: Option<Vec<String>>,
}

/// Connection limits of a [`Config`]. A connection over a limit is refused
/// with a reject frame the dialler sees.
///
/// ```
/// use crust::{Config, Limits};
/// let c = Config::default().limits(Limits::default().max_inbound(100).max_per_peer(4));
/// assert_eq!(c.limits.max_inbound, 100);
/// assert!(c.validate().is_ok());
/// assert!(Config::default().limits(Limits::default().max_per_peer(0)).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Live inbound connections. Default 20,000.
    pub max_inbound: usize,
    /// Live connections (both directions) with one peer key, counted after
    /// its hello. Default 20,000 (benches and the scale tests use one pair
    /// of keys for thousands of connections).
    pub max_per_peer: usize,
    /// Transport handshakes in progress at once. Default 256.
    pub max_pending_handshakes: usize,
    /// Connections waiting for [`ServiceListener::accept`](crate::ServiceListener::accept).
    /// Default 1,024.
    pub accept_queue: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![
                "tcp://0.0.0.0:0".parse().expect("a valid literal"),
                "utp://0.0.0.0:0".parse().expect("a valid literal"),
            ],
            network_name: "crust".into(),
            beacon: BeaconConfig::default(),
            hole_punch_servers: Vec::new(),
            igd: true,
            mapping_local_ip: None,
            heartbeat_period: Duration::from_secs(10),
            inactivity_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 16 << 20,
            limits: Limits::default(),
            identity_file: None,
            ephemeral_identity: false,
            hard_coded_contacts: Vec::new(),
            cache_file: None,
            cache_size: 256,
            network_poll_interval: Duration::from_secs(2),
        }
    }
}

impl Default for BeaconConfig {
    fn default() -> BeaconConfig {
        BeaconConfig {
            enabled: true,
            port: 5484,
            period: Duration::from_secs(1),
            interfaces: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_inbound: 20_000,
            max_per_peer: 20_000,
            max_pending_handshakes: 256,
            accept_queue: 1024,
        }
    }
}

impl Config {
    /// Reads a JSON config file and checks it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file, the line and the field's full path
    /// for an unknown field, a value of the wrong type, a bad endpoint or a
    /// value out of range; [`Error::Io`] if the file cannot be read.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("crust.json");
    /// std::fs::write(&path, "{\n  \"limits\": { \"max_inbund\": 5 }\n}")?;
    /// let err = crust::Config::load(&path).unwrap_err().to_string();
    /// assert!(err.contains("crust.json"), "{err}");
    /// assert!(err.contains("line 2"), "{err}");
    /// assert!(err.contains("limits"), "{err}");
    /// assert!(err.contains("max_inbund"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config file {}", path.display()), e))?;
        Config::from_json(&text).map_err(|e| match e {
            Error::Config {
                field,
                line,
                reason,
                ..
            } => Error::Config {
                file: Some(path.to_owned()),
                field,
                line,
                reason,
            },
            other => other,
        })
    }

    /// Parses and checks a JSON config.
    ///
    /// # Errors
    ///
    /// As [`load`](Config::load), without the file name.
    pub fn from_json(text: &str) -> Result<Config> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::Config {
                file: None,
                field: (path != ".").then_some(path),
                line: Some(inner.line()),
                reason: inner.to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as pretty JSON (what [`load`](Config::load) reads).
    pub fn to_json(&self) -> String {
        // Invariant: every field serialises (no maps with non-string keys).
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }

    /// Checks values that the types alone allow but crust does not.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.network_name.is_empty() || self.network_name.len() > MAX_NETWORK_NAME {
            return Err(Error::config_field(
                "network_name",
                format!("must be 1 to {MAX_NETWORK_NAME} bytes long"),
            ));
        }
        for (field, d) in [
            ("heartbeat_period_ms", self.heartbeat_period),
            ("inactivity_timeout_ms", self.inactivity_timeout),
            ("connect_timeout_ms", self.connect_timeout),
            ("handshake_timeout_ms", self.handshake_timeout),
            ("beacon.period_ms", self.beacon.period),
            ("network_poll_interval_ms", self.network_poll_interval),
        ] {
            if d.is_zero() || d > MAX_PERIOD {
                return Err(Error::config_field(
                    field,
                    format!("must be from 1 ms to a day, not {d:?}"),
                ));
            }
        }
        if self.inactivity_timeout <= self.heartbeat_period {
            return Err(Error::config_field(
                "inactivity_timeout_ms",
                format!(
                    "must be longer than the heartbeat period ({:?}), not {:?}",
                    self.heartbeat_period, self.inactivity_timeout
                ),
            ));
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize {
            return Err(Error::config_field(
                "max_message_size",
                "must be from 1 to 4294967295 bytes",
            ));
        }
        if self.cache_size == 0 || self.cache_size > crate::cache::MAX_CACHE_ENTRIES {
            return Err(Error::config_field(
                "cache_size",
                format!("must be from 1 to {}", crate::cache::MAX_CACHE_ENTRIES),
            ));
        }
        if self.beacon.port == 0 {
            return Err(Error::config_field("beacon.port", "must not be 0"));
        }
        if self
            .beacon
            .interfaces
            .as_ref()
            .is_some_and(|i| i.is_empty())
        {
            return Err(Error::config_field(
                "beacon.interfaces",
                "an empty list would beacon nowhere: use null for every interface, \
                 or beacon.enabled = false",
            ));
        }
        for (field, n) in [
            ("limits.max_inbound", self.limits.max_inbound),
            ("limits.max_per_peer", self.limits.max_per_peer),
            (
                "limits.max_pending_handshakes",
                self.limits.max_pending_handshakes,
            ),
            ("limits.accept_queue", self.limits.accept_queue),
        ] {
            if n == 0 {
                return Err(Error::config_field(field, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The config [`Service::new`](crate::Service::new) uses: the file named
    /// by `$CRUST_CONFIG` (which must exist), else `config.json` in the
    /// platform's per-user config directory (e.g. `~/.config/crust/` on
    /// Linux) if it exists, else `<executable>.crust.json` beside the
    /// executable if it exists, else the defaults.
    ///
    /// # Errors
    ///
    /// As [`load`](Config::load) for the file found.
    pub fn from_default_location() -> Result<Config> {
        if let Some(p) = std::env::var_os(CONFIG_ENV) {
            return Config::load(PathBuf::from(p));
        }
        let candidates = [
            directories::ProjectDirs::from("", "", "crust")
                .map(|d| d.config_dir().join("config.json")),
            std::env::current_exe().ok().map(|exe| {
                let mut name = exe.file_stem().unwrap_or_default().to_owned();
                name.push(".crust.json");
                exe.with_file_name(name)
            }),
        ];
        for path in candidates.into_iter().flatten() {
            if path.is_file() {
                log::info!("reading config {}", path.display());
                return Config::load(&path);
            }
        }
        Ok(Config::default())
    }

    /// Where the identity lives: [`identity_file`](Config::identity_file),
    /// else `identity.key` in `$CRUST_DATA_DIR`, else in the platform's
    /// per-user data directory (e.g. `~/.local/share/crust/` on Linux).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if there is no home directory to put it in.
    pub fn identity_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.identity_file {
            return Ok(p.clone());
        }
        if let Some(d) = std::env::var_os(DATA_DIR_ENV) {
            return Ok(PathBuf::from(d).join(IDENTITY_FILE_NAME));
        }
        directories::ProjectDirs::from("", "", "crust")
            .map(|d| d.data_dir().join(IDENTITY_FILE_NAME))
            .ok_or_else(|| {
                Error::config(format!(
                    "no home directory for the identity file: set identity_file or ${DATA_DIR_ENV}"
                ))
            })
    }

    /// Where the bootstrap cache lives: [`cache_file`](Config::cache_file),
    /// else none (memory only) with an ephemeral identity, else
    /// `bootstrap.cache` beside the identity file.
    ///
    /// # Errors
    ///
    /// As [`identity_path`](Config::identity_path).
    pub fn cache_path(&self) -> Result<Option<PathBuf>> {
        if let Some(p) = &self.cache_file {
            return Ok(Some(p.clone()));
        }
        if self.ephemeral_identity {
            return Ok(None);
        }
        let id = self.identity_path()?;
        Ok(Some(id.with_file_name(CACHE_FILE_NAME)))
    }

    /// Sets [`hard_coded_contacts`](Config::hard_coded_contacts).
    pub fn hard_coded_contacts(mut self, contacts: impl IntoIterator<Item = Endpoint>) -> Self {
        self.hard_coded_contacts = contacts.into_iter().collect();
        self
    }

    /// Sets [`cache_file`](Config::cache_file).
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Sets [`cache_size`](Config::cache_size).
    pub fn cache_size(mut self, n: usize) -> Self {
        self.cache_size = n;
        self
    }

    /// Sets [`network_poll_interval`](Config::network_poll_interval).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = crust::Config::loopback().network_poll_interval(Duration::from_millis(250));
    /// assert!(c.validate().is_ok());
    /// let zero = crust::Config::loopback().network_poll_interval(Duration::ZERO);
    /// assert!(zero.validate().unwrap_err().to_string().contains("network_poll_interval_ms"));
    /// ```
    pub fn network_poll_interval(mut self, every: Duration) -> Self {
        self.network_poll_interval = every;
        self
    }

    /// Sets [`listen`](Config::listen).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming a bad endpoint.
    pub fn listen<I, S>(mut self, endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.listen = endpoints
            .into_iter()
            .map(|s| {
                s.as_ref()
                    .parse()
                    .map_err(|e: transport::Error| Error::config_field("listen", e.to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(self)
    }

    /// Sets [`network_name`](Config::network_name).
    pub fn network_name(mut self, name: impl Into<String>) -> Self {
        self.network_name = name.into();
        self
    }

    /// Sets [`beacon.enabled`](BeaconConfig::enabled).
    pub fn beacon_enabled(mut self, on: bool) -> Self {
        self.beacon.enabled = on;
        self
    }

    /// Sets [`beacon.port`](BeaconConfig::port).
    pub fn beacon_port(mut self, port: u16) -> Self {
        self.beacon.port = port;
        self
    }

    /// Sets [`beacon.period`](BeaconConfig::period).
    pub fn beacon_period(mut self, period: Duration) -> Self {
        self.beacon.period = period;
        self
    }

    /// Sets [`beacon.interfaces`](BeaconConfig::interfaces).
    pub fn beacon_interfaces<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.beacon.interfaces = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Sets [`hole_punch_servers`](Config::hole_punch_servers).
    pub fn hole_punch_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.hole_punch_servers = servers.into_iter().collect();
        self
    }

    /// Sets [`igd`](Config::igd).
    pub fn igd(mut self, on: bool) -> Self {
        self.igd = on;
        self
    }

    /// Sets [`mapping_local_ip`](Config::mapping_local_ip).
    pub fn mapping_local_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.mapping_local_ip = ip;
        self
    }

    /// Sets [`heartbeat_period`](Config::heartbeat_period).
    pub fn heartbeat_period(mut self, d: Duration) -> Self {
        self.heartbeat_period = d;
        self
    }

    /// Sets [`inactivity_timeout`](Config::inactivity_timeout).
    pub fn inactivity_timeout(mut self, d: Duration) -> Self {
        self.inactivity_timeout = d;
        self
    }

    /// Sets [`connect_timeout`](Config::connect_timeout).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`handshake_timeout`](Config::handshake_timeout).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Sets [`max_message_size`](Config::max_message_size).
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets [`limits`](Config::limits).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`identity_file`](Config::identity_file).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// Sets [`ephemeral_identity`](Config::ephemeral_identity).
    pub fn ephemeral_identity(mut self, on: bool) -> Self {
        self.ephemeral_identity = on;
        self
    }

    /// A config for tests and demos that sends nothing off loopback: TCP and
    /// uTP on `127.0.0.1`, beacon on `lo` only, no UPnP, a fresh identity.
    ///
    /// ```
    /// let c = crust::Config::loopback();
    /// assert_eq!(c.beacon.interfaces, Some(vec!["lo".to_string()]));
    /// assert!(!c.igd);
    /// ```
    pub fn loopback() -> Config {
        Config {
            listen: vec![
                "tcp://127.0.0.1:0".parse().expect("a valid literal"),
                "utp://127.0.0.1:0".parse().expect("a valid literal"),
            ],
            igd: false,
            mapping_local_ip: Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            ephemeral_identity: true,
            ..Config::default()
        }
        .beacon_interfaces(["lo"])
    }
}

impl Limits {
    /// Sets [`max_inbound`](Limits::max_inbound).
    pub fn max_inbound(mut self, n: usize) -> Self {
        self.max_inbound = n;
        self
    }

    /// Sets [`max_per_peer`](Limits::max_per_peer).
    pub fn max_per_peer(mut self, n: usize) -> Self {
        self.max_per_peer = n;
        self
    }

    /// Sets [`max_pending_handshakes`](Limits::max_pending_handshakes).
    pub fn max_pending_handshakes(mut self, n: usize) -> Self {
        self.max_pending_handshakes = n;
        self
    }

    /// Sets [`accept_queue`](Limits::accept_queue).
    pub fn accept_queue(mut self, n: usize) -> Self {
        self.accept_queue = n;
        self
    }
}

/// Lists of endpoints as lists of their text forms, parsed element by
/// element so an error points at the line of the bad one.
mod text_list {
    use std::fmt::Display;
    use std::marker::PhantomData;
    use std::str::FromStr;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|e| e.to_string()))
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        struct Items<T>(PhantomData<T>);
        impl<'de, T: FromStr> serde::de::Visitor<'de> for Items<T>
        where
            T::Err: Display,
        {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of endpoints such as \"tcp://192.0.2.7:5483\"")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s.parse().map_err(serde::de::Error::custom)?);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Items(PhantomData))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_json() {
        let c = Config::default();
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
        assert_eq!(Config::from_json("{}").unwrap(), c);
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let e = Config::from_json("{\n\"beacon\": {\n \"port\": \"x\"}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beacon.port") && e.contains("line 3"), "{e}");
        let e = Config::from_json("{\"listen\": [\"tcp://nowhere\"]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("tcp://nowhere"), "{e}");
        let e = Config::from_json("{\"heartbeat_period_ms\": 40000}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("inactivity_timeout_ms"), "{e}");
        let e = Config::from_json("{\"network_name\": \"\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("network_name"), "{e}");
    }
}
