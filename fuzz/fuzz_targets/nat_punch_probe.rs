//! The punch core fed arbitrary datagrams: no panic, and no success without
//! a probe carrying both right secrets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nat_traversal::punch::{PunchConfig, PunchCore};
use nat_traversal::gen_rendezvous_info;

fuzz_target!(|data: &[u8]| {
    let now = std::time::Instant::now();
    let (ours, _) = gen_rendezvous_info(vec![]);
    let (_, theirs) = gen_rendezvous_info(vec!["203.0.113.9:4000".parse().unwrap()]);
    let mut core = PunchCore::new(ours, theirs, PunchConfig::default(), now);
    while core.poll_transmit(now).is_some() {}
    for chunk in data.chunks(38) {
        core.handle_datagram(chunk, "203.0.113.9:4000".parse().unwrap(), now);
        while core.poll_transmit(now).is_some() {}
    }
    // Random secrets: the fuzzer cannot guess both 16-byte secrets.
    assert!(!matches!(core.outcome(), Some(Ok(_))));
});
