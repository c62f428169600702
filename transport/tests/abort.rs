//! `Stream::abort` wakes a thread blocked in a read on the same stream, over
//! TCP and uTP (loopback), and the stream stays dead.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use transport::{Identity, Listener, Stream};

/// Bound of every wait here (a hang guard, not a measurement).
const T: Duration = Duration::from_secs(10);

fn aborted_read_returns(listen: &str) {
    let listener = Listener::bind(&Identity::generate(), listen).unwrap();
    let ep = listener.endpoints()[0];
    let client = std::thread::spawn(move || Stream::direct_connect(&Identity::generate(), ep, T));
    let server = listener.accept().unwrap();
    // The peer stays connected and silent.
    let _peer = client.join().unwrap().unwrap();
    let s = Arc::new(server);
    let (tx, rx) = mpsc::channel();
    let reader = s.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let _ = tx.send((&*reader).read(&mut buf));
    });
    // The reader blocks (nothing is coming), or reads after the abort:
    // either way it returns.
    s.abort();
    let got = rx.recv_timeout(T).expect("the blocked read returns");
    assert!(matches!(got, Ok(0) | Err(_)), "{listen}: {got:?}");
    let mut buf = [0u8; 8];
    assert!(
        matches!((&*s).read(&mut buf), Ok(0) | Err(_)),
        "{listen}: still dead"
    );
}

#[test]
fn abort_wakes_a_blocked_tcp_read() {
    aborted_read_returns("tcp://127.0.0.1:0");
}

#[test]
fn abort_wakes_a_blocked_utp_read() {
    aborted_read_returns("utp://127.0.0.1:0");
}
