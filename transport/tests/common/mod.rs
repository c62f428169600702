//! Helpers shared by the transport integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use transport::proto::{Initiator, Opener, Sealer};
use transport::{Endpoint, Identity, Listener, ListenerOptions, Protocol, Stream};

pub const T: Duration = Duration::from_secs(10);

pub fn listener() -> (Identity, Listener, Endpoint) {
    listener_with(ListenerOptions::default())
}

pub fn listener_with(opts: ListenerOptions) -> (Identity, Listener, Endpoint) {
    let id = Identity::generate();
    let l = Listener::bind_with(&id, "tcp://127.0.0.1:0", opts).unwrap();
    let ep = l.endpoints()[0];
    (id, l, ep)
}

/// Proves the listener still serves a well-behaved client: connect, echo.
pub fn assert_serves(listener: &Listener, ep: &Endpoint) {
    let ep = *ep;
    let client = std::thread::spawn(move || {
        let mut s = Stream::direct_connect(&Identity::generate(), ep, T).unwrap();
        s.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
    });
    let mut s = listener.accept_timeout(T).expect("listener still accepts");
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&buf).unwrap();
    client.join().unwrap();
}

/// A client that speaks the protocol by hand through the sans-IO core, so a
/// test can send exactly the bytes it wants after a valid handshake.
pub struct RawClient {
    pub sock: TcpStream,
    pub sealer: Sealer,
    pub opener: Opener,
}

impl RawClient {
    pub fn connect(ep: &Endpoint) -> RawClient {
        let id = Identity::generate();
        let mut sock = TcpStream::connect(ep.addr).unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        let (init, msg1) = Initiator::start(&id, &ep.public_key, Protocol::Tcp, b"").unwrap();
        sock.write_all(&msg1).unwrap();
        let mut hdr = [0u8; 2];
        sock.read_exact(&mut hdr).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(hdr) as usize];
        sock.read_exact(&mut body).unwrap();
        let mut session = init.finish(&body).unwrap();
        // The admission record, as every dialler sends it.
        let mut admit = Vec::new();
        session.seal_admission(&mut admit);
        sock.write_all(&admit).unwrap();
        let (opener, sealer) = session.split();
        RawClient {
            sock,
            sealer,
            opener,
        }
    }

    /// The wire bytes of one record carrying `data`.
    pub fn record(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.sealer.seal(data, &mut out, usize::MAX);
        out
    }
}
