//! Dropping a uTP socket and its streams ends the driver task and closes
//! the UDP socket (own test binary, so other tests do not disturb the
//! task and file-descriptor counts).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::utp::aio::UtpSocket;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (bounded) until `f` holds; the bound only stops a broken build
/// from hanging, it is not a timing assertion.
fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} never happened");
}

#[test]
fn dropping_socket_and_streams_ends_driver_and_closes_socket() {
    let _ = crust_runtime::handle();
    let tasks0 = crust_runtime::alive_tasks();
    let fds0 = open_fds();
    crust_runtime::block_on(async {
        let server = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let (s, c) = tokio::join!(server.accept(), client.connect(addr));
        let (mut s, _) = s.unwrap();
        let mut c = c.unwrap();
        c.write_all(&[7u8; 100_000]).await.unwrap();
        let mut buf = vec![0u8; 100_000];
        s.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|b| *b == 7));
        assert_eq!(crust_runtime::alive_tasks(), tasks0 + 2);
        assert_eq!(open_fds(), fds0 + 2);
        drop((s, c, server, client));
    })
    .unwrap();
    eventually("driver tasks ending", || {
        crust_runtime::alive_tasks() == tasks0
    });
    eventually("UDP sockets closing", || open_fds() == fds0);
}
