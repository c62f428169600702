//! The TCP punch handshake and race, sans IO.

use super::*;
use crate::gen_rendezvous_info;

fn pair() -> (
    (PrivRendezvousInfo, PubRendezvousInfo),
    (PrivRendezvousInfo, PubRendezvousInfo),
) {
    let a = gen_rendezvous_info(vec!["192.0.2.1:4000".parse().unwrap()]);
    let b = gen_rendezvous_info(vec!["192.0.2.2:4000".parse().unwrap()]);
    (a, b)
}

/// Runs both ends of one candidate stream's handshake; the chooser keeps
/// (`keep`) or refuses it. Returns each side's result.
fn run(
    a: &mut TcpHandshake,
    b: &mut TcpHandshake,
    keep: bool,
) -> (Result<(), Rejected>, Result<(), Rejected>) {
    let (ha, hb) = (a.hello(), b.hello());
    let pa = a.handle_hello(&hb).unwrap();
    let pb = b.handle_hello(&ha).unwrap();
    a.handle_proof(&pb).unwrap();
    b.handle_proof(&pa).unwrap();
    let (chooser, other) = if a.is_chooser() { (a, b) } else { (b, a) };
    let c = chooser.choice(keep);
    (Ok(()), other.handle_choice(&c))
}

#[test]
fn handshake_verifies_both_ways_and_the_choice_is_obeyed() {
    let ((ap, aq), (bp, bq)) = pair();
    let mut a = TcpHandshake::new(&ap, &bq, [1; 16]).unwrap();
    let mut b = TcpHandshake::new(&bp, &aq, [2; 16]).unwrap();
    assert_ne!(a.is_chooser(), b.is_chooser());
    assert_eq!(run(&mut a, &mut b, true).1, Ok(()));
    let mut a = TcpHandshake::new(&ap, &bq, [3; 16]).unwrap();
    let mut b = TcpHandshake::new(&bp, &aq, [4; 16]).unwrap();
    assert_eq!(run(&mut a, &mut b, false).1, Err(Rejected::NotChosen));
}

#[test]
fn a_foreign_key_fails_the_proof() {
    let ((ap, aq), (_, bq)) = pair();
    let (cp, _) = gen_rendezvous_info(vec![]);
    // c holds neither secret of the a–b rendezvous but knows b's public info.
    let mut a = TcpHandshake::new(&ap, &bq, [1; 16]).unwrap();
    let mut c = TcpHandshake::new(&cp, &aq, [2; 16]).unwrap();
    let (ha, hc) = (a.hello(), c.hello());
    let pc = match c.handle_hello(&ha) {
        Ok(p) => p,
        Err(Rejected::SameSide) => return, // c's secret fell on a's side
        Err(e) => panic!("{e:?}"),
    };
    if a.handle_hello(&hc).is_err() {
        return;
    }
    assert_eq!(a.handle_proof(&pc), Err(Rejected::BadProof));
}

#[test]
fn a_recorded_handshake_replayed_on_a_new_stream_fails() {
    let ((ap, aq), (bp, bq)) = pair();
    let mut a = TcpHandshake::new(&ap, &bq, [1; 16]).unwrap();
    let mut b = TcpHandshake::new(&bp, &aq, [2; 16]).unwrap();
    let hb = b.hello();
    let pa = a.handle_hello(&hb).unwrap();
    let pb = b.handle_hello(&a.hello()).unwrap();
    b.handle_proof(&pa).unwrap();
    // A third party replays b's hello and proof to a on another stream;
    // a draws a fresh nonce there.
    let mut a2 = TcpHandshake::new(&ap, &bq, [9; 16]).unwrap();
    a2.handle_hello(&hb).unwrap();
    assert_eq!(a2.handle_proof(&pb), Err(Rejected::BadProof));
    // And a recorded choice does not carry over to a fresh stream of the
    // side that reads choices.
    let (chooser, reader_infos) = if a.is_chooser() {
        (&a, (&bp, &aq))
    } else {
        (&b, (&ap, &bq))
    };
    let c = chooser.choice(true);
    let mut fresh = TcpHandshake::new(reader_infos.0, reader_infos.1, [7; 16]).unwrap();
    fresh.handle_hello(&chooser.hello()).unwrap();
    assert_eq!(fresh.handle_choice(&c), Err(Rejected::BadProof));
}

#[test]
fn our_own_hello_reflected_is_refused() {
    let ((ap, _), (_, bq)) = pair();
    let mut a = TcpHandshake::new(&ap, &bq, [1; 16]).unwrap();
    let h = a.hello();
    assert_eq!(a.handle_hello(&h), Err(Rejected::SameSide));
    let mut junk = h;
    junk[0] = b'X';
    assert_eq!(a.handle_hello(&junk), Err(Rejected::NotAHello));
    let mut junk = h;
    junk[4] = 1;
    assert_eq!(a.handle_hello(&junk), Err(Rejected::NotAHello));
    // Equal secrets: no key.
    let (p, q) = gen_rendezvous_info(vec![]);
    assert!(TcpHandshake::new(&p, &q, [0; 16]).is_none());
}

#[test]
fn dials_are_bounded_retried_and_stop_at_the_deadline() {
    let (ap, _) = gen_rendezvous_info(vec![]);
    // The peer lists 40 endpoints, some of the other family.
    let mut eps: Vec<SocketAddr> = (0..40)
        .map(|i| {
            format!("198.51.100.{}:{}", i + 1, 4000 + i)
                .parse()
                .unwrap()
        })
        .collect();
    eps.push("[2001:db8::1]:4000".parse().unwrap());
    let (_, mut bq) = gen_rendezvous_info(vec![]);
    bq.endpoints = eps;
    let cfg = PunchConfig::default().timeout(Duration::from_secs(2));
    let t0 = Instant::now();
    let local: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let mut core = TcpPunchCore::new(&ap, &bq, local, &cfg, t0);
    let mut first = Vec::new();
    while let Some(ep) = core.poll_dial(t0) {
        first.push(ep);
    }
    assert_eq!(first.len(), MAX_ENDPOINTS);
    assert!(first.iter().all(|e| e.is_ipv4()));
    assert_eq!(core.dials_in_flight(), MAX_ENDPOINTS);
    // Nothing more until one fails; then it is retried after RETRY.
    assert_eq!(core.poll_dial(t0), None);
    core.handle_dial_failed(first[0], t0);
    assert_eq!(core.poll_dial(t0), None);
    assert_eq!(core.poll_timeout(), Some(t0 + RETRY));
    assert_eq!(core.poll_dial(t0 + RETRY), Some(first[0]));
    // A connected endpoint is not dialled again.
    core.handle_dial_connected(first[1]);
    core.handle_dial_failed(first[0], t0 + RETRY);
    let t = t0 + 2 * RETRY;
    assert_eq!(core.poll_dial(t), Some(first[0]));
    assert_eq!(core.poll_dial(t), None);
    core.handle_timeout(t0 + Duration::from_secs(2));
    let f = core.outcome().unwrap().clone().unwrap_err();
    assert_eq!(f.kind, PunchFailureKind::NoResponse);
    assert_eq!(core.poll_dial(t0 + Duration::from_secs(3)), None);
}

#[test]
fn the_first_verified_stream_wins_and_checks_are_bounded() {
    let ((ap, _), (_, bq)) = pair();
    let t0 = Instant::now();
    let local: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let mut core = TcpPunchCore::new(&ap, &bq, local, &PunchConfig::default(), t0);
    for _ in 0..MAX_CHECKS {
        assert!(core.handle_candidate());
    }
    assert!(!core.handle_candidate(), "more than MAX_CHECKS at once");
    core.handle_rejected(Some(Rejected::NotAHello));
    assert!(core.handle_candidate());
    let p1: SocketAddr = "192.0.2.2:4000".parse().unwrap();
    assert_eq!(core.handle_verified(p1), Choice::Keep);
    assert_eq!(core.handle_verified(p1), Choice::Refuse);
    assert_eq!(core.outcome(), Some(&Ok(p1)));
    assert!(!core.handle_candidate());
}

#[test]
fn bad_proofs_explain_the_failure() {
    let ((ap, _), (_, bq)) = pair();
    let t0 = Instant::now();
    let local: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let cfg = PunchConfig::default().timeout(Duration::from_secs(1));
    let mut core = TcpPunchCore::new(&ap, &bq, local, &cfg, t0);
    assert!(core.handle_candidate());
    core.handle_rejected(Some(Rejected::BadProof));
    core.handle_timeout(t0 + Duration::from_secs(1));
    let f = core.outcome().unwrap().clone().unwrap_err();
    assert_eq!(f.kind, PunchFailureKind::WrongSecret);
}
