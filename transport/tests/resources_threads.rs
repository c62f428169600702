//! 1,000 open connections use the same number of OS threads as one. (Its own
//! test binary, so no parallel test adds threads.)

use std::io::{Read, Write};
use std::time::Duration;

use transport::{Identity, Listener, Stream};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn thousand_connections_no_more_threads_than_one() {
    let listener = Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0").unwrap();
    let ep = listener.endpoints()[0];
    let client_id = Identity::generate();
    let mut conns = Vec::new();
    let connect = |conns: &mut Vec<(Stream, Stream)>| {
        let mut c = Stream::direct_connect(&client_id, ep, Duration::from_secs(10)).unwrap();
        let mut s = listener.accept().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        conns.push((c, s));
    };
    connect(&mut conns);
    let with_one = os_threads();
    for _ in 1..1000 {
        connect(&mut conns);
    }
    assert_eq!(conns.len(), 1000);
    let with_thousand = os_threads();
    assert_eq!(
        with_thousand, with_one,
        "OS threads grew from {with_one} to {with_thousand} with 1000 connections"
    );
    // And all of them still work.
    for (c, s) in conns.iter_mut() {
        c.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
}
