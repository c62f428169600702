//! Arbitrary bytes into the record decoder of an established session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use transport::proto::{Initiator, Opener, RecvBuf, Responder};
use transport::{Identity, Protocol};

/// One session, set up once: its opener (cloned fresh for each input, so it
/// starts at nonce 0) and three valid records sealed with nonces 0, 1, 2.
fn session() -> &'static (Opener, Vec<u8>) {
    static S: OnceLock<(Opener, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let (init, m1) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
        let acc = Responder::respond(&b, Protocol::Tcp, &m1[2..]).unwrap();
        let (_, mut sealer) = init.finish(&acc.reply[2..]).unwrap().split();
        let (opener, _) = acc.session.split();
        let mut records = Vec::new();
        for msg in [&b"first"[..], &[7u8; 3000][..], b"third"] {
            sealer.seal(msg, &mut records, usize::MAX);
        }
        (opener, records)
    })
}

fuzz_target!(|data: &[u8]| {
    let (opener, records) = session();
    let mut opener = opener.clone();
    // The first byte picks how many valid records lead and the read size.
    let (ctl, junk) = data.split_first().unwrap_or((&0, &[]));
    let lead = match ctl % 4 {
        0 => 0,
        1 => 7 + 16,
        2 => 7 + 16 + 3002 + 16,
        _ => records.len(),
    };
    let read_size = (*ctl as usize / 4) * 331 + 1;
    let mut wire = records[..lead].to_vec();
    wire.extend_from_slice(junk);
    let mut rx = RecvBuf::new();
    let mut out = vec![0u8; read_size];
    let mut off = 0;
    loop {
        match rx.read_plain(&mut opener, &mut out) {
            Ok(Some(n)) => assert!(n > 0 && n <= out.len()),
            Ok(None) => {
                if off == wire.len() {
                    break;
                }
                let spare = rx.spare();
                assert!(!spare.is_empty());
                let n = spare.len().min(wire.len() - off).min(read_size * 3);
                spare[..n].copy_from_slice(&wire[off..off + n]);
                rx.filled(n);
                off += n;
            }
            Err(_) => break,
        }
    }
});
