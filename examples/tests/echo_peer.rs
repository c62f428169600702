//! The README's demo command works: `echo_peer` with no arguments runs two
//! processes that find each other by beacon on loopback and echo over TCP
//! and uTP from several threads, and exits 0 only if every echo matched.
//! `listen` and `connect` work against each other, and one silent client
//! does not hold up another.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn echo_peer_demo_runs_on_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
        .output()
        .expect("run echo_peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "echo_peer failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified: 400 of 400 messages echoed intact over tcp and utp"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("connected direct over tcp").count(),
        4,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("connected direct over utp").count(),
        4,
        "{stdout}"
    );
    for line in stdout
        .lines()
        .filter(|l| l.contains("reachable at") || l.contains("dialling") || l.contains("heard by"))
    {
        assert!(
            line.contains("://127.0.0.1:"),
            "the demo must stay on loopback: {line}"
        );
    }
}

#[test]
fn listen_serves_a_client_while_another_sits_silent() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
        .args([
            "listen",
            "tcp://127.0.0.1:0,utp://127.0.0.1:0",
            "--no-beacon",
            "--no-igd",
            "--ephemeral",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_peer listen");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut endpoints = Vec::new();
    while endpoints.len() < 2 {
        let line = lines.next().expect("a line").expect("read");
        if let Some(ep) = line.strip_prefix("reachable at ") {
            endpoints.push(ep.to_owned());
        }
    }
    // A client that connects at the TCP level and then says nothing.
    let tcp = endpoints.iter().find(|e| e.starts_with("tcp://")).unwrap();
    let addr = tcp.trim_start_matches("tcp://").split('/').next().unwrap();
    let mut silent = TcpStream::connect(addr).expect("silent client");
    for ep in &endpoints {
        let out = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
            .args(["connect", ep, "--count", "3", "--no-igd"])
            .output()
            .expect("run echo_peer connect");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "connect to {ep} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.matches("sent and got back").count(), 3, "{stdout}");
    }
    silent.write_all(b"still here").ok();
    server.kill().ok();
    server.wait().ok();
}

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen"));
    let out = Command::new(env!("CARGO_BIN_EXE_echo_peer"))
        .args(["connect", "tcp://nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp://nowhere"));
}
