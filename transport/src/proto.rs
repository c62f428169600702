//! The sans-IO core of the encrypted transport: the Noise `IK` handshake and
//! the record framing. Bytes in, bytes out: no sockets, no clocks, no tasks.
//!
//! # Wire format
//!
//! Every message on the wire is a *frame*: a 2-byte big-endian length, then
//! that many bytes of body.
//!
//! 1. The initiator sends `MAGIC ‖ VERSION ‖ noise_msg1`. The Noise prologue
//!    binds the protocol name, version and carrier (`tcp`/`utp`), so peers of
//!    another version or carrier fail the handshake cleanly.
//! 2. The responder answers `0 ‖ noise_msg2` on success, or a rejection
//!    `code ‖ detail` and closes, the code from the one registry
//!    ([`RejectCode`]): [`RejectCode::Version`] (detail: its version)
//!    when the versions differ, [`RejectCode::Key`] when it cannot decrypt
//!    the first message, which means the initiator dialled a key the
//!    responder does not hold, [`RejectCode::Busy`] when its accept queue
//!    has no room (the first message was good; try again later). A code the
//!    initiator does not know decodes to [`HandshakeError::Rejected`]
//!    ("unknown rejection N"). A first frame without [`MAGIC`] is not ours
//!    and gets no answer.
//! 3. The initiator's first record is the *admission record*
//!    ([`ADMISSION_FRAME`]): its plaintext is the one byte
//!    [`wire::transport_record::ADMIT`](crate::wire::transport_record::ADMIT).
//!    The transport sends it at once after the handshake
//!    ([`Session::seal_admission`]); the responder admits the connection
//!    only once it decrypts ([`Session::open_admission`]), since only the
//!    holder of this handshake's ephemeral key can make it: a replayed first
//!    message gets a reply and nothing more. It is never delivered to the
//!    application.
//!
//! `docs/wire.md` in the repository writes every byte down, with worked
//! examples that the tests check against this code.
//! 4. Then each record is one frame holding one Noise transport message:
//!    ChaCha20-Poly1305 ciphertext with a 16-byte tag, at most
//!    [`MAX_FRAME_LEN`] bytes. Nonces count up from zero in each direction,
//!    so a replayed, reordered, dropped or altered frame fails authentication.
//!
//! # Example: a handshake and a record, with no I/O
//!
//! ```
//! use transport::proto::{Initiator, Responder, RecvBuf};
//! use transport::{Identity, Protocol};
//!
//! let (alice, bob) = (Identity::generate(), Identity::generate());
//! let (initiator, msg1) = Initiator::start(&alice, &bob.public_key(), Protocol::Tcp, b"")?;
//! let accepted = Responder::respond(&bob, Protocol::Tcp, &msg1[2..]).map_err(|r| r.error)?;
//! assert_eq!(accepted.peer, alice.public_key());
//! let alice_session = initiator.finish(&accepted.reply[2..])?;
//!
//! let (_, mut sealer) = alice_session.split();
//! let (mut opener, _) = accepted.session.split();
//! let mut wire = Vec::new();
//! sealer.seal(b"hello", &mut wire, usize::MAX);
//!
//! let mut rx = RecvBuf::new();
//! rx.spare()[..wire.len()].copy_from_slice(&wire);
//! rx.filled(wire.len());
//! let mut out = [0u8; 64];
//! let n = rx.read_plain(&mut opener, &mut out)?.expect("a whole frame is buffered");
//! assert_eq!(&out[..n], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use snow::{Builder, HandshakeState};
use zeroize::Zeroize;

use crate::endpoint::Protocol;
use crate::identity::{Identity, PublicKey};
use crate::wire::RejectCode;

/// The first four bytes of every crust transport connection.
pub const MAGIC: [u8; 4] = *b"CRST";
/// The transport protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// The status byte of a responder's answer that accepts the handshake; any
/// other value is a rejection code ([`RejectCode`]).
pub const ACCEPTED: u8 = 0;
/// Rejection code: the responder speaks another version (detail: its
/// version). An alias of [`RejectCode::Version`] in the registry.
pub const REJECT_VERSION: u8 = RejectCode::Version.to_u8();
/// Rejection code: the responder could not decrypt the first message, so the
/// initiator dialled a key the responder does not hold. An alias of
/// [`RejectCode::Key`] in the registry.
pub const REJECT_KEY: u8 = RejectCode::Key.to_u8();
/// Rejection code: the responder is busy (its accept queue is full); the
/// initiator may try again later. An alias of [`RejectCode::Busy`].
pub const REJECT_BUSY: u8 = RejectCode::Busy.to_u8();
/// The length of the admission record's frame, length prefix included: the
/// one-byte plaintext and its tag.
pub const ADMISSION_FRAME: usize = 2 + 1 + TAG_LEN;
/// The largest frame body (a Noise message).
pub const MAX_FRAME_LEN: usize = 65535;
/// The authentication tag every record carries.
pub const TAG_LEN: usize = 16;
/// The most plaintext one record carries.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_FRAME_LEN - TAG_LEN;
/// The largest handshake frame a peer may send; longer ones are refused
/// before their body is read.
pub const MAX_HANDSHAKE_FRAME: usize = 512;
/// The largest payload the initiator may carry in its first message.
pub const MAX_HANDSHAKE_PAYLOAD: usize = 128;

const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_PREFIX: &[u8] = b"crust-transport/";
/// Noise `IK` message 1 without payload: e (32) + encrypted s (48) + tag (16).
const IK_MSG1_LEN: usize = 32 + 48 + 16;
/// Noise `IK` message 2 without payload: e (32) + tag (16).
const IK_MSG2_LEN: usize = 32 + 16;

/// Why a handshake failed, as the core sees it (no addresses: the drivers
/// add those).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first frame does not start with [`MAGIC`]: not a crust peer.
    NotCrust,
    /// The peer speaks `theirs`, we speak [`VERSION`].
    VersionMismatch {
        /// The peer's version.
        theirs: u8,
    },
    /// The responder does not hold the key we dialled (it said so, or we,
    /// as responder, could not decrypt the first message).
    KeyMismatch,
    /// The responder is busy (its accept queue is full): try again later.
    Busy,
    /// The initiator's first record is not a valid admission record: it does
    /// not decrypt (a replayed first message, say) or holds something else.
    NotAdmitted(String),
    /// The peer rejected the handshake for another reason than a version,
    /// key or busy (a limit, ...), or with a code this version does not know
    /// ([`RejectCode::Unknown`]).
    Rejected {
        /// The rejection code, from the registry.
        code: RejectCode,
    },
    /// The initiator's payload is longer than [`MAX_HANDSHAKE_PAYLOAD`]
    /// (a caller's mistake: nothing was sent).
    PayloadTooLong {
        /// The payload's length.
        len: usize,
    },
    /// A handshake frame is malformed; the text says how.
    Malformed(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::NotCrust => {
                f.write_str("the peer is not a crust transport peer (bad magic)")
            }
            HandshakeError::VersionMismatch { theirs } => write!(
                f,
                "protocol version mismatch: we speak v{VERSION}, the peer speaks v{theirs}"
            ),
            HandshakeError::KeyMismatch => f.write_str(
                "peer key mismatch: the responder does not hold the key the initiator dialled",
            ),
            HandshakeError::Busy => {
                f.write_str("the responder is busy (its accept queue is full); try again later")
            }
            HandshakeError::NotAdmitted(why) => write!(f, "connection not admitted: {why}"),
            HandshakeError::Rejected { code } => {
                write!(f, "the peer rejected the handshake: {code}")
            }
            HandshakeError::PayloadTooLong { len } => write!(
                f,
                "a handshake payload of {len} bytes is over the limit of {MAX_HANDSHAKE_PAYLOAD}"
            ),
            HandshakeError::Malformed(why) => write!(f, "malformed handshake: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Why a record could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is too short to hold its authentication tag.
    TooShort {
        /// The frame's length.
        len: usize,
    },
    /// A frame failed authentication: corrupted, forged, replayed or out of
    /// order.
    Authentication,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort { len } => write!(
                f,
                "malformed record: a {len}-byte frame cannot hold its {TAG_LEN}-byte tag"
            ),
            FrameError::Authentication => f.write_str(
                "record failed authentication (corrupted, forged, replayed or reordered frame)",
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn prologue(protocol: Protocol) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_PREFIX.len() + 5);
    p.extend_from_slice(PROLOGUE_PREFIX);
    p.push(VERSION);
    p.push(b'/');
    p.extend_from_slice(protocol.scheme().as_bytes());
    p
}

fn builder_params() -> snow::params::NoiseParams {
    // Invariant: NOISE_PARAMS is a valid, supported pattern name (tested).
    NOISE_PARAMS.parse().expect("valid Noise parameters")
}

/// Prepends the 2-byte length to `body`.
fn framed(body_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut out = vec![0u8; 2 + body_len];
    let n = fill(&mut out[2..]);
    out.truncate(2 + n);
    out[..2].copy_from_slice(&(n as u16).to_be_bytes());
    out
}

/// The initiator's side of the handshake: it knows the responder's key.
pub struct Initiator {
    hs: HandshakeState,
}

impl Initiator {
    /// Starts a handshake from `local` to the holder of `remote` over
    /// `protocol`, carrying `payload` (at most [`MAX_HANDSHAKE_PAYLOAD`]
    /// bytes, encrypted) to the responder. Returns the first frame to send,
    /// length prefix included.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::PayloadTooLong`] if `payload` is longer than
    /// [`MAX_HANDSHAKE_PAYLOAD`].
    pub fn start(
        local: &Identity,
        remote: &PublicKey,
        protocol: Protocol,
        payload: &[u8],
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        Initiator::start_with(local, remote, protocol, payload, None)
    }

    /// [`start`](Initiator::start), with a fixed ephemeral key for the
    /// worked examples of `docs/wire.md` (tests only).
    fn start_with(
        local: &Identity,
        remote: &PublicKey,
        protocol: Protocol,
        payload: &[u8],
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        if payload.len() > MAX_HANDSHAKE_PAYLOAD {
            return Err(HandshakeError::PayloadTooLong { len: payload.len() });
        }
        let p = prologue(protocol);
        let builder = Builder::new(builder_params());
        let builder = match fixed_ephemeral {
            Some(e) => builder.fixed_ephemeral_key_for_testing_only(e),
            None => builder,
        };
        let mut hs = builder
            .local_private_key(local.secret_bytes())
            .and_then(|b| b.remote_public_key(remote.as_bytes()))
            .and_then(|b| b.prologue(&p))
            .and_then(|b| b.build_initiator())
            .map_err(|e| HandshakeError::Malformed(format!("cannot start Noise: {e}")))?;
        let body_len = MAGIC.len() + 1 + IK_MSG1_LEN + payload.len();
        let mut result = Ok(());
        let frame = framed(body_len, |body| {
            body[..4].copy_from_slice(&MAGIC);
            body[4] = VERSION;
            match hs.write_message(payload, &mut body[5..]) {
                Ok(n) => 5 + n,
                Err(e) => {
                    result = Err(HandshakeError::Malformed(format!("Noise write: {e}")));
                    0
                }
            }
        });
        result.map(|()| (Initiator { hs }, frame))
    }

    /// Completes the handshake with the body of the responder's answer frame
    /// (without its length prefix).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::KeyMismatch`] or [`HandshakeError::VersionMismatch`]
    /// when the responder rejected us, [`HandshakeError::Malformed`] when the
    /// answer does not decrypt.
    pub fn finish(mut self, body: &[u8]) -> Result<Session, HandshakeError> {
        let (&status, rest) = body
            .split_first()
            .ok_or_else(|| HandshakeError::Malformed("empty answer frame".into()))?;
        if status != ACCEPTED {
            return Err(match RejectCode::from_u8(status) {
                RejectCode::Version => HandshakeError::VersionMismatch {
                    theirs: rest.first().copied().unwrap_or(0),
                },
                RejectCode::Key => HandshakeError::KeyMismatch,
                RejectCode::Busy => HandshakeError::Busy,
                code => HandshakeError::Rejected { code },
            });
        }
        if rest.len() < IK_MSG2_LEN {
            return Err(HandshakeError::Malformed(format!(
                "answer of {} bytes is shorter than a Noise IK message 2",
                rest.len()
            )));
        }
        let mut payload = [0u8; MAX_HANDSHAKE_FRAME];
        self.hs
            .read_message(rest, &mut payload)
            .map_err(|e| HandshakeError::Malformed(format!("answer does not decrypt: {e}")))?;
        Session::from_handshake(self.hs, true)
    }
}

/// What a responder got from a good first message.
pub struct Accepted {
    /// The session, ready for records.
    pub session: Session,
    /// The answer frame to send, length prefix included.
    pub reply: Vec<u8>,
    /// The initiator's proven public key.
    pub peer: PublicKey,
    /// The payload the initiator sent in its first message.
    pub payload: Vec<u8>,
}

/// A refused first message.
#[derive(Debug)]
pub struct Rejection {
    /// Why.
    pub error: HandshakeError,
    /// A rejection frame to send before closing, if the peer deserves one.
    pub reply: Option<Vec<u8>>,
}

/// The responder's side of the handshake.
pub struct Responder;

impl Responder {
    /// The rejection frame a responder sends instead of its answer when it is
    /// busy (its accept queue is full), length prefix included:
    /// `00 01 03`.
    pub fn busy_reply() -> Vec<u8> {
        framed(1, |b| {
            b[0] = REJECT_BUSY;
            1
        })
    }

    /// Handles the body of the initiator's first frame (without its length
    /// prefix) for `local` over `protocol`.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] saying why, with the frame to send back, if any.
    pub fn respond(
        local: &Identity,
        protocol: Protocol,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        Responder::respond_with(local, protocol, body, None)
    }

    /// [`respond`](Responder::respond), with a fixed ephemeral key for the
    /// worked examples of `docs/wire.md` (tests only).
    fn respond_with(
        local: &Identity,
        protocol: Protocol,
        body: &[u8],
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<Accepted, Rejection> {
        let reject = |error, reply| Rejection { error, reply };
        if body.len() < MAGIC.len() + 1 || body[..4] != MAGIC {
            return Err(reject(HandshakeError::NotCrust, None));
        }
        let theirs = body[4];
        if theirs != VERSION {
            return Err(reject(
                HandshakeError::VersionMismatch { theirs },
                Some(framed(2, |b| {
                    b[0] = RejectCode::Version.to_u8();
                    b[1] = VERSION;
                    2
                })),
            ));
        }
        let msg1 = &body[5..];
        if msg1.len() < IK_MSG1_LEN {
            return Err(reject(
                HandshakeError::Malformed(format!(
                    "first message of {} bytes is shorter than a Noise IK message 1",
                    msg1.len()
                )),
                None,
            ));
        }
        let p = prologue(protocol);
        let builder = Builder::new(builder_params());
        let builder = match fixed_ephemeral {
            Some(e) => builder.fixed_ephemeral_key_for_testing_only(e),
            None => builder,
        };
        let mut hs = builder
            .local_private_key(local.secret_bytes())
            .and_then(|b| b.prologue(&p))
            .and_then(|b| b.build_responder())
            .map_err(|e| {
                reject(
                    HandshakeError::Malformed(format!("cannot start Noise: {e}")),
                    None,
                )
            })?;
        let mut payload = vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = match hs.read_message(msg1, &mut payload) {
            Ok(n) => n,
            Err(_) => {
                return Err(reject(
                    HandshakeError::KeyMismatch,
                    Some(framed(1, |b| {
                        b[0] = RejectCode::Key.to_u8();
                        1
                    })),
                ));
            }
        };
        if n > MAX_HANDSHAKE_PAYLOAD {
            return Err(reject(
                HandshakeError::Malformed(format!("handshake payload of {n} bytes is too long")),
                None,
            ));
        }
        payload.truncate(n);
        let peer = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| reject(HandshakeError::Malformed("no initiator key".into()), None))?;
        let mut result = Ok(());
        let reply = framed(1 + IK_MSG2_LEN, |b| {
            b[0] = ACCEPTED;
            match hs.write_message(&[], &mut b[1..]) {
                Ok(n) => 1 + n,
                Err(e) => {
                    result = Err(HandshakeError::Malformed(format!("Noise write: {e}")));
                    0
                }
            }
        });
        result.map_err(|e| reject(e, None))?;
        let session = Session::from_handshake(hs, false).map_err(|e| reject(e, None))?;
        Ok(Accepted {
            session,
            reply,
            peer,
            payload,
        })
    }
}

/// Checks a handshake frame's length prefix before its body is read.
///
/// # Errors
///
/// [`HandshakeError::Malformed`] for an empty frame or one longer than
/// [`MAX_HANDSHAKE_FRAME`].
pub fn check_handshake_frame_len(header: [u8; 2]) -> Result<usize, HandshakeError> {
    let len = u16::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_HANDSHAKE_FRAME {
        return Err(HandshakeError::Malformed(format!(
            "handshake frame of {len} bytes (limit {MAX_HANDSHAKE_FRAME})"
        )));
    }
    Ok(len)
}

/// An established session: the keys of both directions and the peer's key.
///
/// Records are Noise transport messages (ChaCha20-Poly1305, empty
/// associated data, the nonce as 32 zero bits then a 64-bit little-endian
/// counter), sealed and opened in place with `ring`.
pub struct Session {
    send: LessSafeKey,
    recv: LessSafeKey,
    send_nonce: u64,
    recv_nonce: u64,
    peer: PublicKey,
}

fn noise_nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn chacha_key(bytes: &[u8; 32]) -> LessSafeKey {
    // Invariant: a 32-byte key is the right length for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key"))
}

impl Session {
    fn from_handshake(mut hs: HandshakeState, initiator: bool) -> Result<Session, HandshakeError> {
        if !hs.is_handshake_finished() {
            return Err(HandshakeError::Malformed("handshake incomplete".into()));
        }
        let peer = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| HandshakeError::Malformed("no peer key after handshake".into()))?;
        // Noise Split(): the first key encrypts initiator to responder.
        let (mut k1, mut k2) = hs.dangerously_get_raw_split();
        let (send, recv) = if initiator {
            (chacha_key(&k1), chacha_key(&k2))
        } else {
            (chacha_key(&k2), chacha_key(&k1))
        };
        k1.zeroize();
        k2.zeroize();
        Ok(Session {
            send,
            recv,
            send_nonce: 0,
            recv_nonce: 0,
            peer,
        })
    }

    /// Initiator: appends the admission record (see the module docs) to
    /// `out`. Call it once, before any other record is sealed.
    pub fn seal_admission(&mut self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.send_nonce, 0, "the admission record comes first");
        let mut sealer = Sealer {
            key: self.send.clone(),
            nonce: self.send_nonce,
        };
        sealer.seal(&[crate::wire::transport_record::ADMIT], out, usize::MAX);
        self.send_nonce = sealer.nonce;
    }

    /// Responder: checks the initiator's first record, `frame` being the
    /// whole [`ADMISSION_FRAME`] bytes (length prefix included). On success
    /// the connection is proven and the record consumed.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::NotAdmitted`] when the frame has another length,
    /// does not decrypt, or holds something other than the admission byte.
    pub fn open_admission(&mut self, frame: &[u8]) -> Result<(), HandshakeError> {
        if frame.len() != ADMISSION_FRAME
            || u16::from_be_bytes([frame[0], frame[1]]) as usize != ADMISSION_FRAME - 2
        {
            return Err(HandshakeError::NotAdmitted(
                "the first record is not an admission record".into(),
            ));
        }
        let mut body = [0u8; ADMISSION_FRAME - 2];
        body.copy_from_slice(&frame[2..]);
        let mut opener = Opener {
            key: self.recv.clone(),
            nonce: self.recv_nonce,
        };
        let n = opener.open_in_place(&mut body).map_err(|_| {
            HandshakeError::NotAdmitted(
                "the first record does not decrypt (a replayed first message?)".into(),
            )
        })?;
        if body[..n] != [crate::wire::transport_record::ADMIT] {
            return Err(HandshakeError::NotAdmitted(format!(
                "the first record holds {:02x?}, not the admission byte",
                &body[..n]
            )));
        }
        self.recv_nonce = opener.nonce;
        Ok(())
    }

    /// The peer's proven public key.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// The receiving and sending halves; each has its own key and nonce, so
    /// they can be used from two threads at once.
    pub fn split(self) -> (Opener, Sealer) {
        (
            Opener {
                key: self.recv,
                nonce: self.recv_nonce,
            },
            Sealer {
                key: self.send,
                nonce: self.send_nonce,
            },
        )
    }
}

/// Encrypts records.
pub struct Sealer {
    key: LessSafeKey,
    nonce: u64,
}

impl Sealer {
    /// The nonce the next record will use.
    pub(crate) fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Takes back records sealed from `nonce` on that never reached the
    /// wire, so the next record reuses their nonce. Safe only because no
    /// byte of those records was sent.
    pub(crate) fn rewind_to(&mut self, nonce: u64) {
        debug_assert!(nonce <= self.nonce);
        self.nonce = nonce;
    }

    /// Encrypts a prefix of `plaintext` as frames appended to `out`, adding
    /// at most about `budget` bytes (at least one frame when `plaintext` is
    /// not empty). Returns how many plaintext bytes it took.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>, budget: usize) -> usize {
        let mut taken = 0;
        let mut added = 0;
        while taken < plaintext.len() && (added == 0 || added < budget) {
            let chunk = &plaintext[taken..][..(plaintext.len() - taken).min(MAX_RECORD_PLAINTEXT)];
            self.seal_one(chunk, out);
            taken += chunk.len();
            added += 2 + chunk.len() + TAG_LEN;
        }
        taken
    }

    /// Appends one empty record: the length prefix and the 16-byte tag,
    /// no payload. Valid Noise, and receivers skip it (it is never read as
    /// end of stream); crust itself never sends one (its heartbeats are
    /// crust frames), but other implementations may.
    pub fn seal_empty(&mut self, out: &mut Vec<u8>) {
        self.seal_one(&[], out);
    }

    /// Appends one record carrying `chunk` (at most
    /// [`MAX_RECORD_PLAINTEXT`] bytes).
    fn seal_one(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        debug_assert!(chunk.len() <= MAX_RECORD_PLAINTEXT);
        let ct_len = chunk.len() + TAG_LEN;
        let start = out.len();
        out.resize(start + 2 + ct_len, 0);
        out[start..start + 2].copy_from_slice(&(ct_len as u16).to_be_bytes());
        let body = &mut out[start + 2..start + 2 + chunk.len()];
        body.copy_from_slice(chunk);
        // Invariant: ring refuses only inputs longer than ChaCha20's
        // 256 GiB limit; a record is at most 64 KiB.
        let tag = self
            .key
            .seal_in_place_separate_tag(noise_nonce(self.nonce), Aad::empty(), body)
            .expect("sealing a record of valid size cannot fail");
        out[start + 2 + chunk.len()..start + 2 + ct_len].copy_from_slice(tag.as_ref());
        self.nonce += 1;
    }
}

/// Decrypts records. Cloning it gives another reader of the same direction
/// (same key, same next nonce); a `Sealer` is deliberately not `Clone`, since
/// two sealers would reuse nonces.
#[derive(Clone)]
pub struct Opener {
    key: LessSafeKey,
    nonce: u64,
}

impl Opener {
    /// Decrypts one frame body into `out`, which must be at least as long as
    /// `body`. Returns the plaintext length.
    ///
    /// # Errors
    ///
    /// [`FrameError`] if the frame is too short or fails authentication.
    pub fn open(&mut self, body: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        if body.len() < TAG_LEN {
            return Err(FrameError::TooShort { len: body.len() });
        }
        let buf = &mut out[..body.len()];
        buf.copy_from_slice(body);
        self.open_in_place(buf)
    }

    /// Decrypts one frame body in place; the plaintext is then the first
    /// returned-length bytes of `body`.
    ///
    /// # Errors
    ///
    /// [`FrameError`] if the frame is too short or fails authentication.
    pub fn open_in_place(&mut self, body: &mut [u8]) -> Result<usize, FrameError> {
        if body.len() < TAG_LEN {
            return Err(FrameError::TooShort { len: body.len() });
        }
        let plain = self
            .key
            .open_in_place(noise_nonce(self.nonce), Aad::empty(), body)
            .map_err(|_| FrameError::Authentication)?;
        self.nonce += 1;
        Ok(plain.len())
    }
}

/// The most ciphertext the receive buffer ever holds: two whole frames.
const RECV_CAPACITY: usize = 2 * (2 + MAX_FRAME_LEN);
/// The receive buffer's first size; it grows (to [`RECV_CAPACITY`]) only
/// when frames or reads need more.
const RECV_INITIAL: usize = 16 * 1024;
/// Grow or compact before offering less room than this to a read.
const MIN_READ: usize = 4096;

/// Receive buffers of the first size, kept for the next stream that reads.
static RECV_POOL: crate::pool::Pool = crate::pool::Pool::fixed(RECV_INITIAL, 32);
/// Buffers for one decrypted record that did not fit a reader's buffer.
static PLAIN_POOL: crate::pool::Pool = crate::pool::Pool::fixed(MAX_FRAME_LEN, 8);

/// The receive side's buffer: ciphertext read from the socket and plaintext
/// not yet handed to the reader. It holds no memory until bytes arrive
/// ([`spare`](RecvBuf::spare) takes a 16 KiB buffer from a process-wide
/// pool), gives it back with [`release_idle`](RecvBuf::release_idle) once
/// everything buffered was read, and never exceeds two maximum frames plus
/// one decrypted record: a peer cannot make it grow beyond that.
///
/// Protocol: put socket bytes into [`spare`](RecvBuf::spare), report them
/// with [`filled`](RecvBuf::filled), then call
/// [`read_plain`](RecvBuf::read_plain) until it returns `Ok(None)` (it needs
/// more bytes).
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    plain: Vec<u8>,
    plain_start: usize,
    plain_end: usize,
    failed: Option<FrameError>,
}

impl Default for RecvBuf {
    fn default() -> Self {
        RecvBuf::new()
    }
}

impl RecvBuf {
    /// An empty buffer; it allocates nothing until [`spare`](RecvBuf::spare)
    /// is called.
    pub fn new() -> RecvBuf {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            plain: Vec::new(),
            plain_start: 0,
            plain_end: 0,
            failed: None,
        }
    }

    /// Room for more ciphertext. Never empty while no whole frame is
    /// buffered.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.is_empty() {
            self.buf = RECV_POOL.take();
        }
        // Bytes needed from `start` for the next whole frame.
        let need = if self.end - self.start >= 2 {
            2 + u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize
        } else {
            2
        };
        if self.start > 0
            && (self.buf.len() - self.start < need || self.buf.len() - self.end < MIN_READ)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < RECV_CAPACITY
            && (self.buf.len() < need || self.buf.len() - self.end < MIN_READ)
        {
            let len = (self.buf.len() * 2)
                .max(need)
                .clamp(RECV_INITIAL, RECV_CAPACITY);
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Gives the buffers back to the process-wide pool when nothing is
    /// buffered (no partial frame, no undelivered plaintext): call it when
    /// the socket has nothing more to read, so an idle stream holds no
    /// buffer. Does nothing while bytes are buffered.
    ///
    /// ```
    /// let mut rx = transport::proto::RecvBuf::new();
    /// assert!(!rx.spare().is_empty());
    /// rx.release_idle();
    /// assert_eq!(rx.buffered_len(), 0);
    /// ```
    pub fn release_idle(&mut self) {
        if self.start != self.end || self.has_plain() {
            return;
        }
        self.start = 0;
        self.end = 0;
        if !self.buf.is_empty() {
            RECV_POOL.give(std::mem::take(&mut self.buf));
        }
        if !self.plain.is_empty() {
            PLAIN_POOL.give(std::mem::take(&mut self.plain));
            self.plain_start = 0;
            self.plain_end = 0;
        }
    }

    /// How many bytes are buffered: ciphertext not yet decrypted plus
    /// decrypted plaintext not yet read. The plaintext still to come out
    /// of them is at most this long.
    pub fn buffered_len(&self) -> usize {
        (self.end - self.start) + (self.plain_end - self.plain_start)
    }

    /// Records that `n` bytes were written into [`spare`](RecvBuf::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Whether no partial frame is buffered: an end of stream here is clean.
    pub fn at_frame_boundary(&self) -> bool {
        self.start == self.end
    }

    /// Whether decrypted bytes are waiting.
    pub fn has_plain(&self) -> bool {
        self.plain_start < self.plain_end
    }

    fn next_frame_len(&self) -> Option<usize> {
        let avail = self.end - self.start;
        if avail < 2 {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
        (avail >= 2 + len).then_some(len)
    }

    /// Whether the next record can be read from the socket straight into a
    /// caller's buffer of `out_len` bytes, skipping this buffer: `Some(len)`
    /// (the frame body's length) when the buffer holds exactly one frame
    /// header and nothing else and `out_len >= len`.
    ///
    /// The driver then reads exactly `len` bytes into `out[..len]` (and may
    /// read up to 2 more bytes, the next header, into a side buffer), and
    /// calls [`finish_direct`](RecvBuf::finish_direct), or
    /// [`abort_direct`](RecvBuf::abort_direct) if the read stops part way.
    pub fn direct_frame_len(&self, out_len: usize) -> Option<usize> {
        if self.failed.is_some() || self.has_plain() || self.end - self.start != 2 {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
        (len >= TAG_LEN && out_len >= len).then_some(len)
    }

    /// Completes a direct read: `body` is the whole frame body, `next` the
    /// 0 to 2 bytes read after it. Decrypts in place and returns the
    /// plaintext length (the plaintext is the start of `body`). The length
    /// is `0` for an empty record: the caller must then read on, not report
    /// end of stream.
    ///
    /// # Errors
    ///
    /// As [`read_plain`](RecvBuf::read_plain); the error sticks.
    pub fn finish_direct(
        &mut self,
        opener: &mut Opener,
        body: &mut [u8],
        next: &[u8],
    ) -> Result<usize, FrameError> {
        debug_assert!(next.len() <= 2);
        self.start = 0;
        self.end = next.len();
        self.buf[..next.len()].copy_from_slice(next);
        opener
            .open_in_place(body)
            .inspect_err(|e| self.failed = Some(e.clone()))
    }

    /// Gives up a direct read part way (a timeout): the `got` bytes of the
    /// body already read go back behind the header, so nothing is lost.
    pub fn abort_direct(&mut self, got: &[u8]) {
        let need = self.end + got.len();
        if self.buf.len() < need {
            self.buf.resize(need.max(RECV_INITIAL), 0);
        }
        self.buf[self.end..need].copy_from_slice(got);
        self.end = need;
    }

    /// Moves plaintext into `out`: first what is left of a decrypted record,
    /// then as many whole buffered frames as fit. `Ok(None)` means more
    /// ciphertext is needed first (or `out` is empty); it never returns
    /// `Ok(Some(0))`: empty records (a tag and no payload) are consumed and
    /// skipped.
    ///
    /// # Errors
    ///
    /// The first [`FrameError`] met; the stream is unusable after it and
    /// every later call returns the same error.
    pub fn read_plain(
        &mut self,
        opener: &mut Opener,
        out: &mut [u8],
    ) -> Result<Option<usize>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if out.is_empty() {
            return Ok(None);
        }
        if self.has_plain() {
            let n = (self.plain_end - self.plain_start).min(out.len());
            out[..n].copy_from_slice(&self.plain[self.plain_start..self.plain_start + n]);
            self.plain_start += n;
            return Ok(Some(n));
        }
        let mut written = 0;
        while let Some(len) = self.next_frame_len() {
            let body = self.start + 2..self.start + 2 + len;
            let room = out.len() - written;
            let result = if room >= len {
                opener
                    .open(&self.buf[body], &mut out[written..])
                    .map(|n| (n, true))
            } else if written == 0 {
                if self.plain.len() < len {
                    self.plain = PLAIN_POOL.take();
                }
                opener
                    .open(&self.buf[body], &mut self.plain)
                    .map(|n| (n, false))
            } else {
                break;
            };
            match result {
                Ok((n, direct)) => {
                    self.start += 2 + len;
                    if direct {
                        written += n;
                    } else if n > 0 {
                        let give = n.min(out.len());
                        out[..give].copy_from_slice(&self.plain[..give]);
                        self.plain_start = give;
                        self.plain_end = n;
                        return Ok(Some(give));
                    }
                    // An empty record (the tag alone) is valid Noise and
                    // carries nothing: skip it, never report it as `0`
                    // bytes, which a reader would take for end of stream.
                }
                Err(e) => {
                    self.failed = Some(e.clone());
                    return if written > 0 {
                        Ok(Some(written))
                    } else {
                        Err(e)
                    };
                }
            }
        }
        Ok((written > 0).then_some(written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (i, m1) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"tok").unwrap();
        let acc = Responder::respond(&b, Protocol::Tcp, &m1[2..]).unwrap();
        assert_eq!(acc.payload, b"tok");
        assert_eq!(acc.peer, a.public_key());
        let s = i.finish(&acc.reply[2..]).unwrap();
        assert_eq!(s.peer(), b.public_key());
        (s, acc.session)
    }

    fn feed(rx: &mut RecvBuf, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let spare = rx.spare();
            let n = spare.len().min(bytes.len() - off);
            spare[..n].copy_from_slice(&bytes[off..off + n]);
            rx.filled(n);
            off += n;
        }
    }

    #[test]
    fn an_idle_buffer_holds_no_memory_and_a_partial_frame_keeps_its_own() {
        let (a, b) = pair();
        let (_, mut sealer) = a.split();
        let (mut opener, _) = b.split();
        let mut rx = RecvBuf::new();
        assert_eq!(rx.buf.capacity(), 0, "a new buffer allocates nothing");
        let mut wire = Vec::new();
        sealer.seal(b"one", &mut wire, usize::MAX);
        sealer.seal(b"two", &mut wire, usize::MAX);
        let cut = wire.len() - 5;
        feed(&mut rx, &wire[..cut]);
        let mut out = [0u8; 64];
        assert_eq!(rx.read_plain(&mut opener, &mut out).unwrap(), Some(3));
        assert_eq!(&out[..3], b"one");
        rx.release_idle();
        assert!(!rx.buf.is_empty(), "a partial frame keeps its buffer");
        feed(&mut rx, &wire[cut..]);
        assert_eq!(rx.read_plain(&mut opener, &mut out).unwrap(), Some(3));
        assert_eq!(&out[..3], b"two");
        rx.release_idle();
        assert_eq!((rx.buf.capacity(), rx.buffered_len()), (0, 0));
        // A record bigger than the reader's buffer: its plaintext waits in
        // a buffer that is given back only once it was all read.
        let big = vec![9u8; 1000];
        let mut wire = Vec::new();
        sealer.seal(&big, &mut wire, usize::MAX);
        feed(&mut rx, &wire);
        let mut got = Vec::new();
        while let Some(n) = rx.read_plain(&mut opener, &mut out).unwrap() {
            got.extend_from_slice(&out[..n]);
            if got.len() < big.len() {
                rx.release_idle();
                assert!(!rx.plain.is_empty(), "undelivered plaintext is kept");
            }
        }
        assert_eq!(got, big);
        rx.release_idle();
        assert_eq!((rx.buf.capacity(), rx.plain.capacity()), (0, 0));
    }

    const WIRE_MD: &str = include_str!("../../docs/wire.md");

    /// The keys of the worked examples in `docs/wire.md`.
    fn example_keys() -> (Identity, Identity, [u8; 32], [u8; 32]) {
        (
            Identity::from_secret_bytes([0x11; 32]),
            Identity::from_secret_bytes([0x22; 32]),
            [0x33; 32],
            [0x44; 32],
        )
    }

    #[test]
    fn wire_md_names_and_prologue() {
        assert_eq!(
            netlab::wire_doc::text(WIRE_MD, "noise-name").trim(),
            NOISE_PARAMS
        );
        netlab::wire_doc::assert_hex(WIRE_MD, "prologue-tcp", &prologue(Protocol::Tcp));
        netlab::wire_doc::assert_hex(WIRE_MD, "prologue-utp", &prologue(Protocol::Utp));
        let (a, b, _, _) = example_keys();
        netlab::wire_doc::assert_hex(WIRE_MD, "key-initiator", a.public_key().as_bytes());
        netlab::wire_doc::assert_hex(WIRE_MD, "key-responder", b.public_key().as_bytes());
    }

    #[test]
    fn wire_md_handshake_and_records() {
        let (a, b, ea, eb) = example_keys();
        let (init, msg1) =
            Initiator::start_with(&a, &b.public_key(), Protocol::Tcp, b"", Some(&ea)).unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "handshake-msg1", &msg1);
        let acc = Responder::respond_with(&b, Protocol::Tcp, &msg1[2..], Some(&eb)).unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "handshake-msg2", &acc.reply);
        let (_, mut sealer) = init.finish(&acc.reply[2..]).unwrap().split();
        let mut wire = Vec::new();
        sealer.seal(b"hello", &mut wire, usize::MAX);
        netlab::wire_doc::assert_hex(WIRE_MD, "record-hello", &wire);
        wire.clear();
        sealer.seal_empty(&mut wire);
        netlab::wire_doc::assert_hex(WIRE_MD, "record-empty", &wire);
        // The responder reads both.
        let (mut opener, _) = acc.session.split();
        let mut rx = RecvBuf::new();
        feed(&mut rx, &netlab::wire_doc::hex(WIRE_MD, "record-hello"));
        feed(&mut rx, &netlab::wire_doc::hex(WIRE_MD, "record-empty"));
        let mut out = [0u8; 64];
        assert_eq!(rx.read_plain(&mut opener, &mut out), Ok(Some(5)));
        assert_eq!(&out[..5], b"hello");
        assert_eq!(rx.read_plain(&mut opener, &mut out), Ok(None));
    }

    #[test]
    fn wire_md_rejections() {
        let (a, b, ea, _) = example_keys();
        let c = Identity::from_secret_bytes([0x55; 32]);
        let (_, mut msg1) =
            Initiator::start_with(&a, &c.public_key(), Protocol::Tcp, b"", Some(&ea)).unwrap();
        let rej = Responder::respond(&b, Protocol::Tcp, &msg1[2..])
            .err()
            .unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "reject-key", &rej.reply.unwrap());
        msg1[2 + 4] = VERSION + 1;
        let rej = Responder::respond(&b, Protocol::Tcp, &msg1[2..])
            .err()
            .unwrap();
        netlab::wire_doc::assert_hex(WIRE_MD, "reject-version", &rej.reply.unwrap());
        // The registry table in the document matches the code.
        let table = netlab::wire_doc::text(WIRE_MD, "reject-codes");
        let mut rows = 0;
        for line in table.lines().filter(|l| !l.trim().is_empty()) {
            let (n, name) = line.split_once(' ').unwrap();
            let code = RejectCode::from_u8(n.trim().parse().unwrap());
            assert_eq!(format!("{code:?}"), name.trim(), "code {n}");
            rows += 1;
        }
        assert_eq!(rows, 8, "every registered code is in the table");
        let frames = netlab::wire_doc::text(WIRE_MD, "crust-frame-types");
        let listed: Vec<u8> = frames
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|h| u8::from_str_radix(h.trim_start_matches("0x"), 16).unwrap())
            .collect();
        use crate::wire::crust_frame::*;
        assert_eq!(listed, [MESSAGE, HEARTBEAT, HELLO, REJECT, CLOSE]);
    }

    #[test]
    fn payload_over_the_limit_is_an_error_not_a_panic() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let long = [0u8; MAX_HANDSHAKE_PAYLOAD + 1];
        assert_eq!(
            Initiator::start(&a, &b.public_key(), Protocol::Tcp, &long).err(),
            Some(HandshakeError::PayloadTooLong {
                len: MAX_HANDSHAKE_PAYLOAD + 1
            })
        );
    }

    /// The worked example of `docs/wire.md` §9: the admission record
    /// under the initiator-to-responder key 00 01 .. 1f.
    #[test]
    fn admission_record_test_vector() {
        let k: [u8; 32] = std::array::from_fn(|i| i as u8);
        let peer = Identity::generate().public_key();
        let mut initiator = Session {
            send: chacha_key(&k),
            recv: chacha_key(&[0xee; 32]),
            send_nonce: 0,
            recv_nonce: 0,
            peer,
        };
        let mut wire = Vec::new();
        initiator.seal_admission(&mut wire);
        assert_eq!(hex::encode(&wire), "001118859d5e9a1553197450870695dd2f5950");
        let mut responder = Session {
            send: chacha_key(&[0xee; 32]),
            recv: chacha_key(&k),
            send_nonce: 0,
            recv_nonce: 0,
            peer,
        };
        responder.open_admission(&wire).unwrap();
        // The next records go on from nonce 1 on both sides.
        let (_, mut sealer) = initiator.split();
        let (mut opener, _) = responder.split();
        let mut rec = Vec::new();
        sealer.seal(b"hi", &mut rec, usize::MAX);
        let mut out = [0u8; 64];
        let n = opener.open(&rec[2..], &mut out).unwrap();
        assert_eq!(&out[..n], b"hi");
        // A replayed first message cannot make this record: any other key
        // fails, and so does a second copy under the right one.
        assert!(matches!(
            responder_with(&[0x55; 32]).open_admission(&wire),
            Err(HandshakeError::NotAdmitted(_))
        ));
        let mut twice = responder_with(&k);
        twice.open_admission(&wire).unwrap();
        assert!(twice.open_admission(&wire).is_err());
        assert_eq!(Responder::busy_reply(), [0, 1, 3]);
    }

    fn responder_with(k: &[u8; 32]) -> Session {
        Session {
            send: chacha_key(&[0xee; 32]),
            recv: chacha_key(k),
            send_nonce: 0,
            recv_nonce: 0,
            peer: Identity::generate().public_key(),
        }
    }

    #[test]
    fn params_parse() {
        builder_params();
    }

    #[test]
    fn records_round_trip_in_both_directions() {
        let (a, b) = pair();
        let (mut a_open, mut a_seal) = a.split();
        let (mut b_open, mut b_seal) = b.split();
        let mut wire = Vec::new();
        let msg: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut taken = 0;
        while taken < msg.len() {
            taken += a_seal.seal(&msg[taken..], &mut wire, 70_000);
        }
        let mut rx = RecvBuf::new();
        let mut got = Vec::new();
        let mut off = 0;
        let mut out = vec![0u8; 1000];
        while got.len() < msg.len() {
            match rx.read_plain(&mut b_open, &mut out).unwrap() {
                Some(n) => got.extend_from_slice(&out[..n]),
                None => {
                    let spare = rx.spare();
                    let n = spare.len().min(wire.len() - off).min(7777);
                    spare[..n].copy_from_slice(&wire[off..off + n]);
                    rx.filled(n);
                    off += n;
                }
            }
        }
        assert_eq!(got, msg);
        assert!(rx.at_frame_boundary());

        wire.clear();
        b_seal.seal(b"back", &mut wire, usize::MAX);
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire);
        let mut out = [0u8; 100];
        assert_eq!(rx.read_plain(&mut a_open, &mut out).unwrap(), Some(4));
        assert_eq!(&out[..4], b"back");
    }

    #[test]
    fn records_are_noise_transport_messages() {
        // Our ring-based records must be exactly what a Noise library makes:
        // open ours with snow's transport state from the same handshake.
        let (a, b) = (Identity::generate(), Identity::generate());
        let p = prologue(Protocol::Tcp);
        let mut i = Builder::new(builder_params())
            .local_private_key(a.secret_bytes())
            .unwrap()
            .remote_public_key(b.public_key().as_bytes())
            .unwrap()
            .prologue(&p)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = Builder::new(builder_params())
            .local_private_key(b.secret_bytes())
            .unwrap()
            .prologue(&p)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut m = [0u8; 256];
        let mut pl = [0u8; 256];
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut pl).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut pl).unwrap();
        let snow_r = {
            let (k1, k2) = r.dangerously_get_raw_split();
            let _ = (k1, k2);
            r.into_stateless_transport_mode().unwrap()
        };
        let (_, mut sealer) = Session::from_handshake(i, true).unwrap().split();
        let mut wire = Vec::new();
        sealer.seal(b"first", &mut wire, usize::MAX);
        sealer.seal(b"second", &mut wire, usize::MAX);
        let mut out = [0u8; 64];
        let n = snow_r.read_message(0, &wire[2..2 + 21], &mut out).unwrap();
        assert_eq!(&out[..n], b"first");
        let n = snow_r.read_message(1, &wire[25..], &mut out).unwrap();
        assert_eq!(&out[..n], b"second");
    }

    #[test]
    fn direct_reads_skip_the_buffer() {
        let (a, b) = pair();
        let (_, mut seal) = a.split();
        let (mut open, _) = b.split();
        let mut wire = Vec::new();
        seal.seal(&[1u8; 1000], &mut wire, usize::MAX);
        seal.seal(&[2u8; 500], &mut wire, usize::MAX);
        let mut rx = RecvBuf::new();
        // Only the first header is buffered: a direct read is offered.
        feed(&mut rx, &wire[..2]);
        assert_eq!(rx.direct_frame_len(100), None, "too small a buffer");
        assert_eq!(rx.direct_frame_len(4096), Some(1016));
        let mut out = vec![0u8; 4096];
        out[..1016].copy_from_slice(&wire[2..1018]);
        let n = rx
            .finish_direct(&mut open, &mut out[..1016], &wire[1018..1020])
            .unwrap();
        assert_eq!(&out[..n], &[1u8; 1000][..]);
        // The next header came with it: direct again; abort part way.
        assert_eq!(rx.direct_frame_len(4096), Some(516));
        rx.abort_direct(&wire[1020..1100]);
        feed(&mut rx, &wire[1100..]);
        let n = rx.read_plain(&mut open, &mut out).unwrap().unwrap();
        assert_eq!(&out[..n], &[2u8; 500][..]);
    }

    #[test]
    fn empty_records_are_skipped_never_read_as_zero_bytes() {
        let (a, b) = pair();
        let (_, mut seal) = a.split();
        let (mut open, _) = b.split();
        let mut wire = Vec::new();
        seal.seal_empty(&mut wire);
        assert_eq!(wire.len(), 2 + TAG_LEN);
        seal.seal(b"ab", &mut wire, usize::MAX);
        seal.seal_empty(&mut wire);
        seal.seal_empty(&mut wire);
        seal.seal(b"cdef", &mut wire, usize::MAX);
        seal.seal_empty(&mut wire);
        // Every buffer size, the small ones (under a tag) included.
        for size in [1, 3, 15, 16, 17, 64] {
            let mut open = open.clone();
            let mut rx = RecvBuf::new();
            feed(&mut rx, &wire);
            let mut out = vec![0u8; size];
            let mut got = Vec::new();
            while let Some(n) = rx.read_plain(&mut open, &mut out).unwrap() {
                assert_ne!(n, 0, "buffer of {size}: an empty record read as 0 bytes");
                got.extend_from_slice(&out[..n]);
            }
            assert_eq!(got, b"abcdef", "buffer of {size}");
            assert!(rx.at_frame_boundary(), "buffer of {size}");
        }
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire);
        let mut sink = [0u8; 64];
        while rx.read_plain(&mut open, &mut sink).unwrap().is_some() {}
        // Only empty records buffered: more ciphertext is needed, not EOF.
        let mut wire = Vec::new();
        seal.seal_empty(&mut wire);
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire);
        let mut out = [0u8; 4];
        let mut o = open.clone();
        assert_eq!(rx.read_plain(&mut o, &mut out), Ok(None));
        assert!(rx.at_frame_boundary(), "the empty record was consumed");
        // The direct path, the length prefix alone: finish_direct says 0
        // (the driver reads on) and the stream goes on.
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire[..2]);
        assert_eq!(rx.direct_frame_len(64), Some(TAG_LEN));
        let mut body = wire[2..].to_vec();
        assert_eq!(rx.finish_direct(&mut open, &mut body, &[]), Ok(0));
        let mut next = Vec::new();
        seal.seal(b"g", &mut next, usize::MAX);
        feed(&mut rx, &next);
        assert_eq!(rx.read_plain(&mut open, &mut out), Ok(Some(1)));
        assert_eq!(out[0], b'g');
    }

    #[test]
    fn flipped_bit_fails_and_sticks() {
        let (a, b) = pair();
        let (_, mut seal) = a.split();
        let (mut open, _) = b.split();
        let mut wire = Vec::new();
        seal.seal(b"hello", &mut wire, usize::MAX);
        wire[5] ^= 1;
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire);
        let mut out = [0u8; 64];
        assert_eq!(
            rx.read_plain(&mut open, &mut out),
            Err(FrameError::Authentication)
        );
        assert_eq!(
            rx.read_plain(&mut open, &mut out),
            Err(FrameError::Authentication)
        );
    }

    #[test]
    fn replayed_frame_fails() {
        let (a, b) = pair();
        let (_, mut seal) = a.split();
        let (mut open, _) = b.split();
        let mut wire = Vec::new();
        seal.seal(b"pay me", &mut wire, usize::MAX);
        let once = wire.clone();
        wire.extend_from_slice(&once);
        let mut rx = RecvBuf::new();
        feed(&mut rx, &wire);
        let mut out = [0u8; 6];
        assert_eq!(rx.read_plain(&mut open, &mut out), Ok(Some(6)));
        assert_eq!(
            rx.read_plain(&mut open, &mut out),
            Err(FrameError::Authentication)
        );
    }

    #[test]
    fn short_frame_is_malformed() {
        let (_, b) = pair();
        let (mut open, _) = b.split();
        let mut rx = RecvBuf::new();
        feed(&mut rx, &[0, 3, 1, 2, 3]);
        let mut out = [0u8; 64];
        assert_eq!(
            rx.read_plain(&mut open, &mut out),
            Err(FrameError::TooShort { len: 3 })
        );
    }

    #[test]
    fn wrong_key_is_rejected_with_a_key_frame() {
        let (a, b, c) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (i, m1) = Initiator::start(&a, &c.public_key(), Protocol::Tcp, b"").unwrap();
        let rej = Responder::respond(&b, Protocol::Tcp, &m1[2..])
            .err()
            .unwrap();
        assert_eq!(rej.error, HandshakeError::KeyMismatch);
        let reply = rej.reply.unwrap();
        assert_eq!(
            i.finish(&reply[2..]).err(),
            Some(HandshakeError::KeyMismatch)
        );
    }

    #[test]
    fn unknown_and_other_rejection_codes_decode_clearly() {
        let (a, b) = (Identity::generate(), Identity::generate());
        for (code, text) in [
            (
                200u8,
                "the peer rejected the handshake: unknown rejection 200",
            ),
            (
                4,
                "the peer rejected the handshake: connection limit reached",
            ),
            (
                255,
                "the peer rejected the handshake: unknown rejection 255",
            ),
        ] {
            let (i, _) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
            let err = i.finish(&[code, 1, 2, 3]).err().unwrap();
            assert_eq!(
                err,
                HandshakeError::Rejected {
                    code: RejectCode::from_u8(code)
                }
            );
            assert_eq!(err.to_string(), text);
        }
        // A bare code with no detail never panics.
        let (i, _) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
        assert_eq!(
            i.finish(&[REJECT_VERSION]).err(),
            Some(HandshakeError::VersionMismatch { theirs: 0 })
        );
    }

    #[test]
    fn carrier_is_bound_by_the_prologue() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (_, m1) = Initiator::start(&a, &b.public_key(), Protocol::Utp, b"").unwrap();
        assert!(Responder::respond(&b, Protocol::Tcp, &m1[2..]).is_err());
    }

    #[test]
    fn version_and_magic_are_checked_first() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (i, mut m1) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
        m1[2 + 4] = 9;
        let rej = Responder::respond(&b, Protocol::Tcp, &m1[2..])
            .err()
            .unwrap();
        assert_eq!(rej.error, HandshakeError::VersionMismatch { theirs: 9 });
        assert_eq!(
            i.finish(&rej.reply.unwrap()[2..]).err(),
            Some(HandshakeError::VersionMismatch { theirs: VERSION })
        );
        let rej = Responder::respond(&b, Protocol::Tcp, b"GET / HTTP/1.1\r\n")
            .err()
            .unwrap();
        assert_eq!(rej.error, HandshakeError::NotCrust);
        assert!(rej.reply.is_none());
    }

    #[test]
    fn truncated_first_messages_are_malformed() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (_, m1) = Initiator::start(&a, &b.public_key(), Protocol::Tcp, b"").unwrap();
        for cut in 0..m1.len() - 2 {
            assert!(Responder::respond(&b, Protocol::Tcp, &m1[2..2 + cut]).is_err());
        }
    }

    #[test]
    fn handshake_frame_length_limits() {
        assert!(check_handshake_frame_len([0, 0]).is_err());
        assert!(check_handshake_frame_len([0xff, 0xff]).is_err());
        assert_eq!(check_handshake_frame_len([0, 101]), Ok(101));
    }
}
