//! After dropping a listener and its streams, the process's file descriptors
//! and runtime tasks return to their baseline. (Its own test binary, so no
//! parallel test disturbs the counts.)

use std::io::{Read, Write};
use std::time::Duration;

use transport::{Identity, Listener, Stream};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn fds_and_tasks_return_to_baseline() {
    // The runtime's own descriptors (epoll, eventfd) live for the process.
    crust_runtime::handle();
    let fds = open_fds();
    let tasks = crust_runtime::alive_tasks();

    let id = Identity::generate();
    let listener = Listener::bind(&id, "tcp://127.0.0.1:0").unwrap();
    let ep = listener.endpoints()[0];
    let mut streams = Vec::new();
    for i in 0..50u8 {
        let mut c =
            Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(10)).unwrap();
        let mut s = listener.accept().unwrap();
        c.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
        streams.push(c);
        streams.push(s);
    }
    // Some connections are handshaken but never accepted: the listener owns them.
    let pending: Vec<Stream> = (0..5)
        .map(|_| {
            Stream::direct_connect(&Identity::generate(), ep, Duration::from_secs(10)).unwrap()
        })
        .collect();
    assert_eq!(streams.len(), 100);
    assert!(open_fds() >= fds + 100);
    assert!(crust_runtime::alive_tasks() > tasks);

    drop(streams);
    drop(pending);
    drop(listener);
    assert_eq!(open_fds(), fds, "file descriptors leaked");
    // Aborted tasks are reaped when a runtime worker next gets to them: on
    // a loaded machine that can be after the drops return. Nothing signals
    // it, so poll (every 10 ms, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crust_runtime::alive_tasks() > tasks && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(crust_runtime::alive_tasks(), tasks, "runtime tasks leaked");
}
