//! A `crust-lab-peer` process in a lab namespace, for the crust lab tests.

use std::path::Path;
use std::time::{Duration, Instant};

use netlab::lab::{Helper, Host};

/// A `crust-lab-peer`'s output lines, kept with the time each arrived, so
/// waits for one kind of line never lose another.
pub struct LabPeer {
    pub helper: Helper,
    seen: Vec<(Instant, String)>,
}

impl LabPeer {
    /// Starts `crust-lab-peer` with `args` in `host`'s namespace.
    pub fn start(host: &Host, args: &[&str]) -> LabPeer {
        let bin = Path::new(env!("CARGO_BIN_EXE_crust-lab-peer"));
        LabPeer {
            helper: host.spawn(bin, args).expect("start crust-lab-peer"),
            seen: Vec::new(),
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        self.helper.send_line(line).expect("send to crust-lab-peer");
    }

    /// The first line starting with `prefix` (arrived or arriving within
    /// `limit`), without the prefix, with when it arrived; it is consumed.
    pub fn wait(&mut self, prefix: &str, limit: Duration) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.seen.iter().position(|(_, l)| l.starts_with(prefix)) {
                let (t, l) = self.seen.remove(i);
                return (t, l[prefix.len()..].trim().to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.helper.recv_line_timed(left) {
                Ok(timed) => self.seen.push(timed),
                Err(e) => panic!(
                    "no line {prefix:?} within {limit:?}: {e}; lines so far: {:?}",
                    self.seen
                ),
            }
        }
    }
}
