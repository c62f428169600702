//! The keys and MACs that authenticate hole punching (sans IO).
//!
//! Both sides' rendezvous infos carry a random 16-byte secret. The secrets
//! travel only in the rendezvous info (out of band, e.g. through an
//! encrypted stream to a hub); they never appear in a probe. A punch key is
//! derived from both (the idea of ICE's MESSAGE-INTEGRITY):
//!
//! `K = HMAC-SHA256(key = low ‖ high, label)`, where `low` and `high` are the
//! two secrets in byte order and `label` names the use (UDP probes and the
//! TCP punch get different keys). Every authenticated message carries a MAC,
//! `HMAC-SHA256(K, fields)` cut to [`MAC_LEN`] bytes, over its fields and the
//! sender's [`Side`], so a message reflected back at its sender does not
//! verify. Freshness is each protocol's: UDP probes carry a sequence number
//! checked against a [`ReplayWindow`]; the TCP punch answers a fresh nonce
//! from each side.
//!
//! A rendezvous info is for one attempt: the UDP and TCP punches of one
//! attempt use different keys, but a second attempt with the same infos
//! would accept the first attempt's probes.

use ring::hmac;

use crate::rendezvous::SECRET_LEN;

/// Length of a (truncated) MAC on the wire.
pub const MAC_LEN: usize = 16;

/// Which of the two sides of a punch we are: the one whose secret is lower
/// in byte order, or the other. Tie-breaks (who chooses the TCP stream)
/// follow it, and every MAC covers the sender's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Our secret is the lower.
    Low,
    /// Our secret is the higher.
    High,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Low => Side::High,
            Side::High => Side::Low,
        }
    }

    /// Its code on the wire: 0 low, 1 high.
    pub fn code(self) -> u8 {
        match self {
            Side::Low => 0,
            Side::High => 1,
        }
    }
}

/// A punch key for one use (see the module docs), and our side.
#[derive(Clone)]
pub(crate) struct PunchKey {
    key: hmac::Key,
    side: Side,
}

impl std::fmt::Debug for PunchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PunchKey")
            .field("key", &"<hidden>")
            .field("side", &self.side)
            .finish()
    }
}

impl PunchKey {
    /// The key for `label` between our secret and theirs; `None` when the
    /// two are equal (then no side can be told apart and nothing verifies:
    /// the peer sent our own info back).
    pub(crate) fn new(
        ours: &[u8; SECRET_LEN],
        theirs: &[u8; SECRET_LEN],
        label: &[u8],
    ) -> Option<PunchKey> {
        let (side, low, high) = match ours.cmp(theirs) {
            std::cmp::Ordering::Less => (Side::Low, ours, theirs),
            std::cmp::Ordering::Greater => (Side::High, theirs, ours),
            std::cmp::Ordering::Equal => return None,
        };
        let mut ikm = [0u8; 2 * SECRET_LEN];
        ikm[..SECRET_LEN].copy_from_slice(low);
        ikm[SECRET_LEN..].copy_from_slice(high);
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &ikm), label);
        Some(PunchKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()),
            side,
        })
    }

    /// Our side.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// The MAC of a message sent by `sender` made of `parts`.
    pub(crate) fn mac(&self, sender: Side, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&[sender.code()]);
        for p in parts {
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }

    /// Whether `mac` is the MAC of a message from `sender` made of `parts`
    /// (compared in constant time).
    pub(crate) fn verify(&self, sender: Side, parts: &[&[u8]], mac: &[u8]) -> bool {
        let want = self.mac(sender, parts);
        mac.len() == MAC_LEN && ct_eq(&want, mac)
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time over equal lengths: fold the differences.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which sequence numbers we have seen, as IPsec's anti-replay window
/// (RFC 4303 §3.4.3): the highest so far and a bitmap of the 64 below it.
/// Older numbers are refused as replays; a reordered number inside the
/// window is accepted once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    top: Option<u64>,
    bits: u64,
}

impl ReplayWindow {
    /// Records `seq`; false when it was seen before or is older than the
    /// window (a replay).
    pub(crate) fn check_and_set(&mut self, seq: u64) -> bool {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.bits = 1;
            return true;
        };
        if seq > top {
            let shift = seq - top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = Some(seq);
            return true;
        }
        let back = top - seq;
        if back >= 64 {
            return false;
        }
        let bit = 1u64 << back;
        if self.bits & bit != 0 {
            return false;
        }
        self.bits |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_one_key_and_opposite_sides() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let ka = PunchKey::new(&a, &b, b"x").unwrap();
        let kb = PunchKey::new(&b, &a, b"x").unwrap();
        assert_eq!((ka.side(), kb.side()), (Side::Low, Side::High));
        let m = ka.mac(Side::Low, &[b"hello"]);
        assert!(kb.verify(Side::Low, &[b"hello"], &m));
        // The sender's side is covered: a reflected message fails.
        assert!(!kb.verify(Side::High, &[b"hello"], &m));
        // Another label, another key.
        let kc = PunchKey::new(&b, &a, b"y").unwrap();
        assert!(!kc.verify(Side::Low, &[b"hello"], &m));
        // A third party's secret, another key.
        let kd = PunchKey::new(&[3u8; 16], &a, b"x").unwrap();
        assert!(!kd.verify(Side::Low, &[b"hello"], &m));
        assert!(!kb.verify(Side::Low, &[b"hello"], &m[..MAC_LEN - 1]));
        assert!(PunchKey::new(&a, &a, b"x").is_none());
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(w.check_and_set(10));
        assert!(!w.check_and_set(10));
        assert!(w.check_and_set(12));
        assert!(w.check_and_set(11)); // reordered, inside the window
        assert!(!w.check_and_set(11));
        assert!(w.check_and_set(200));
        assert!(!w.check_and_set(12)); // older than the window
        assert!(w.check_and_set(137)); // 200 - 63
        assert!(!w.check_and_set(136));
        assert!(w.check_and_set(u64::MAX));
        assert!(!w.check_and_set(u64::MAX));
    }
}
