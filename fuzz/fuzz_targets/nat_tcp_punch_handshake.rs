//! The TCP punch handshake core on arbitrary peer messages: a hello, a
//! proof and a choice cut from the input (or, by a flag, the genuine peer's
//! messages with bytes changed). Checks: no panic; an altered proof or
//! choice never verifies; the genuine handshake always does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nat_traversal::gen_rendezvous_info;
use nat_traversal::tcp_punch::{CHOICE_LEN, HELLO_LEN, PROOF_LEN, TcpHandshake};

fuzz_target!(|data: &[u8]| {
    let (ap, aq) = gen_rendezvous_info(vec![]);
    let (bp, bq) = gen_rendezvous_info(vec![]);
    let mut a = TcpHandshake::new(&ap, &bq, [1; 16]).unwrap();
    let mut b = TcpHandshake::new(&bp, &aq, [2; 16]).unwrap();
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Arbitrary messages to `a`.
        if rest.len() < HELLO_LEN + PROOF_LEN + CHOICE_LEN {
            return;
        }
        let hello: [u8; HELLO_LEN] = rest[..HELLO_LEN].try_into().unwrap();
        let proof: [u8; PROOF_LEN] = rest[HELLO_LEN..HELLO_LEN + PROOF_LEN].try_into().unwrap();
        let choice: [u8; CHOICE_LEN] = rest[HELLO_LEN + PROOF_LEN..][..CHOICE_LEN].try_into().unwrap();
        if a.handle_hello(&hello).is_ok() {
            // A proof from bytes that do not know the key never verifies
            // (a 2^-128 chance aside).
            assert!(a.handle_proof(&proof).is_err());
            assert!(a.handle_choice(&choice).is_err());
        }
        return;
    }
    // The genuine exchange, with one byte of b's proof or choice changed.
    let pa = a.handle_hello(&b.hello()).unwrap();
    let pb = b.handle_hello(&a.hello()).unwrap();
    b.handle_proof(&pa).unwrap();
    let (Some(&at), Some(&x)) = (rest.first(), rest.get(1)) else { return };
    let x = x | 1;
    let mut pb2 = pb;
    pb2[usize::from(at) % PROOF_LEN] ^= x;
    assert!(a.handle_proof(&pb2).is_err());
    a.handle_proof(&pb).unwrap();
    let (chooser, reader) = if a.is_chooser() { (&a, &b) } else { (&b, &a) };
    let c = chooser.choice(true);
    let mut c2 = c;
    c2[usize::from(at) % CHOICE_LEN] ^= x;
    assert!(reader.handle_choice(&c2).is_err());
    assert!(reader.handle_choice(&c).is_ok());
});
