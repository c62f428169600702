//! Static X25519 identities and public keys.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use rand::Rng;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

const FILE_HEADER: &str = "crust-identity-v1";

/// A peer's public key (X25519, 32 bytes). Shown and parsed as 64 hex digits.
///
/// ```
/// use transport::PublicKey;
/// let key: PublicKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".parse()?;
/// assert_eq!(key.to_string().len(), 64);
/// # Ok::<(), transport::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The key's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<PublicKey> {
        <[u8; PUBLIC_KEY_LEN]>::try_from(bytes).ok().map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; 2 * PUBLIC_KEY_LEN];
        // Invariant: the output buffer is exactly twice the input length.
        hex::encode_to_slice(self.0, &mut hex).expect("hex buffer has the right length");
        // Invariant: hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).expect("hex is ASCII"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<PublicKey> {
        if s.len() != 2 * PUBLIC_KEY_LEN {
            return Err(Error::InvalidPublicKey(format!(
                "expected {} hex digits, got {} characters",
                2 * PUBLIC_KEY_LEN,
                s.len()
            )));
        }
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|e| Error::InvalidPublicKey(format!("{e} in {s:?}")))?;
        Ok(PublicKey(bytes))
    }
}

/// A static X25519 key pair: who we are to our peers.
///
/// Peers dial us by our [`PublicKey`] (it is part of every
/// [`Endpoint`](crate::Endpoint)), and the handshake proves we hold the
/// private half. Keep one identity per node and store it with
/// [`save`](Identity::save) so that its endpoints stay stable across restarts.
///
/// The private key is wiped from memory on drop and never printed by `Debug`.
///
/// ```
/// use transport::Identity;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("node.key");
/// let id = Identity::generate();
/// id.save(&path)?;
/// assert_eq!(Identity::load(&path)?.public_key(), id.public_key());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Identity {
    secret: Zeroizing<[u8; 32]>,
    public: PublicKey,
}

impl Identity {
    /// A new random identity from the operating system's CSPRNG.
    pub fn generate() -> Identity {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut secret[..]);
        Identity::from_secret_bytes(*secret)
    }

    /// The identity whose private key is `secret`.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Identity {
        let secret = Zeroizing::new(secret);
        let static_secret = x25519_dalek::StaticSecret::from(*secret);
        let public = x25519_dalek::PublicKey::from(&static_secret);
        Identity {
            secret,
            public: PublicKey(public.to_bytes()),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Writes the identity to `path`, readable and writable by the owner only
    /// (mode 0600), atomically: a temporary file in the same directory is
    /// written, synced and renamed over `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Identity`] naming the file if it cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let fail = |reason: String| Error::Identity {
            path: path.to_owned(),
            reason,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut text = Zeroizing::new(String::with_capacity(96));
        text.push_str(FILE_HEADER);
        text.push('\n');
        text.push_str(&hex::encode(&self.secret[..]));
        text.push('\n');
        let write = || -> std::io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail(format!("cannot write: {e}"))
        })
    }

    /// Reads an identity written by [`save`](Identity::save).
    ///
    /// # Errors
    ///
    /// [`Error::Identity`] naming the file when it cannot be read, is not an
    /// identity file, or (on Unix) can be read by users other than its owner:
    /// a private key others can read is not private.
    pub fn load(path: impl AsRef<Path>) -> Result<Identity> {
        let path = path.as_ref();
        let fail = |reason: String| Error::Identity {
            path: path.to_owned(),
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "permissions {mode:03o} let other users read the private key; \
                     make it owner-only (chmod 600)"
                )));
            }
        }
        if meta.len() > 4096 {
            return Err(fail(format!(
                "{} bytes is far too large for an identity file",
                meta.len()
            )));
        }
        let text = Zeroizing::new(
            fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?,
        );
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(fail(format!(
                "not an identity file: first line is not {FILE_HEADER:?}"
            )));
        }
        let hex_secret = lines.next().unwrap_or("").trim();
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_secret, &mut secret[..])
            .map_err(|e| fail(format!("the private key line is not 64 hex digits: {e}")))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(fail("unexpected text after the private key".into()));
        }
        Ok(Identity::from_secret_bytes(*secret))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trips_through_hex() {
        let id = Identity::generate();
        let s = id.public_key().to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PublicKey>().unwrap(), id.public_key());
    }

    #[test]
    fn public_key_parse_errors_say_what_is_wrong() {
        let e = "abc".parse::<PublicKey>().unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = "zz"
            .repeat(32)
            .parse::<PublicKey>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid public key"), "{e}");
    }

    #[test]
    fn identity_matches_x25519_derivation() {
        let id = Identity::from_secret_bytes([7; 32]);
        let again = Identity::from_secret_bytes([7; 32]);
        assert_eq!(id.public_key(), again.public_key());
        assert_ne!(id.public_key(), Identity::generate().public_key());
        assert!(!format!("{id:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn save_load_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let id = Identity::generate();
        id.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().public_key(), id.public_key());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn load_rejects_junk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        for junk in [
            "",
            "hello\n",
            "crust-identity-v1\nnothex\n",
            "crust-identity-v1\n00\n",
        ] {
            fs::write(&path, junk).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let e = Identity::load(&path).unwrap_err();
            assert!(matches!(e, Error::Identity { .. }), "{junk:?}: {e}");
            assert!(e.to_string().contains(path.to_str().unwrap()));
        }
        let e = Identity::load(dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
