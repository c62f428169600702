//! Helpers shared by the beacon integration tests.
//!
//! Traffic rule: every beacon these helpers start outside a network namespace
//! is restricted to `lo`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Hang guard for waits in tests: generous, never a performance threshold.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// A beacon port for this test run: the UDP port number is free on both
/// `0.0.0.0` and `[::]` when chosen, and the same `key` gives the same port
/// within one test binary (so two beacons of one test share it). Concurrent
/// runs of the suite get different ports, where fixed numbers collided.
pub fn test_port(key: u32) -> u16 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static PORTS: OnceLock<Mutex<HashMap<u32, u16>>> = OnceLock::new();
    let mut ports = PORTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = ports.get(&key) {
        return *p;
    }
    for _ in 0..1000 {
        let port = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        // The IPv4 socket is closed now; a dual-stack `[::]` bind succeeds
        // only if the port is free in both families.
        let taken = ports.values().any(|p| *p == port);
        if !taken && std::net::UdpSocket::bind(("::", port)).is_ok() {
            ports.insert(key, port);
            return port;
        }
    }
    panic!("no UDP port free in both IPv4 and IPv6 after 1000 tries");
}

/// Polls `f` until it returns `Some`, panicking with `what` after
/// [`HANG_GUARD`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: still waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// One line of `beacon-peer` output: a message it heard.
#[derive(Debug, Clone)]
pub struct Heard {
    pub micros: u64,
    pub from: String,
    pub data: Vec<u8>,
}

/// A `beacon-peer` process, killed and reaped on drop.
pub struct Peer {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub id: String,
    pub heard: Vec<Heard>,
    pub stats: Option<Vec<u64>>,
}

impl Peer {
    /// Starts `beacon-peer` with `args`, optionally through a command prefix
    /// such as `ip netns exec NS`, and waits for its `id` line.
    pub fn start(name: &str, prefix: &[&str], args: &[&str]) -> Peer {
        let exe = env!("CARGO_BIN_EXE_beacon-peer");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start beacon-peer {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Peer {
            name: name.into(),
            child,
            stdin,
            lines: rx,
            id: String::new(),
            heard: Vec::new(),
            stats: None,
        };
        let deadline = Instant::now() + HANG_GUARD;
        while p.id.is_empty() {
            assert!(
                Instant::now() < deadline,
                "hang guard: beacon-peer {name} did not start"
            );
            p.pump(Duration::from_millis(50));
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("beacon-peer {name} exited at start: {status}");
            }
        }
        p
    }

    /// Reads the lines available within `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let mut first = true;
        loop {
            let line = if first {
                first = false;
                match self.lines.recv_timeout(wait) {
                    Ok(l) => l,
                    Err(_) => return,
                }
            } else {
                match self.lines.try_recv() {
                    Ok(l) => l,
                    Err(_) => return,
                }
            };
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["id", id] => self.id = (*id).to_string(),
                ["heard", us, from, data] => self.heard.push(Heard {
                    micros: us.parse().expect("micros"),
                    from: (*from).to_string(),
                    data: unhex(data),
                }),
                ["stats", rest @ ..] => {
                    self.stats = Some(rest.iter().map(|v| v.parse().expect("stat")).collect())
                }
                _ => panic!("beacon-peer {}: unexpected line {line:?}", self.name),
            }
        }
    }

    pub fn send(&mut self, cmd: &str) {
        if let Some(s) = self.stdin.as_mut() {
            writeln!(s, "{cmd}").expect("write to beacon-peer");
            s.flush().expect("flush beacon-peer stdin");
        }
    }

    /// Pumps until `f` holds.
    pub fn wait_until(&mut self, what: &str, mut f: impl FnMut(&Peer) -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "hang guard: beacon-peer {} never got {what}; heard {:?}",
                self.name,
                self.heard
            );
            self.pump(Duration::from_millis(50));
        }
    }

    pub fn heard_data(&self, data: &[u8]) -> bool {
        self.heard.iter().any(|h| h.data == data)
    }

    /// Asks for the counters and returns them: dropped, delivered, sends,
    /// own echoes, ignored (from other interfaces).
    pub fn query_stats(&mut self) -> Vec<u64> {
        self.stats = None;
        self.send("stats");
        self.wait_until("stats", |p| p.stats.is_some());
        self.stats.clone().expect("stats")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}
