//! crust: a peer-to-peer connection manager. Programs find each other on a
//! LAN, get through home routers, and talk over encrypted, key-authenticated
//! message streams, through plain blocking calls.
//!
//! Build a [`Service`] (it listens on TCP and uTP, beacons on the LAN and
//! keeps its identity key across restarts), then call
//! [`service.controller.connect(endpoint)`](ServiceController::connect) from
//! any thread, and [`service.acceptor.accept()`](ServiceListener::accept)
//! where you serve. Every call blocks like `std::net`; the work runs as tasks
//! on one shared tokio runtime, never a thread per connection.
//!
//! # An echo peer
//!
//! ```
//! use std::thread;
//! use crust::{Config, Service};
//!
//! // Two services on loopback (a real program uses `Service::new()`, which
//! // reads the default config and keeps its identity in the data directory).
//! let config = Config::loopback().network_name("echo-doc").beacon_port(50_300);
//! let server = Service::new_from_config(config.clone())?;
//! let client = Service::new_from_config(config)?;
//!
//! // The server echoes every message on every stream it accepts.
//! let acceptor = server.acceptor;
//! thread::spawn(move || {
//!     for stream in acceptor.incoming() {
//!         thread::spawn(move || {
//!             while let Ok(msg) = stream.recv() {
//!                 if stream.send(&msg).is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! });
//!
//! // The client dials one of the server's endpoints: the key in it is
//! // proven by the encrypted handshake.
//! let endpoint = server.controller.accepting_endpoints()[0].known_endpoints()[0].endpoint;
//! let stream = client.controller.connect(&endpoint)?;
//! for i in 0..3u8 {
//!     stream.send(&[i; 64])?;
//!     assert_eq!(stream.recv()?, [i; 64]);
//! }
//! println!("echoed over {} to {}", stream.path(), stream.peer_public_key());
//! stream.close()?;
//! # Ok::<(), crust::Error>(())
//! ```
//!
//! # Parts
//!
//! - [`Service`]: a struct of public parts: [`ServiceListener`] (accept),
//!   [`ServiceBeaconState`] (the LAN beacon on or off, in the type if you
//!   like), [`ServiceBeaconReceiver`] (endpoints that peers of our network
//!   announce), [`ServiceController`] (connect, listeners, hole punching).
//! - [`Stream`]: messages (`send`, `recv`) with heartbeats; a peer silent
//!   for the inactivity timeout is reported lost.
//! - [`Config`]: JSON, strict (unknown fields are errors naming the field,
//!   file and line).
//! - Network change ([`netwatch`]): the service reads the host's addresses
//!   every [`Config::network_poll_interval`]; on a change it re-derives and
//!   re-announces its accepting endpoints, makes the beacon follow the
//!   interfaces, ends streams whose local address left the host
//!   ([`Error::AddressLost`]), and
//!   [`ServiceController::endpoints_changed`] yields a [`NetworkChange`]
//!   so you can re-announce.
//! - [`aio`]: the same service and streams as async, for tokio programs.
//! - [`proto`]: the sans-IO core (frames, hello, beacon payload, heartbeat
//!   rules).
//! - The crates underneath, re-exported: [`transport`], [`nat_traversal`],
//!   [`beacon`].
//!
//! # Traffic
//!
//! [`Config::default`] beacons on every interface and looks for a UPnP
//! gateway (SSDP) at start, as a LAN program should. Tests and demos use
//! [`Config::loopback`], which sends nothing off `lo`.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod aio;
pub mod cache;
mod config;
mod error;
pub mod netwatch;
pub mod proto;
mod service;
mod stream;

pub use beacon;
pub use nat_traversal;
pub use transport;

pub use config::{
    BeaconConfig, CACHE_FILE_NAME, CONFIG_ENV, Config, DATA_DIR_ENV, IDENTITY_FILE_NAME, Limits,
};
pub use error::{Error, Result};
pub use netwatch::{EndpointChanges, NetworkChange};
pub use service::{
    AcceptingEndpoint, BeaconEndpoints, CachedEndpoint, Disabled, Dynamic, EnableError, Enabled,
    EndpointCacheIter, Incoming, MappedEndpoint, PreparedRendezvous, Service,
    ServiceBeaconReceiver, ServiceBeaconState, ServiceController, ServiceListener,
};
pub use stream::{Receiver, Sender, Stream};
pub use transport::{Endpoint, ListenEndpoint, Path, Protocol, PublicKey};

/// The README's code blocks, compiled and run as doctests so the first code
/// a newcomer copies cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
