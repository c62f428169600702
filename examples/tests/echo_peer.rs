//! The README's demo command works: `echo_peer` with no arguments runs both
//! peers on loopback, over TCP and over uTP, and exits cleanly after
//! verifying the echo.

use std::process::Command;

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
    assert!(stdout.contains("demo finished"), "{stdout}");
    assert_eq!(stdout.matches("sent and got back").count(), 6, "{stdout}");
    assert!(stdout.contains("connected over tcp"), "{stdout}");
    assert!(stdout.contains("connected over utp"), "{stdout}");
    for line in stdout
        .lines()
        .filter(|l| l.contains("reachable at") || l.contains("dialling"))
    {
        assert!(
            line.contains("://127.0.0.1:"),
            "the demo must stay on loopback: {line}"
        );
    }
}
