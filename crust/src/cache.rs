//! The bootstrap cache: endpoints we reached, newest first, bounded, kept
//! in a file that a crash never tears.
//!
//! The codec ([`encode`], [`decode`]) is sans-IO and fuzzed; [`CacheStore`]
//! does the file work: an advisory lock per file, atomic replacement (temp
//! file in the same directory, `fsync`, rename, directory `fsync`), and a
//! corrupt file set aside as `<name>.corrupt` and reported, never silently
//! dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use transport::{Endpoint, Protocol, PublicKey};

/// The first bytes of a cache file.
pub const CACHE_MAGIC: [u8; 4] = *b"CRSC";
/// The cache file format version.
pub const CACHE_VERSION: u8 = 1;
/// The most entries a cache file may hold (and `cache_size` may ask for).
pub const MAX_CACHE_ENTRIES: usize = 10_000;

/// Why a cache file's bytes are not a cache.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// Not our magic or version.
    NotACache,
    /// Shorter than its header or entries say.
    Truncated,
    /// The checksum does not match (a torn or altered file).
    Checksum,
    /// More entries than [`MAX_CACHE_ENTRIES`].
    TooMany(usize),
    /// An entry is malformed.
    BadEntry(&'static str),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::NotACache => f.write_str("not a crust cache file (magic or version)"),
            CacheError::Truncated => f.write_str("truncated"),
            CacheError::Checksum => f.write_str("checksum mismatch (torn or altered)"),
            CacheError::TooMany(n) => {
                write!(f, "{n} entries, over the {MAX_CACHE_ENTRIES} maximum")
            }
            CacheError::BadEntry(what) => write!(f, "bad entry: {what}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// Encodes entries (newest first): `"CRSC"`, `version: u8`, `count: u32
/// BE`, each entry `protocol: u8` (0 tcp, 1 utp), `family: u8` (4 or 6),
/// address, `port: u16 BE`, `public key: 32 bytes`; then a CRC-32 (IEEE,
/// BE) of everything before it.
///
/// ```
/// use crust::cache::{decode, encode};
/// let ep: transport::Endpoint = format!("tcp://192.0.2.1:5483/?pubkey={}", "07".repeat(32)).parse()?;
/// let bytes = encode(&[ep]);
/// assert_eq!(decode(&bytes)?, vec![ep]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(entries: &[Endpoint]) -> Vec<u8> {
    let entries = &entries[..entries.len().min(MAX_CACHE_ENTRIES)];
    let mut out = Vec::with_capacity(9 + entries.len() * 52 + 4);
    out.extend_from_slice(&CACHE_MAGIC);
    out.push(CACHE_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        out.push(match e.protocol {
            Protocol::Tcp => 0,
            Protocol::Utp => 1,
        });
        match e.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&e.addr.port().to_be_bytes());
        out.extend_from_slice(e.public_key.as_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes a cache file's bytes.
///
/// # Errors
///
/// [`CacheError`] saying what is wrong; never panics.
pub fn decode(bytes: &[u8]) -> Result<Vec<Endpoint>, CacheError> {
    if bytes.len() < 9 + 4 {
        return Err(if bytes.starts_with(&CACHE_MAGIC) || bytes.is_empty() {
            CacheError::Truncated
        } else {
            CacheError::NotACache
        });
    }
    if bytes[..4] != CACHE_MAGIC || bytes[4] != CACHE_VERSION {
        return Err(CacheError::NotACache);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(CacheError::Checksum);
    }
    let count = u32::from_be_bytes([body[5], body[6], body[7], body[8]]) as usize;
    if count > MAX_CACHE_ENTRIES {
        return Err(CacheError::TooMany(count));
    }
    let mut r = &body[9..];
    let mut take = |n: usize| -> Result<&[u8], CacheError> {
        if r.len() < n {
            return Err(CacheError::Truncated);
        }
        let (a, b) = r.split_at(n);
        r = b;
        Ok(a)
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let head = take(2)?;
        let protocol = match head[0] {
            0 => Protocol::Tcp,
            1 => Protocol::Utp,
            _ => return Err(CacheError::BadEntry("unknown protocol")),
        };
        let ip = match head[1] {
            4 => {
                let b = take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b: [u8; 16] = take(16)?.try_into().map_err(|_| CacheError::Truncated)?;
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err(CacheError::BadEntry("unknown address family")),
        };
        let p = take(2)?;
        let port = u16::from_be_bytes([p[0], p[1]]);
        if port == 0 || ip.is_unspecified() {
            return Err(CacheError::BadEntry("port 0 or unspecified address"));
        }
        let key: [u8; 32] = take(32)?.try_into().map_err(|_| CacheError::Truncated)?;
        out.push(Endpoint::new(
            protocol,
            SocketAddr::new(ip, port),
            PublicKey::from_bytes(key),
        ));
    }
    if !r.is_empty() {
        return Err(CacheError::BadEntry("trailing bytes"));
    }
    Ok(out)
}

/// The cache in memory: newest first, no duplicates, at most `cap`.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointCache {
    entries: VecDeque<Endpoint>,
    cap: usize,
}

impl EndpointCache {
    pub(crate) fn new(cap: usize, entries: Vec<Endpoint>) -> Self {
        let mut c = EndpointCache {
            entries: VecDeque::new(),
            cap,
        };
        for e in entries.into_iter().rev() {
            c.insert(e);
        }
        c
    }

    /// Puts `e` first; returns whether the cache changed.
    pub(crate) fn insert(&mut self, e: Endpoint) -> bool {
        if self.entries.front() == Some(&e) {
            return false;
        }
        self.entries.retain(|x| *x != e);
        self.entries.push_front(e);
        self.entries.truncate(self.cap);
        true
    }

    /// Removes `e`; returns whether it was there.
    pub(crate) fn remove(&mut self, e: &Endpoint) -> bool {
        let before = self.entries.len();
        self.entries.retain(|x| x != e);
        before != self.entries.len()
    }

    pub(crate) fn list(&self) -> Vec<Endpoint> {
        self.entries.iter().copied().collect()
    }
}

/// The cache file: locked for this service, replaced atomically.
#[derive(Debug)]
pub(crate) struct CacheStore {
    path: Option<PathBuf>,
    _lock: Option<File>,
}

impl CacheStore {
    /// A store that keeps nothing on disk.
    pub(crate) fn memory() -> CacheStore {
        CacheStore {
            path: None,
            _lock: None,
        }
    }

    /// Opens the cache at `path`: takes its lock, reads it. Returns the
    /// store, the entries, and a warning for the caller if something was
    /// wrong (a corrupt file set aside, a lock held by another service).
    pub(crate) fn open(path: &Path) -> (CacheStore, Vec<Endpoint>, Option<String>) {
        let lock_path = with_suffix(path, ".lock");
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            let w = format!(
                "cannot create the cache directory {}: {e}; keeping the cache in memory",
                dir.display()
            );
            log::warn!("{w}");
            return (CacheStore::memory(), Vec::new(), Some(w));
        }
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) => {
                let w = format!(
                    "cannot open the cache lock {}: {e}; keeping the cache in memory",
                    lock_path.display()
                );
                log::warn!("{w}");
                return (CacheStore::memory(), Vec::new(), Some(w));
            }
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let w = format!(
                "the cache file {} is in use by another service ({}); keeping this \
                 service's cache in memory",
                path.display(),
                std::io::Error::last_os_error()
            );
            log::warn!("{w}");
            // Still read it: the other service's endpoints are good to know.
            let entries = std::fs::read(path)
                .ok()
                .and_then(|b| decode(&b).ok())
                .unwrap_or_default();
            return (CacheStore::memory(), entries, Some(w));
        }
        remove_stale_temp_files(path);
        let store = CacheStore {
            path: Some(path.to_owned()),
            _lock: Some(lock),
        };
        match std::fs::read(path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(entries) => (store, entries, None),
                Err(e) => {
                    let aside = with_suffix(path, ".corrupt");
                    let moved = std::fs::rename(path, &aside);
                    let w = match moved {
                        Ok(()) => format!(
                            "the cache file {} is corrupt ({e}); moved it to {} and started \
                             with an empty cache",
                            path.display(),
                            aside.display()
                        ),
                        Err(m) => format!(
                            "the cache file {} is corrupt ({e}) and could not be moved aside \
                             ({m}); started with an empty cache",
                            path.display()
                        ),
                    };
                    log::warn!("{w}");
                    (store, Vec::new(), Some(w))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (store, Vec::new(), None),
            Err(e) => {
                let w = format!(
                    "cannot read the cache file {}: {e}; started with an empty cache",
                    path.display()
                );
                log::warn!("{w}");
                (store, Vec::new(), Some(w))
            }
        }
    }

    /// Replaces the file with `entries`, atomically. Errors are logged: the
    /// cache in memory stays right.
    pub(crate) fn save(&self, entries: &[Endpoint]) {
        let Some(path) = &self.path else { return };
        if let Err(e) = write_file(path, entries) {
            log::warn!("cannot write the cache file {}: {e}", path.display());
        }
    }
}

/// Removes temp files that writers killed mid-write left beside `path`
/// (only the lock holder writes, and we hold it).
fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_owned();
    prefix.push(".tmp.");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a cache file holding `entries` (newest first) atomically: a crash
/// at any point leaves the old file or the new one, never a torn one.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("bootstrap.cache");
/// let ep: transport::Endpoint = format!("utp://[2001:db8::1]:9/?pubkey={}", "ab".repeat(32)).parse()?;
/// crust::cache::write_file(&path, &[ep])?;
/// assert_eq!(crust::cache::read_file(&path)?, vec![ep]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// The OS error of the write, `fsync` or rename.
pub fn write_file(path: &Path, entries: &[Endpoint]) -> std::io::Result<()> {
    write_atomically(path, &encode(entries))
}

/// Reads a cache file.
///
/// # Errors
///
/// The OS error, or `InvalidData` with the [`CacheError`] for a file that
/// is not a valid cache.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Endpoint>> {
    let bytes = std::fs::read(path)?;
    decode(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Temp file in the same directory, `fsync`, rename over `path`, `fsync`
/// the directory: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = with_suffix(path, &format!(".tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(i: u8) -> Endpoint {
        Endpoint::new(
            if i.is_multiple_of(2) {
                Protocol::Tcp
            } else {
                Protocol::Utp
            },
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, i.max(1))),
                5000 + i as u16,
            ),
            PublicKey::from_bytes([i; 32]),
        )
    }

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let entries: Vec<_> = (0..5).map(ep).collect();
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        assert_eq!(decode(b"junk junk junk"), Err(CacheError::NotACache));
    }

    #[test]
    fn newest_first_bounded_no_duplicates() {
        let mut c = EndpointCache::new(3, vec![]);
        assert!(c.insert(ep(1)));
        assert!(c.insert(ep(2)));
        assert!(!c.insert(ep(2)));
        assert!(c.insert(ep(3)));
        assert!(c.insert(ep(1)));
        assert_eq!(c.list(), vec![ep(1), ep(3), ep(2)]);
        assert!(c.insert(ep(4)));
        assert_eq!(c.list(), vec![ep(4), ep(1), ep(3)]);
        assert!(c.remove(&ep(1)));
        assert!(!c.remove(&ep(1)));
        let c = EndpointCache::new(2, vec![ep(1), ep(2), ep(3)]);
        assert_eq!(c.list(), vec![ep(1), ep(2)]);
    }
}
