//! The Service-level rendezvous on loopback: two services prepare, swap
//! infos, and connect; both get a crust stream (hellos exchanged,
//! heartbeats on) whose path says hole-punched, and messages flow; the
//! same through `crust::aio`.

use std::time::Duration;

use crust::{Config, Path, Service};

#[test]
fn two_services_meet_by_rendezvous() {
    let c = Config::loopback().network_name("rendezvous-test");
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    let pa = a.controller.prepare_rendezvous().unwrap();
    let pb = b.controller.prepare_rendezvous().unwrap();
    let (ia, ib) = (pa.info().clone(), pb.info().clone());
    assert_eq!(ia.static_key, Some(*a.controller.public_key().as_bytes()));
    let (sa, sb) = std::thread::scope(|s| {
        let t = s.spawn(|| b.controller.rendezvous_connect(pb, &ia));
        let sa = a.controller.rendezvous_connect(pa, &ib).unwrap();
        (sa, t.join().unwrap().unwrap())
    });
    assert_eq!(sa.peer_public_key(), b.controller.public_key());
    assert_eq!(sb.peer_public_key(), a.controller.public_key());
    assert!(matches!(sa.path(), Path::HolePunched(_)), "{}", sa.path());
    assert_eq!(sa.path(), sb.path());
    sa.send(b"hello over the hole").unwrap();
    assert_eq!(
        sb.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"hello over the hole"
    );
    sb.send(b"back").unwrap();
    assert_eq!(sa.recv_timeout(Duration::from_secs(5)).unwrap(), b"back");
}

#[test]
fn a_forged_key_in_the_info_fails_typed() {
    let c = Config::loopback().network_name("rendezvous-test");
    let a = Service::new_from_config(c.clone()).unwrap();
    let b = Service::new_from_config(c).unwrap();
    let pa = a.controller.prepare_rendezvous().unwrap();
    let pb = b.controller.prepare_rendezvous().unwrap();
    let ia = pa.info().clone();
    let forged = pb.info().clone().with_static_key([7; 32]);
    let err = std::thread::scope(|s| {
        let t = s.spawn(|| {
            b.controller
                .rendezvous_connect_timeout(pb, &ia, Duration::from_secs(3))
        });
        let err = a
            .controller
            .rendezvous_connect_timeout(pa, &forged, Duration::from_secs(3))
            .unwrap_err();
        let _ = t.join();
        err
    });
    assert!(err.to_string().contains("does not hold the key"), "{err}");
}

/// The async twin: `crust::aio` services on one runtime meet by rendezvous
/// (both connects awaited together on one task).
#[test]
fn two_aio_services_meet_by_rendezvous() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Config::loopback()
            .network_name("rendezvous-aio")
            .beacon_enabled(false);
        let a = crust::aio::Service::new_from_config(c.clone())
            .await
            .unwrap();
        let b = crust::aio::Service::new_from_config(c).await.unwrap();
        let pa = a.controller.prepare_rendezvous().await.unwrap();
        let pb = b.controller.prepare_rendezvous().await.unwrap();
        let (ia, ib) = (pa.info().clone(), pb.info().clone());
        let (sa, sb) = tokio::join!(
            a.controller.rendezvous_connect(pa, &ib),
            b.controller.rendezvous_connect(pb, &ia)
        );
        let (sa, mut sb) = (sa.unwrap(), sb.unwrap());
        assert_eq!(sa.peer_public_key(), b.controller.public_key());
        assert!(matches!(sa.path(), Path::HolePunched(_)), "{}", sa.path());
        assert_eq!(sa.path(), sb.path());
        sa.send(b"async hello").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sb.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"async hello");
    });
}
