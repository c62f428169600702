//! Encrypted, key-authenticated byte streams over TCP (and uTP), behind
//! blocking calls like `std::net`.
//!
//! - [`Identity`]: our static X25519 key pair; [`PublicKey`]: a peer's.
//! - [`Endpoint`]: where a peer is and which key it must prove, written
//!   `tcp://203.0.113.7:5483/?pubkey=<64 hex digits>`; [`ListenEndpoint`]:
//!   where to listen.
//! - [`Listener`] accepts, [`Stream::direct_connect`] dials; a [`Stream`] is
//!   `Read + Write` and splits into halves for two threads.
//! - [`aio`]: the same as async, for tokio users.
//! - [`proto`]: the sans-IO core (handshake and record framing), for those
//!   who bring their own I/O.
//!
//! # Security
//!
//! Every connection runs a Noise `IK` handshake
//! (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) from its first byte: the dialler
//! knows the listener's key from the endpoint, both sides prove their static
//! keys, and every record after it is encrypted and authenticated. Dialling
//! a key the listener does not hold fails with [`Error::PeerKeyMismatch`].
//!
//! # Admission
//!
//! A listener admits a connection (counts it, queues it for `accept`,
//! reports its key) only once the dialler's first transport record, the
//! admission record, decrypts: a replayed first message gets nowhere.
//! Pending handshakes share a pool of slots in which a newcomer displaces
//! the connection that made the least progress for the longest, with a
//! short first-message deadline and per-source shares under pressure; a
//! full accept queue answers [`Error::Busy`] at once. uTP sockets answer
//! SYNs with cookies under pressure. See [`ListenerOptions`] and
//! `docs/wire-admission.md`.
//!
//! # Threads
//!
//! Accepting and handshakes run as tasks on one shared tokio runtime
//! (`crust-runtime`), never a thread per connection. `Read` and `Write` on a
//! [`Stream`] run on the calling thread: the system call and the crypto
//! happen there and the kernel wakes the thread directly.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use transport::{Identity, Listener, Stream};
//!
//! let listener = Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0")?;
//! let endpoint = listener.endpoints()[0];
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut s = listener.accept()?;
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf)?;
//!     s.write_all(&buf)
//! });
//! let mut s = Stream::direct_connect(&Identity::generate(), &endpoint, Duration::from_secs(5))?;
//! s.write_all(b"hello")?;
//! let mut buf = [0u8; 5];
//! s.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"hello");
//! server.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod admission;
pub mod aio;
mod carrier;
mod endpoint;
mod error;
mod handshake;
mod identity;
mod listener;
mod listener_set;
mod path;
mod pool;
pub mod proto;
pub mod rendezvous;
mod stream;
pub mod utp;
pub mod wire;

pub use aio::ListenerOptions;
pub use endpoint::{Endpoint, ListenEndpoint, Protocol, ToEndpoints, ToListenEndpoints};
pub use error::{Error, Result};
pub use identity::{Identity, PUBLIC_KEY_LEN, PublicKey};
pub use listener::{Incoming, Listener, ListenerSet};
pub use listener_set::{ListenerId, ListenerSetOptions, TOKEN_GRACE};
pub use path::Path;
pub use stream::{ReadStream, Stream, WriteStream};
