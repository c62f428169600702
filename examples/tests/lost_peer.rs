//! A peer process frozen with SIGSTOP is declared lost within the
//! inactivity timeout plus one heartbeat period; before the freeze, the
//! idle stream lives on heartbeats alone (the peer heartbeats at a third of
//! our inactivity timeout, which our hello told it).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crust::{Config, Error, Service};

#[test]
fn a_frozen_peer_process_is_declared_lost() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
        .args([
            "listen",
            "tcp://127.0.0.1:0",
            "--no-beacon",
            "--no-igd",
            "--ephemeral",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_peer listen");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ep = loop {
        let line = lines.next().expect("a line").expect("read");
        if let Some(ep) = line.strip_prefix("reachable at ") {
            break ep.parse().unwrap();
        }
    };
    let inactivity = Duration::from_millis(1000);
    let period = Duration::from_millis(100);
    let service = Service::new_from_config(
        Config::loopback()
            .network_name("crust-echo")
            .beacon_enabled(false)
            .heartbeat_period(period)
            .inactivity_timeout(inactivity),
    )
    .unwrap();
    let stream = service.controller.connect(&ep).unwrap();
    stream.send(b"hi").unwrap();
    assert_eq!(stream.recv().unwrap(), b"hi");
    // Idle for three inactivity timeouts: the peer's heartbeats keep it.
    let e = stream.recv_timeout(3 * inactivity).unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e}");

    let pid = child.id() as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen = Instant::now();
    let e = stream.recv().unwrap_err();
    let took = frozen.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(matches!(e, Error::PeerLost { .. }), "{e}");
    assert!(
        took <= inactivity + period + Duration::from_millis(250),
        "lost only after {took:?}"
    );
}
