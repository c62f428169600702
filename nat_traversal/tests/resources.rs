//! After a STUN server, mapped sockets and punched UDP and TCP holes are
//! dropped, the process's file descriptors and runtime tasks return to their
//! baseline, and no thread was added. Loopback only. (Its own test binary, so
//! no parallel test disturbs the counts.)

use std::time::Duration;

use nat_traversal::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn no_igd(stun: Vec<std::net::SocketAddr>) -> MappingContext {
    MappingContext::with_options(
        MappingOptions::default()
            .igd(false)
            .stun_servers(stun)
            .local_ip(Some("127.0.0.1".parse().unwrap())),
    )
    .unwrap()
}

/// Waits (bounded) until `f` holds: tasks that were told to stop end on the
/// runtime a moment after the drop.
fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn fds_tasks_and_threads_return_to_baseline() {
    crust_runtime::handle();
    let fds = open_fds();
    let tasks = crust_runtime::alive_tasks();
    let threads = os_threads();
    for _ in 0..3 {
        let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let mc = no_igd(vec![server.addresses()[0]]);

        let a = MappedUdpSocket::new(&mc).unwrap();
        let b = MappedUdpSocket::new(&mc).unwrap();
        let (ap, aq) = gen_rendezvous_info(a.endpoints.iter().map(|e| e.addr).collect());
        let (bp, bq) = gen_rendezvous_info(b.endpoints.iter().map(|e| e.addr).collect());
        let bsock = b.socket;
        let t = std::thread::spawn(move || PunchedUdpSocket::punch_hole(bsock, bp, aq));
        let pa = PunchedUdpSocket::punch_hole(a.socket, ap, bq).unwrap();
        let pb = t.join().unwrap().unwrap();

        let c = MappedTcpSocket::new(&mc).unwrap();
        let d = MappedTcpSocket::new(&mc).unwrap();
        let (cp, cq) = gen_rendezvous_info(c.endpoints.iter().map(|e| e.addr).collect());
        let (dp, dq) = gen_rendezvous_info(d.endpoints.iter().map(|e| e.addr).collect());
        let dsock = d.socket;
        let t = std::thread::spawn(move || tcp_punch_hole(dsock, dp, cq));
        let sc = tcp_punch_hole(c.socket, cp, dq).unwrap();
        let sd = t.join().unwrap().unwrap();

        assert!(open_fds() > fds);
        drop((pa, pb, sc, sd, mc, server));
    }
    assert!(
        eventually(|| open_fds() == fds),
        "file descriptors leaked: {} now, {fds} before",
        open_fds()
    );
    assert!(
        eventually(|| crust_runtime::alive_tasks() == tasks),
        "runtime tasks leaked: {} now, {tasks} before",
        crust_runtime::alive_tasks()
    );
    assert_eq!(os_threads(), threads, "threads were added");
}
