//! ListenerSet on loopback: a rendezvous prepared by a set whose peer
//! reaches one of the set's listeners gets that stream through `connect`
//! (path `Mapped`), and `accept` never sees it; a forged, replayed or
//! expired token is refused (counted) and the good exchange goes on;
//! unsolicited dials still reach `accept`.
//!
//! The punch endpoints are taken out of the exchanged infos, so the
//! listener path is the only one that can work and the outcome does not
//! depend on which path is quicker. Bound: every connect has a timeout of
//! at most 10 s; the whole file runs in a few seconds.

use std::io::{Read, Write};
use std::time::Duration;

use nat_traversal::{MappingContext, MappingOptions, PubRendezvousInfo};
use transport::rendezvous::{Attempt, AttemptFailure, Rendezvous};
use transport::{
    Error, Identity, Listener, ListenerSet, ListenerSetOptions, Path, Protocol, Stream,
};

const T: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_secs(3);

fn mc() -> MappingContext {
    MappingContext::with_options(
        MappingOptions::default()
            .igd(false)
            .local_ip(Some("127.0.0.1".parse().unwrap())),
    )
    .unwrap()
}

fn set_with(id: &Identity, options: ListenerSetOptions) -> ListenerSet {
    let set = ListenerSet::with_options(&mc(), options);
    set.add_listener(Listener::bind(id, "tcp://127.0.0.1:0").unwrap())
        .unwrap();
    set.add_listener(Listener::bind(id, "utp://127.0.0.1:0").unwrap())
        .unwrap();
    set
}

/// The info without its punch endpoints: only listener endpoints are left.
fn listeners_only(i: &PubRendezvousInfo) -> PubRendezvousInfo {
    let mut i = i.clone();
    i.endpoints.clear();
    i.tcp_endpoints.clear();
    i
}

fn exchange(a: &mut Stream, b: &mut Stream) {
    a.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    b.write_all(b"pong").unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

/// Connects `a` (a plain rendezvous) to `b` (prepared by a set) with
/// punch endpoints stripped; returns both results.
fn connect_pair(
    a: Rendezvous,
    b: Rendezvous,
    b_info: PubRendezvousInfo,
    timeout: Duration,
) -> (transport::Result<Stream>, transport::Result<Stream>) {
    let ia = listeners_only(a.info());
    let t = std::thread::spawn(move || b.connect(&ia, timeout));
    let ra = a.connect(&b_info, timeout);
    (ra, t.join().unwrap())
}

#[test]
fn a_peer_reaching_our_listener_gets_to_connect_never_to_accept() {
    let idb = Identity::generate();
    let set = set_with(&idb, ListenerSetOptions::default());
    for round in 0..4 {
        let ida = Identity::generate();
        let a = Rendezvous::prepare(&mc(), &ida).unwrap();
        let b = set.prepare_rendezvous().unwrap();
        let ib = b.info().clone();
        assert!(ib.listener_token.is_some());
        assert_eq!(ib.listener_endpoints.len(), 2, "{ib:?}");
        assert_eq!(set.pending_rendezvous(), 1);
        let started = std::time::Instant::now();
        let (ra, rb) = connect_pair(a, b, listeners_only(&ib), T);
        let took = started.elapsed();
        let (mut sa, mut sb) = (ra.unwrap(), rb.unwrap());
        assert!(matches!(sa.path(), Path::Mapped(_)), "{}", sa.path());
        assert_eq!(sa.path(), sb.path(), "round {round}");
        assert_eq!(sa.peer_public_key(), idb.public_key());
        assert_eq!(sb.peer_public_key(), ida.public_key());
        exchange(&mut sa, &mut sb);
        assert_eq!(set.pending_rendezvous(), 0, "the token left with the race");
        // An unsolicited client reaches accept, and is the first there: the
        // rendezvous stream was never queued for it.
        let client = Identity::generate();
        let ck = client.public_key();
        let ep = set
            .endpoints()
            .into_iter()
            .find(|e| {
                e.protocol
                    == if round % 2 == 0 {
                        Protocol::Tcp
                    } else {
                        Protocol::Utp
                    }
            })
            .unwrap();
        let c = std::thread::spawn(move || Stream::direct_connect(&client, ep, T));
        let mut accepted = set.accept_timeout(T).unwrap();
        let mut dialled = c.join().unwrap().unwrap();
        assert_eq!(accepted.peer_public_key(), ck);
        exchange(&mut dialled, &mut accepted);
        println!("round {round}: {} in {took:?}", sa.path());
    }
    assert_eq!(set.token_refusals(), Default::default());
}

#[test]
fn forged_replayed_and_expired_tokens_are_refused_and_the_good_exchange_goes_on() {
    let idb = Identity::generate();
    let set = set_with(&idb, ListenerSetOptions::default());
    let b = set.prepare_rendezvous().unwrap();
    let ib = listeners_only(b.info());

    // Forged: the right endpoints and key, another token.
    let mut forged = ib.clone();
    forged.listener_token = Some(rand::random());
    let c = Rendezvous::prepare(&mc(), &Identity::generate()).unwrap();
    let err = c.connect(&forged, SHORT).unwrap_err();
    assert_listener_attempt_failed(&err);
    assert_eq!(set.token_refusals().unknown, 1);

    // The good exchange is not disturbed.
    let ida = Identity::generate();
    let a = Rendezvous::prepare(&mc(), &ida).unwrap();
    let (ra, rb) = connect_pair(a, b, ib.clone(), T);
    let (mut sa, mut sb) = (ra.unwrap(), rb.unwrap());
    assert!(matches!(sb.path(), Path::Mapped(_)), "{}", sb.path());
    exchange(&mut sa, &mut sb);

    // Replayed: the same info once more, by the same peer or another.
    for id in [ida.clone(), Identity::generate()] {
        let d = Rendezvous::prepare(&mc(), &id).unwrap();
        let err = d.connect(&ib, SHORT).unwrap_err();
        assert_listener_attempt_failed(&err);
    }
    assert_eq!(set.token_refusals().replayed, 2);
    // The stream of the good exchange still works.
    exchange(&mut sb, &mut sa);

    // Expired: a set whose prepared tokens live no time at all.
    let short = set_with(
        &Identity::generate(),
        ListenerSetOptions::default().prepared_lifetime(Duration::ZERO),
    );
    let e = short.prepare_rendezvous().unwrap();
    let ie = listeners_only(e.info());
    let f = Rendezvous::prepare(&mc(), &Identity::generate()).unwrap();
    let err = f.connect(&ie, SHORT).unwrap_err();
    assert_listener_attempt_failed(&err);
    assert_eq!(short.token_refusals().expired, 1);
    drop(e);

    // Nothing of this reached accept: an unsolicited client is first.
    let client = Identity::generate();
    let ck = client.public_key();
    let ep = set.endpoints()[0];
    let c = std::thread::spawn(move || Stream::direct_connect(&client, ep, T));
    let accepted = set.accept_timeout(T).unwrap();
    assert_eq!(accepted.peer_public_key(), ck);
    c.join().unwrap().unwrap();
}

fn assert_listener_attempt_failed(err: &Error) {
    let Error::RendezvousFailed(f) = err else {
        panic!("{err}")
    };
    let why = f
        .attempts
        .iter()
        .find(|(a, _)| *a == Attempt::TheirListener)
        .map(|(_, why)| why.clone());
    assert!(
        matches!(why, Some(AttemptFailure::Other(ref s)) if s.contains("did not take our token")
            || s.contains("selection")),
        "{f}"
    );
}

#[test]
fn the_set_refuses_a_listener_of_another_key_and_gives_listeners_back() {
    let id = Identity::generate();
    let set = ListenerSet::new(&mc());
    assert!(matches!(
        set.prepare_rendezvous().unwrap_err(),
        Error::Closed(_)
    ));
    let l = set
        .add_listener(Listener::bind(&id, "tcp://127.0.0.1:0").unwrap())
        .unwrap();
    let other = Listener::bind(&Identity::generate(), "tcp://127.0.0.1:0").unwrap();
    assert!(matches!(
        set.add_listener(other).unwrap_err(),
        Error::ListenerKeyMismatch { .. }
    ));
    let back = set.remove_listener(l).unwrap();
    assert_eq!(back.public_key(), id.public_key());
    assert!(set.endpoints().is_empty());
    assert!(set.remove_listener(l).is_none());
}

#[test]
fn the_utp_listener_path_carries_the_stream_too() {
    // Only a uTP listener: the listener path runs over uTP.
    let idb = Identity::generate();
    let set = ListenerSet::new(&mc());
    set.add_listener(Listener::bind(&idb, "utp://127.0.0.1:0").unwrap())
        .unwrap();
    let a = Rendezvous::prepare(&mc(), &Identity::generate()).unwrap();
    let b = set.prepare_rendezvous().unwrap();
    let ib = listeners_only(b.info());
    let (ra, rb) = connect_pair(a, b, ib, T);
    let (mut sa, mut sb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(sa.path(), Path::Mapped(Protocol::Utp));
    assert_eq!(sb.path(), Path::Mapped(Protocol::Utp));
    exchange(&mut sa, &mut sb);
}

#[test]
fn dropping_the_set_closes_its_listeners_before_the_drop_returns() {
    let set = set_with(&Identity::generate(), ListenerSetOptions::default());
    let tcp = set
        .endpoints()
        .into_iter()
        .find(|e| e.protocol == Protocol::Tcp)
        .unwrap();
    let _pending = set.prepare_rendezvous().unwrap();
    drop(set);
    let e = std::net::TcpStream::connect(tcp.addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn rendezvous_streams_do_not_wait_behind_a_full_accept_queue() {
    let idb = Identity::generate();
    let set = set_with(&idb, ListenerSetOptions::default().accept_queue(1));
    let ep = set
        .endpoints()
        .into_iter()
        .find(|e| e.protocol == Protocol::Tcp)
        .unwrap();
    // Nobody accepts: one fills the queue, one is held, the rest closed.
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
    let _clients: Vec<Stream> = ids
        .iter()
        .map(|id| Stream::direct_connect(id, ep, T).unwrap())
        .collect();
    let a = Rendezvous::prepare(&mc(), &Identity::generate()).unwrap();
    let b = set.prepare_rendezvous().unwrap();
    let ib = listeners_only(b.info());
    let (ra, rb) = connect_pair(a, b, ib, T);
    let (mut sa, mut sb) = (ra.unwrap(), rb.unwrap());
    assert!(matches!(sb.path(), Path::Mapped(_)), "{}", sb.path());
    exchange(&mut sa, &mut sb);
    // The first two unsolicited ones are still there for accept.
    for id in &ids[..2] {
        assert_eq!(
            set.accept_timeout(T).unwrap().peer_public_key(),
            id.public_key()
        );
    }
}
