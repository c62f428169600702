//! Churn soak: peers connect to a running Service, exchange numbered
//! messages (each acknowledged by the service's echo) and drop at random:
//! a clean close, a drop with a message in flight, a half-close, an abort
//! with unread data (a TCP reset), or their process killed with SIGKILL
//! (a child process: this test binary re-run as `churn_child`). Afterwards
//! fds, threads, runtime tasks and memory are back within stated bounds of
//! the baseline, and every message a peer saw acknowledged was delivered
//! to the service exactly once, in order.
//!
//! Bounded: 300 rounds of 8 peers or 60 s, whichever comes first;
//! `CRUST_CHURN_SECS=N` runs for N seconds instead (rounds unbounded).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust::proto::{Frame, decode_frame, encode_message_header};
use crust::{Endpoint, Protocol, Service};

mod common;

use common::{Rng, T, Target, hello_done, hostile, panics, serial, usage};

const NETWORK: &str = "churn";
const PEERS_PER_ROUND: usize = 8;
/// Memory may grow this much over the soak (allocator caches, the
/// runtime's timer wheel), never with the number of rounds.
const RSS_BOUND_KIB: u64 = 32 * 1024;

fn msg(id: u64, seq: u64) -> Vec<u8> {
    [id.to_be_bytes(), seq.to_be_bytes()].concat()
}

fn parse(m: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_be_bytes(m.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(m.get(8..16)?.try_into().ok()?);
    Some((id, seq))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Mode {
    Clean,
    InFlight,
    HalfClose,
    Abort,
    Kill,
}

/// What a peer sent and saw acknowledged.
#[derive(Debug)]
struct Outcome {
    id: u64,
    mode: Mode,
    protocol: Protocol,
    sent: u64,
    acked: Vec<u64>,
}

/// Reads frames off a raw stream until `n` messages came (or EOF); returns
/// their sequence numbers.
fn read_acks(s: &mut crust::transport::Stream, n: Option<usize>) -> Vec<u64> {
    use std::io::Read;
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut acks = Vec::new();
    loop {
        while let Ok(Some((f, used))) = decode_frame(&buf, 1024) {
            if let Frame::Message(r) = f {
                acks.push(parse(&buf[r]).expect("a well-formed ack").1);
            }
            buf.drain(..used);
        }
        if n.is_some_and(|n| acks.len() >= n) {
            return acks;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return acks,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn raw_send(s: &mut crust::transport::Stream, id: u64, seq: u64) {
    let m = msg(id, seq);
    let mut out = encode_message_header(m.len() as u32).to_vec();
    out.extend_from_slice(&m);
    s.write_all(&out).expect("raw send");
}

fn run_peer(client: &Service, ep: Endpoint, id: u64, mode: Mode, k: u64) -> Outcome {
    let mut acked = Vec::new();
    let mut sent = 0;
    match mode {
        Mode::Clean | Mode::InFlight => {
            let s = client.controller.connect_timeout(&ep, T).expect("connect");
            for seq in 1..=k {
                s.send(&msg(id, seq)).expect("send");
                sent = seq;
                let ack = s.recv_timeout(T).expect("ack");
                acked.push(parse(&ack).unwrap().1);
            }
            if mode == Mode::InFlight {
                s.send(&msg(id, k + 1)).expect("send");
                sent = k + 1;
                drop(s);
            } else {
                s.close().expect("close");
            }
        }
        Mode::HalfClose => {
            let mut s = hello_done(&ep, NETWORK).expect("hellos");
            for seq in 1..=k {
                raw_send(&mut s, id, seq);
            }
            sent = k;
            s.shutdown(Shutdown::Write).expect("half-close");
            acked = read_acks(&mut s, None);
        }
        Mode::Abort => {
            let mut s = hello_done(&ep, NETWORK).expect("hellos");
            for seq in 1..=k {
                raw_send(&mut s, id, seq);
            }
            sent = k;
            // All but the last ack read; the last (and heartbeats) left
            // unread, so the close resets a TCP connection.
            acked = read_acks(&mut s, Some(k as usize - 1));
            drop(s);
        }
        Mode::Kill => {
            let exe = std::env::current_exe().unwrap();
            let mut child = Command::new(exe)
                .args([
                    "--exact",
                    "churn_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CHURN_ENDPOINT", ep.to_string())
                .env("CHURN_ID", id.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("child");
            let out = BufReader::new(child.stdout.take().unwrap());
            for line in out.lines() {
                let Ok(line) = line else { break };
                // (libtest's "test churn_child ... " may lead the first line.)
                if let Some(at) = line.find("ack ") {
                    acked.push(line[at + 4..].trim().parse().unwrap());
                    if acked.len() as u64 >= k {
                        break;
                    }
                }
            }
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            sent = u64::MAX; // unknown: the child may have sent one more
        }
    }
    Outcome {
        id,
        mode,
        protocol: ep.protocol,
        sent,
        acked,
    }
}

/// The child process: connects, then sends and prints each acknowledged
/// sequence number until it is killed (hang guard: 30 s).
#[test]
#[ignore = "run by `churn` as a child process"]
fn churn_child() {
    let (Ok(ep), Ok(id)) = (std::env::var("CHURN_ENDPOINT"), std::env::var("CHURN_ID")) else {
        return;
    };
    let ep: Endpoint = ep.parse().unwrap();
    let id: u64 = id.parse().unwrap();
    let client = Service::new_from_config(hostile(NETWORK).beacon_enabled(false)).unwrap();
    let s = client.controller.connect_timeout(&ep, T).unwrap();
    let t0 = Instant::now();
    let mut out = std::io::stdout();
    for seq in 1.. {
        s.send(&msg(id, seq)).unwrap();
        let ack = s.recv_timeout(T).unwrap();
        writeln!(out, "ack {}", parse(&ack).unwrap().1).unwrap();
        out.flush().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(30), "never killed");
    }
}

/// Checks a round's peers against what the service received (and forgets
/// them, so the soak's own bookkeeping does not grow): delivered exactly
/// once and in order, everything acknowledged delivered, and everything
/// sent delivered and acknowledged for the peers that closed cleanly or
/// half-closed.
fn verify(
    outcomes: &[Outcome],
    got: &Mutex<HashMap<u64, Vec<u64>>>,
    by_mode: &mut std::collections::BTreeMap<(Mode, Protocol), (usize, u64)>,
) {
    let mut got = got.lock().unwrap();
    for o in outcomes {
        let delivered = got.remove(&o.id).unwrap_or_default();
        let expect: Vec<u64> = (1..=delivered.len() as u64).collect();
        assert_eq!(
            delivered, expect,
            "peer {} ({:?}): delivered out of order or twice",
            o.id, o.mode
        );
        let acked: Vec<u64> = (1..=o.acked.len() as u64).collect();
        assert_eq!(
            o.acked, acked,
            "peer {} ({:?}): acks out of order",
            o.id, o.mode
        );
        assert!(
            o.acked.len() <= delivered.len(),
            "peer {} ({:?}): acked {} but the service has {}",
            o.id,
            o.mode,
            o.acked.len(),
            delivered.len()
        );
        if matches!(o.mode, Mode::Clean | Mode::HalfClose) {
            assert_eq!(
                delivered.len() as u64,
                o.sent,
                "peer {} ({:?})",
                o.id,
                o.mode
            );
            assert_eq!(o.acked.len() as u64, o.sent, "peer {} ({:?})", o.id, o.mode);
        }
        let e = by_mode.entry((o.mode, o.protocol)).or_default();
        e.0 += 1;
        e.1 += o.acked.len() as u64;
    }
}

#[test]
fn churn() {
    let _serial = serial();
    let budget = std::env::var("CRUST_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let (max_rounds, budget) = match budget {
        Some(b) => (usize::MAX, b),
        None => (300, Duration::from_secs(60)),
    };
    let panics_before = panics();
    // What the service received, per peer, in order.
    let got: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let g = got.clone();
    let target = Target::start_with(
        hostile(NETWORK),
        Arc::new(move |m: &[u8]| {
            let (id, seq) = parse(m).expect("well-formed");
            g.lock().unwrap().entry(id).or_default().push(seq);
        }),
    );
    let client =
        Arc::new(Service::new_from_config(hostile(NETWORK).beacon_enabled(false)).unwrap());
    let base = usage();
    let t0 = Instant::now();
    let mut rng = Rng::new(16);
    let mut pending: Vec<Outcome> = Vec::new();
    let mut by_mode = Default::default();
    let mut peers_total = 0;
    let mut acked_total = 0;
    let mut next_id = 1;
    let mut rounds = 0;
    // RSS every 50 rounds: it must level off, not grow with the rounds.
    let mut rss_trend = Vec::new();
    while rounds < max_rounds && t0.elapsed() < budget {
        rounds += 1;
        let peers: Vec<_> = (0..PEERS_PER_ROUND)
            .map(|_| {
                let mode = match rng.below(9) {
                    0 | 1 => Mode::Clean,
                    2 | 3 => Mode::InFlight,
                    4 | 5 => Mode::HalfClose,
                    6 | 7 => Mode::Abort,
                    _ => Mode::Kill,
                };
                let p = if rng.below(3) == 0 {
                    Protocol::Utp
                } else {
                    Protocol::Tcp
                };
                let ep = target.endpoint(p);
                let k = 1 + rng.below(40);
                let id = next_id;
                next_id += 1;
                let client = client.clone();
                std::thread::spawn(move || run_peer(&client, ep, id, mode, k))
            })
            .collect();
        let round: Vec<Outcome> = peers
            .into_iter()
            .map(|p| p.join().expect("a peer panicked"))
            .collect();
        // A peer's last message may still be on its way to the service
        // (in flight, aborted, killed); those are checked at the end.
        let (closed, open): (Vec<_>, Vec<_>) = round
            .into_iter()
            .partition(|o| matches!(o.mode, Mode::Clean | Mode::HalfClose));
        verify(&closed, &got, &mut by_mode);
        peers_total += closed.len();
        acked_total += closed.iter().map(|o| o.acked.len()).sum::<usize>();
        pending.extend(open);
        if pending.len() > 128 {
            // Checked once 64 later peers have run (eight rounds, well
            // after anything they sent has arrived); the rest at the end.
            let keep = pending.split_off(pending.len() - 64);
            let old = std::mem::replace(&mut pending, keep);
            verify(&old, &got, &mut by_mode);
            peers_total += old.len();
            acked_total += old.iter().map(|o| o.acked.len()).sum::<usize>();
        }
        if rounds % 50 == 0 {
            rss_trend.push(common::rss_kib());
        }
    }
    let soak = t0.elapsed();
    // Every stream ends: killed uTP peers at the inactivity timeout.
    let deadline = Instant::now() + common::SETTLE;
    let settled = loop {
        let u = usage();
        if target.live.load(std::sync::atomic::Ordering::Relaxed) == 0
            && u.fds <= base.fds + common::SETTLE_FDS
            && u.tasks <= base.tasks + common::SETTLE_TASKS
            && u.threads <= base.threads
        {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "churn: not back near baseline within {:?}: baseline {base:?}, now {u:?}, live {}, threads {:?}",
            common::SETTLE,
            target.live.load(std::sync::atomic::Ordering::Relaxed),
            common::thread_names()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let settle = t0.elapsed() - soak;
    verify(&pending, &got, &mut by_mode);
    peers_total += pending.len();
    acked_total += pending.iter().map(|o| o.acked.len()).sum::<usize>();
    println!(
        "figure churn: {rounds} rounds, {peers_total} peers, {acked_total} acknowledged messages in \
         {soak:?}; by mode and protocol (peers, acked): {by_mode:?}"
    );
    println!("figure churn: rss every 50 rounds (KiB): {rss_trend:?}");
    println!(
        "figure churn: settled {settle:?} after the soak: {settled:?} against baseline {base:?} \
         (bounds: fds +{}, tasks +{}, threads +0, rss +{RSS_BOUND_KIB} KiB)",
        common::SETTLE_FDS,
        common::SETTLE_TASKS
    );
    assert!(
        settled.rss_kib <= base.rss_kib + RSS_BOUND_KIB,
        "rss grew to {} KiB",
        settled.rss_kib
    );
    assert_eq!(panics(), panics_before, "something panicked");
    assert_eq!(
        target.accepted.load(std::sync::atomic::Ordering::Relaxed),
        peers_total
    );
}
