//! Encrypted uTP over a real lossy, rate-limited link: two hosts in network
//! namespaces, 5% of UDP packets dropped at random on each host's input
//! (nftables `numgen random`) and a 20 Mbit/s `tc tbf` bottleneck on one
//! side. A 5 MiB transfer must arrive intact.

use std::path::Path;
use std::time::Duration;

use netlab::lab::{IGNORE_REASON, Lab};

const LOSS: &str = "
table inet crust_loss {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < 5 counter drop
    }
}
";

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_encrypted_utp_transfer_over_lossy_rate_limited_link() {
    let _ = IGNORE_REASON;
    let lab = Lab::new("lossy_utp").unwrap();
    let wire = lab.segment("wire", "198.51.100.64/27").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let _ip_a = lab.attach(&a, &wire, "eth0").unwrap();
    let ip_b = lab.attach(&b, &wire, "eth0").unwrap();
    a.nft(LOSS).unwrap();
    b.nft(LOSS).unwrap();
    a.run(&[
        "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "20mbit", "burst", "32kbit",
        "latency", "400ms",
    ])
    .unwrap();

    let bin = Path::new(env!("CARGO_BIN_EXE_bulk_transfer"));
    let mut receiver = b
        .spawn(bin, &["listen", &format!("utp://{ip_b}:0")])
        .unwrap();
    let ep = receiver
        .expect_prefix("endpoint: ", Duration::from_secs(20))
        .unwrap();
    let bytes = (5 << 20).to_string();
    let mut sender = a.spawn(bin, &["send", &ep, &bytes]).unwrap();
    let got = receiver
        .expect_prefix("received: ", Duration::from_secs(180))
        .unwrap();
    assert_eq!(got, format!("{bytes} bytes intact"));
    let sent = sender
        .expect_prefix("sent: ", Duration::from_secs(60))
        .unwrap();
    eprintln!("lossy uTP transfer: {sent}");
    assert!(receiver.wait(Duration::from_secs(10)).unwrap().success());
    assert!(sender.wait(Duration::from_secs(10)).unwrap().success());
    // The loss rules really dropped packets, in both directions.
    for host in [&a, &b] {
        let rules = host
            .run(&["nft", "list", "table", "inet", "crust_loss"])
            .unwrap();
        let dropped: u64 = rules
            .split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no drop counter in {rules}"));
        eprintln!("{}: {dropped} packets dropped", host.namespace());
        assert!(dropped > 0, "the loss rule dropped nothing: {rules}");
    }
}
