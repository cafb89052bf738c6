//! The node's cache of compiled modules, so a restart or a second runtime skips compilation.
//!
//! One file per module and engine configuration, `<cache_dir>/<key>.cwasm`, where the key is
//! `<sha256 of the registered bytes>-<engine tag>`; the engine tag is a hash of everything
//! wasmtime's compiled code depends on (wasmtime version, target, compiler flags, memory layout,
//! fuel metering), so runtimes configured differently never fight over one file. Format:
//!
//! ```text
//! magic   8 bytes  "WEIRCWM1"
//! digest 32 bytes  SHA-256 of (key ++ artifact)
//! artifact         wasmtime's serialized component
//! ```
//!
//! The digest is checked before the artifact is handed to wasmtime, because deserializing
//! trusts its input completely: a truncated, bit-flipped or misnamed file is reported, removed
//! and recompiled, never loaded. It binds the artifact to the source and engine it was compiled
//! for. It is an integrity check against corruption, not an authentication: whoever can write
//! the node's data directory can run code as the broker anyway.
//!
//! Files are written to a temporary name and renamed into place, so a reader sees either the
//! whole file or none; concurrent writers of the same module write identical content.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"WEIRCWM1";
const DIGEST_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// How the compiled-module cache has been used since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules loaded from a cached artifact, without compiling.
    pub hits: u64,
    /// Modules compiled (no usable cached artifact, or no cache).
    pub compiled: u64,
    /// Cached artifacts found corrupt or incompatible and replaced.
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    hits: AtomicU64,
    compiled: AtomicU64,
    rejected: AtomicU64,
}

impl CacheCounters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A [`Hasher`] over SHA-256, to turn wasmtime's compatibility hash into a tag that is the
/// same in every process (std's hashers are seeded or unspecified across releases).
#[derive(Default)]
pub(crate) struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// What a cache file held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// An artifact whose digest matches.
    Valid(&'a [u8]),
    /// A file that is not a valid entry for this source.
    Corrupt,
}

fn digest(key: &str, artifact: &[u8]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update(artifact);
    hasher.finalize().into()
}

/// The bytes of the cache file `key` holding `artifact`.
pub(crate) fn encode(key: &str, artifact: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_LEN + artifact.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&digest(key, artifact));
    file.extend_from_slice(artifact);
    file
}

/// The artifact in a cache file, if its header and digest check out.
pub(crate) fn decode<'a>(key: &str, file: &'a [u8]) -> Lookup<'a> {
    let (Some(magic), Some(stored), Some(artifact)) = (
        file.get(..MAGIC.len()),
        file.get(MAGIC.len()..HEADER_LEN),
        file.get(HEADER_LEN..),
    ) else {
        return Lookup::Corrupt;
    };
    if magic != MAGIC || stored != digest(key, artifact) {
        return Lookup::Corrupt;
    }
    Lookup::Valid(artifact)
}

/// A directory of cache files.
#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating it if needed) the cache directory.
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The file of a cache key.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The cache file of a key, if there is one.
    pub(crate) fn read(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a cache file atomically: to a temporary file first, then renamed into place.
    pub(crate) fn write(&self, key: &str, artifact: &[u8]) -> std::io::Result<()> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let target = self.path(key);
        let temp = self.dir.join(format!(
            ".{key}.{}.{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_then_rename(&temp, &target, &encode(key, artifact));
        if result.is_err() {
            // Best effort: a leftover temporary file is harmless, only untidy.
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Removes a cache file (after it was found corrupt).
    pub(crate) fn remove(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn write_then_rename(temp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(temp)?;
    file.write_all(bytes)?;
    // No fsync: after a crash a torn file fails its digest and is recompiled.
    drop(file);
    std::fs::rename(temp, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab12";

    #[test]
    fn stable_hasher_is_sha256_based() {
        let mut a = StableHasher::default();
        a.write(b"abc");
        let mut b = StableHasher::default();
        b.write(b"ab");
        b.write(b"c");
        assert_eq!(a.finish(), b.finish());
        // The first 8 bytes of SHA-256("abc"), little-endian.
        assert_eq!(
            a.finish(),
            u64::from_le_bytes([0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea])
        );
    }

    #[test]
    fn entries_round_trip() {
        let file = encode(SHA, b"artifact");
        assert_eq!(file.len(), HEADER_LEN + 8);
        assert_eq!(decode(SHA, &file), Lookup::Valid(b"artifact"));
        assert_eq!(
            decode(SHA, &encode(SHA, b"")),
            Lookup::Valid(b"".as_slice())
        );
    }

    #[test]
    fn any_damage_is_detected() {
        let file = encode(SHA, b"artifact bytes");
        for len in 0..file.len() {
            assert_eq!(
                decode(SHA, &file[..len]),
                Lookup::Corrupt,
                "truncated to {len}"
            );
        }
        for at in 0..file.len() {
            let mut flipped = file.clone();
            flipped[at] ^= 0x01;
            assert_eq!(
                decode(SHA, &flipped),
                Lookup::Corrupt,
                "bit flipped at {at}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(decode(SHA, &longer), Lookup::Corrupt);
    }

    #[test]
    fn an_entry_is_bound_to_its_source() {
        let file = encode(SHA, b"artifact");
        assert_eq!(decode("cd34", &file), Lookup::Corrupt);
    }

    #[test]
    fn files_are_written_whole_and_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ArtifactCache::open(dir.path().join("nested")).expect("open");
        assert_eq!(cache.read(SHA).expect("read"), None);
        cache.write(SHA, b"one").expect("write");
        cache.write(SHA, b"two").expect("overwrite");
        let file = cache.read(SHA).expect("read").expect("present");
        assert_eq!(decode(SHA, &file), Lookup::Valid(b"two".as_slice()));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("nested"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ab12.cwasm")]);
        cache.remove(SHA).expect("remove");
        cache.remove(SHA).expect("removing twice is fine");
        assert_eq!(cache.read(SHA).expect("read"), None);
    }
}
