//! The async face: the same service and streams from a tokio program
//! (here a current-thread runtime of the test's own), over TCP and uTP;
//! heartbeats and loss; many streams without threads.

use std::time::Duration;
use tokio::io::AsyncWriteExt;

use crust::aio::Service;
use crust::{Config, Endpoint, Error, Protocol};

mod common;

fn config(network: &str) -> Config {
    common::quiet(network)
}

fn endpoint(s: &Service, p: Protocol) -> Endpoint {
    common::first(s.controller.endpoints(), p)
}

#[tokio::test(flavor = "current_thread")]
async fn connect_accept_send_recv_over_tcp_and_utp() {
    let a = Service::new_from_config(config("aio")).await.unwrap();
    let b = Service::new_from_config(config("aio")).await.unwrap();
    for p in [Protocol::Tcp, Protocol::Utp] {
        let s = a.controller.connect(&endpoint(&b, p)).await.unwrap();
        let mut t = b.acceptor.accept().await.unwrap();
        assert_eq!(s.path(), crust::Path::Direct(p));
        assert_eq!(t.peer_public_key(), a.controller.public_key());
        let (tx, mut rx) = s.split();
        for i in 0..100u32 {
            tx.send(&i.to_be_bytes()).await.unwrap();
        }
        tx.send(&vec![9; 200_000]).await.unwrap();
        for i in 0..100u32 {
            let m = t.recv().await.unwrap();
            t.send(&m).await.unwrap();
            assert_eq!(m, i.to_be_bytes());
        }
        assert_eq!(t.recv().await.unwrap(), vec![9; 200_000]);
        for i in 0..100u32 {
            assert_eq!(rx.recv().await.unwrap(), i.to_be_bytes());
        }
        t.close().await.unwrap();
        assert!(matches!(rx.recv().await, Err(Error::Closed(_))));
        let e = tx.send(&[0; 17 << 20]).await.unwrap_err();
        assert!(matches!(e, Error::MessageTooLarge { .. }), "{e}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn idle_streams_live_on_heartbeats_and_a_silent_peer_is_lost() {
    let c = config("aio-live")
        .heartbeat_period(Duration::from_millis(50))
        .inactivity_timeout(Duration::from_millis(600));
    let a = Service::new_from_config(c.clone()).await.unwrap();
    let b = Service::new_from_config(c).await.unwrap();
    let s = a
        .controller
        .connect(&endpoint(&b, Protocol::Tcp))
        .await
        .unwrap();
    let mut t = b.acceptor.accept().await.unwrap();
    // Five inactivity timeouts of silence from the users: heartbeats only.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    s.send(b"alive").await.unwrap();
    assert_eq!(t.recv().await.unwrap(), b"alive");

    // A raw transport peer that sends its hello and then nothing.
    let ep = endpoint(&b, Protocol::Tcp);
    let mut raw = transport::aio::Stream::direct_connect(
        &transport::Identity::generate(),
        ep,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut hello = Vec::new();
    crust::proto::Hello {
        version: crust::proto::CRUST_VERSION,
        network: "aio-live".into(),
        inactivity_timeout: Duration::from_secs(60),
        listeners: vec![],
    }
    .encode(&mut hello);
    raw.write_all(&hello).await.unwrap();
    raw.flush().await.unwrap();
    let mut silent = b.acceptor.accept().await.unwrap();
    let e = silent.recv().await.unwrap_err();
    assert!(matches!(e, Error::PeerLost { .. }), "{e}");
    drop(raw);
}
