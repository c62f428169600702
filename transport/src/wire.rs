//! The one registry of numbers the crust crates put on the wire.
//!
//! Every rejection code and every frame type used by any crust protocol is
//! reserved here, once, so that two features never pick the same byte.
//! `docs/wire.md` carries the same tables. A number, once reserved, is never
//! reused for something else; a decoder that meets a number it does not know
//! reports it (for example [`RejectCode::Unknown`]) and never panics.
//!
//! ```
//! use transport::wire::RejectCode;
//!
//! assert_eq!(RejectCode::from_u8(5), RejectCode::OtherNetwork);
//! assert_eq!(RejectCode::OtherNetwork.to_u8(), 5);
//! assert_eq!(RejectCode::from_u8(200), RejectCode::Unknown(200));
//! assert_eq!(RejectCode::Unknown(200).to_string(), "unknown rejection 200");
//! ```

use std::fmt;

/// Why a peer refused a connection: the code byte of a rejection, shared by
/// the transport handshake's rejection frame and crust's reject frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectCode {
    /// 1: the responder speaks another transport version.
    Version,
    /// 2: the responder does not hold the key the initiator dialled.
    Key,
    /// 3: the responder is busy (its accept queue or handshake slots are
    /// full); try again later.
    Busy,
    /// 4: a configured connection limit was reached (inbound connections,
    /// connections per peer key).
    Limit,
    /// 5: the peer belongs to another crust network (network names differ).
    OtherNetwork,
    /// 6: the responder refuses the cipher suite the initiator proposed.
    SuiteRefused,
    /// 7: the peer speaks a crust protocol version we do not.
    CrustVersion,
    /// 8: the peer broke the crust protocol (malformed or unexpected frame).
    Protocol,
    /// A code this version does not know (from a newer peer).
    Unknown(u8),
}

impl RejectCode {
    /// The code's byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            RejectCode::Version => 1,
            RejectCode::Key => 2,
            RejectCode::Busy => 3,
            RejectCode::Limit => 4,
            RejectCode::OtherNetwork => 5,
            RejectCode::SuiteRefused => 6,
            RejectCode::CrustVersion => 7,
            RejectCode::Protocol => 8,
            RejectCode::Unknown(n) => n,
        }
    }

    /// The code for a byte; never fails (unknown bytes give
    /// [`RejectCode::Unknown`]).
    pub const fn from_u8(b: u8) -> RejectCode {
        match b {
            1 => RejectCode::Version,
            2 => RejectCode::Key,
            3 => RejectCode::Busy,
            4 => RejectCode::Limit,
            5 => RejectCode::OtherNetwork,
            6 => RejectCode::SuiteRefused,
            7 => RejectCode::CrustVersion,
            8 => RejectCode::Protocol,
            n => RejectCode::Unknown(n),
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectCode::Version => f.write_str("transport version mismatch"),
            RejectCode::Key => f.write_str("key mismatch"),
            RejectCode::Busy => f.write_str("busy"),
            RejectCode::Limit => f.write_str("connection limit reached"),
            RejectCode::OtherNetwork => f.write_str("other network"),
            RejectCode::SuiteRefused => f.write_str("cipher suite refused"),
            RejectCode::CrustVersion => f.write_str("crust version mismatch"),
            RejectCode::Protocol => f.write_str("protocol violation"),
            RejectCode::Unknown(n) => write!(f, "unknown rejection {n}"),
        }
    }
}

/// Record types of the transport's own control records, the first byte of
/// an encrypted record's plaintext where the transport reads one (0x00–0x0f).
pub mod transport_record {
    /// The admission record: the initiator's first transport record, sent by
    /// the transport at once after the handshake. Its plaintext is exactly
    /// this one byte (so its frame is `00 11 ‖ 17 bytes`). The responder
    /// admits the connection (counts it, queues it for `accept`, reports the
    /// peer key) only once this record decrypts, which proves the initiator
    /// holds this handshake's ephemeral key: a replayed first message never
    /// gets past its handshake slot. The record is consumed by the transport
    /// and never delivered to the application.
    pub const ADMIT: u8 = 0x00;
}

/// Frame types of the crust connection protocol (`crust::proto`), carried
/// inside encrypted transport records. Reserved here so that transport-level
/// control records (admission, see the transport docs) and crust frames never
/// collide: transport control records use 0x00–0x0f, crust frames 0x10–0x3f.
pub mod crust_frame {
    /// A user message: `type ‖ len (u32 BE) ‖ bytes`.
    pub const MESSAGE: u8 = 0x10;
    /// A heartbeat: the type byte alone.
    pub const HEARTBEAT: u8 = 0x11;
    /// The hello each side sends first: version, network name, endpoints.
    pub const HELLO: u8 = 0x12;
    /// A refusal: code ([`RejectCode`](super::RejectCode)) and a reason.
    pub const REJECT: u8 = 0x13;
    /// A clean close: no more frames follow from this side.
    pub const CLOSE: u8 = 0x14;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(RejectCode::from_u8(b).to_u8(), b);
        }
    }

    #[test]
    fn proto_constants_match_the_registry() {
        assert_eq!(crate::proto::REJECT_VERSION, RejectCode::Version.to_u8());
        assert_eq!(crate::proto::REJECT_KEY, RejectCode::Key.to_u8());
    }
}
