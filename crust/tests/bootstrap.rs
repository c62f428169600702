//! The bootstrap cache and `bootstrap()`: from contacts, from the cache
//! across a restart, from beacons; a corrupt file set aside; two services on
//! one file; dead contacts do not hold up a live one; every attempt listed;
//! peers heard by the beacon during a bootstrap are tried.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crust::{Config, Endpoint, Error, Protocol, Service};

mod common;

use common::beacon_port;

fn config(network: &str) -> Config {
    common::quiet(network)
}

fn endpoint(s: &Service, p: Protocol) -> Endpoint {
    common::first(s.controller.endpoints(), p)
}

#[test]
fn from_contacts() {
    let a = Service::new_from_config(config("boot-contacts")).unwrap();
    let ep = endpoint(&a, Protocol::Tcp);
    let b = Service::new_from_config(config("boot-contacts").hard_coded_contacts([ep])).unwrap();
    let s = b.controller.bootstrap().unwrap();
    assert_eq!(s.peer_endpoint(), ep);
    // It is in the cache now.
    let cached: Vec<_> = b
        .controller
        .iter_endpoint_cache()
        .map(|c| c.endpoint())
        .collect();
    assert_eq!(cached, vec![ep]);
}

#[test]
fn from_the_cache_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache");
    let a = Service::new_from_config(config("boot-cache")).unwrap();
    let ep = endpoint(&a, Protocol::Utp);
    let c = config("boot-cache")
        .cache_file(&file)
        .connect_timeout(Duration::from_secs(2));
    let b = Service::new_from_config(c.clone()).unwrap();
    drop(b.controller.connect(&ep).unwrap());
    drop(b);
    assert_eq!(crust::cache::read_file(&file).unwrap(), vec![ep]);
    let b = Service::new_from_config(c).unwrap();
    assert!(b.controller.cache_warning().is_none());
    let s = b.controller.bootstrap().unwrap();
    assert_eq!(s.peer_public_key(), a.controller.public_key());
    // A cached entry that no longer answers leaves the cache when its
    // connect fails.
    drop(s);
    drop(a);
    let item = b.controller.iter_endpoint_cache().next().unwrap();
    assert!(item.connect().is_err());
    assert_eq!(b.controller.iter_endpoint_cache().count(), 0);
}

#[test]
fn from_beacons() {
    let port = beacon_port();
    let c = Config::loopback()
        .network_name("boot-beacon")
        .beacon_port(port)
        .beacon_period(Duration::from_millis(100));
    let a = Service::new_from_config(c.clone()).unwrap();
    let mut b = Service::new_from_config(c).unwrap();
    // Wait for the event (a's beacon heard), then bootstrap.
    let heard = b
        .beacon_receiver
        .next_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(heard.public_key, a.controller.public_key());
    let s = b.controller.bootstrap().unwrap();
    assert_eq!(s.peer_public_key(), a.controller.public_key());
}

/// A bootstrap that starts before any peer is heard tries the peers the
/// beacon hears while it runs: `b` bootstraps with nobody to try, then `a`
/// starts beaconing.
#[test]
fn from_a_beacon_heard_during_the_call() {
    let port = beacon_port();
    let c = Config::loopback()
        .network_name("boot-beacon-late")
        .beacon_port(port)
        .beacon_period(Duration::from_millis(100));
    let b = Service::new_from_config(c.clone()).unwrap();
    assert_eq!(b.controller.iter_endpoint_cache().count(), 0);
    let controller = b.controller.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let call = std::thread::spawn(move || {
        tx.send(()).unwrap();
        controller.bootstrap_timeout(Duration::from_secs(20))
    });
    rx.recv().unwrap();
    let a = Service::new_from_config(c).unwrap();
    let s = call.join().unwrap().unwrap();
    assert_eq!(s.peer_public_key(), a.controller.public_key());
}

/// With the beacon on and nobody to hear, bootstrap waits until its
/// deadline, then says it found nobody.
#[test]
fn with_the_beacon_on_and_nobody_around_it_ends_at_its_deadline() {
    let c = Config::loopback()
        .network_name("boot-beacon-alone")
        .beacon_port(beacon_port())
        .beacon_period(Duration::from_millis(100));
    let b = Service::new_from_config(c).unwrap();
    let e = b
        .controller
        .bootstrap_timeout(Duration::from_millis(400))
        .unwrap_err();
    assert!(e.to_string().contains("nobody to try"), "{e}");
}

#[test]
fn a_corrupt_cache_is_set_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.cache");
    std::fs::write(&file, b"CRSC\x01 this is not a cache at all").unwrap();
    let s = Service::new_from_config(config("boot-corrupt").cache_file(&file)).unwrap();
    let w = s.controller.cache_warning().expect("a warning").to_owned();
    assert!(
        w.contains("bootstrap.cache") && w.contains("corrupt"),
        "{w}"
    );
    assert!(dir.path().join("bootstrap.cache.corrupt").exists());
    assert_eq!(s.controller.iter_endpoint_cache().count(), 0);
    // The service still records into a fresh file.
    let a = Service::new_from_config(config("boot-corrupt")).unwrap();
    drop(s.controller.connect(&endpoint(&a, Protocol::Tcp)).unwrap());
    assert_eq!(crust::cache::read_file(&file).unwrap().len(), 1);
}

#[test]
fn two_services_on_one_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.cache");
    let peer = Service::new_from_config(config("boot-shared")).unwrap();
    let ep = endpoint(&peer, Protocol::Tcp);
    let first = Service::new_from_config(config("boot-shared").cache_file(&file)).unwrap();
    drop(first.controller.connect(&ep).unwrap());
    let second = Service::new_from_config(config("boot-shared").cache_file(&file)).unwrap();
    let w = second
        .controller
        .cache_warning()
        .expect("a warning")
        .to_owned();
    assert!(w.contains("in use by another service"), "{w}");
    // It read what the first wrote, and keeps its own changes in memory.
    assert_eq!(second.controller.iter_endpoint_cache().count(), 1);
    second
        .controller
        .cache_endpoint(endpoint(&peer, Protocol::Utp));
    assert_eq!(second.controller.iter_endpoint_cache().count(), 2);
    assert_eq!(crust::cache::read_file(&file).unwrap(), vec![ep]);
}

#[test]
fn dead_contacts_do_not_hold_up_a_live_one() {
    let live_service = Service::new_from_config(config("boot-dead")).unwrap();
    let live = endpoint(&live_service, Protocol::Tcp);
    // Black holes: the kernel accepts, nobody ever answers the handshake.
    let holes: Vec<TcpListener> = (0..10)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let dead: Vec<Endpoint> = holes
        .iter()
        .map(|h| Endpoint::new(Protocol::Tcp, h.local_addr().unwrap(), live.public_key))
        .collect();
    let per_attempt = Duration::from_secs(5);
    let mut contacts = dead.clone();
    contacts.push(live);
    let b = Service::new_from_config(
        config("boot-dead")
            .connect_timeout(per_attempt)
            .hard_coded_contacts(contacts),
    )
    .unwrap();
    let t = Instant::now();
    let s = b.controller.bootstrap().unwrap();
    assert_eq!(s.peer_endpoint(), live);
    // Sooner than any dead attempt could have timed out.
    assert!(t.elapsed() < per_attempt, "took {:?}", t.elapsed());

    // With the live one gone, the error lists every attempt.
    let only_dead = Service::new_from_config(
        config("boot-dead")
            .connect_timeout(Duration::from_millis(300))
            .hard_coded_contacts(dead.clone()),
    )
    .unwrap();
    match only_dead.controller.bootstrap().unwrap_err() {
        Error::Bootstrap { attempts } => {
            assert_eq!(attempts.len(), 10);
            for (ep, why) in &attempts {
                assert!(dead.contains(ep));
                assert!(why.contains("timed out"), "{why}");
            }
        }
        other => panic!("{other}"),
    }
    let nobody = Service::new_from_config(config("boot-dead")).unwrap();
    let e = nobody.controller.bootstrap().unwrap_err();
    assert!(e.to_string().contains("nobody to try"), "{e}");
    drop(holes);
}

#[test]
fn the_seed_cache_file_decodes() {
    // The fuzz corpus seed is a valid file (CRC included).
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/crust_frames/seed-cache"
    ))
    .unwrap();
    let entries = crust::cache::decode(&bytes).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].addr, "192.0.2.1:5483".parse().unwrap());
}
