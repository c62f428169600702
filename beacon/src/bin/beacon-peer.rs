//! `beacon-peer`: runs one beacon and prints what it hears, one line each.
//!
//! A diagnostic tool, and the helper process of the beacon crate's
//! multi-process and network-lab tests.
//!
//! ```text
//! beacon-peer --port P [--interface NAME]... [--data TEXT] [--period-ms N]
//!             [--id-bytes N] [--no-ipv4] [--no-ipv6] [--refresh-ms N] [--no-answer]
//! ```
//!
//! Without `--interface` it uses every interface: do not run it like that in
//! tests (traffic rule).
//!
//! Output on stdout:
//! - `id <hex>` once, when the beacon runs;
//! - `heard <micros since start> <sender address> <data as hex>` per message;
//! - `stats <dropped> <delivered> <sends> <own echoes> <ignored>` after
//!   `stats` or at exit.
//!
//! Commands on stdin, one per line: `data <text>`, `period <ms>`, `stats`,
//! `quit`. End of input quits too, so the process ends with its parent.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("beacon-peer: {msg}");
    eprintln!(
        "usage: beacon-peer --port P [--interface NAME]... [--data TEXT] [--period-ms N] \
         [--id-bytes N] [--no-ipv4] [--no-ipv6] [--refresh-ms N] [--no-answer]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    let mut builder_fns: Vec<Box<dyn FnOnce(beacon::BeaconBuilder) -> beacon::BeaconBuilder>> =
        Vec::new();
    let mut interfaces: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |v: Result<String, String>| -> Result<u64, String> {
            let v = v?;
            v.parse::<u64>().map_err(|e| format!("{v:?}: {e}"))
        };
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--port" => {
                    port = Some(u16::try_from(num(value("--port"))?).map_err(|e| e.to_string())?)
                }
                "--interface" => interfaces.push(value("--interface")?),
                "--data" => {
                    let d = value("--data")?;
                    builder_fns.push(Box::new(move |b| b.data(d)));
                }
                "--period-ms" => {
                    let ms = num(value("--period-ms"))?;
                    builder_fns.push(Box::new(move |b| b.period(Duration::from_millis(ms))));
                }
                "--refresh-ms" => {
                    let ms = num(value("--refresh-ms"))?;
                    builder_fns.push(Box::new(move |b| {
                        b.interface_refresh(Duration::from_millis(ms))
                    }));
                }
                "--id-bytes" => {
                    let n = num(value("--id-bytes"))?;
                    builder_fns.push(Box::new(move |b| b.id_bytes(n as usize)));
                }
                "--no-ipv4" => builder_fns.push(Box::new(|b| b.ipv4(false))),
                "--no-ipv6" => builder_fns.push(Box::new(|b| b.ipv6(false))),
                "--no-answer" => builder_fns.push(Box::new(|b| b.answer_new_peers(false))),
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            return usage(&e);
        }
    }
    let Some(port) = port else {
        return usage("--port is required");
    };
    let _ = env_logger_init();

    let start = Instant::now();
    let mut builder = beacon::Beacon::builder(port);
    if !interfaces.is_empty() {
        builder = builder.interfaces(interfaces);
    }
    for f in builder_fns {
        builder = f(builder);
    }
    let (mut beacon, controller) = match builder.build() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("beacon-peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        // A closed stdout means our parent is gone; stdin's end stops us.
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    say(format!("id {}", hex(beacon.id())));

    let (cmd_tx, cmd_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(line).is_err() {
                return;
            }
        }
        let _ = cmd_tx.send("quit".into());
    });

    let mut buf = Vec::new();
    loop {
        loop {
            match cmd_rx.try_recv() {
                Ok(cmd) => {
                    let (verb, rest) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
                    let r = match verb {
                        "data" => controller.set_data(rest).map_err(std::io::Error::from),
                        "period" => match rest.trim().parse::<u64>() {
                            Ok(ms) => controller
                                .set_period(Duration::from_millis(ms))
                                .map_err(std::io::Error::from),
                            Err(e) => Err(std::io::Error::other(format!("period: {e}"))),
                        },
                        "stats" => {
                            let s = beacon.stats();
                            say(format!(
                                "stats {} {} {} {} {}",
                                s.dropped, s.delivered, s.sends, s.own_echoes, s.ignored
                            ));
                            Ok(())
                        }
                        "quit" => {
                            let s = beacon.stats();
                            say(format!(
                                "stats {} {} {} {} {}",
                                s.dropped, s.delivered, s.sends, s.own_echoes, s.ignored
                            ));
                            return ExitCode::SUCCESS;
                        }
                        "" => Ok(()),
                        other => Err(std::io::Error::other(format!("unknown command {other:?}"))),
                    };
                    if let Err(e) = r {
                        eprintln!("beacon-peer: {e}");
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return ExitCode::SUCCESS,
            }
        }
        match beacon.next_message_timeout(&mut buf, Duration::from_millis(100)) {
            Ok(from) => say(format!(
                "heard {} {from} {}",
                start.elapsed().as_micros(),
                hex(&buf)
            )),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => {
                eprintln!("beacon-peer: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Logs to stderr at the level in `RUST_LOG` (default: warnings), without
/// pulling a logger crate into the library's dependencies.
fn env_logger_init() -> Result<(), log::SetLoggerError> {
    struct Stderr(log::LevelFilter);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= self.0
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
            }
        }
        fn flush(&self) {}
    }
    let level = match std::env::var("RUST_LOG").ok().as_deref() {
        Some("trace") => log::LevelFilter::Trace,
        Some("debug") => log::LevelFilter::Debug,
        Some("info") => log::LevelFilter::Info,
        Some("error") => log::LevelFilter::Error,
        Some("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
    log::set_max_level(level);
    log::set_logger(Box::leak(Box::new(Stderr(level))))
}
