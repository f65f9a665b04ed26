//! Content hashes and the per-workspace cache that avoids re-reading unchanged files.
//!
//! The hash is SHA-256: the `sha2` crate uses the CPU's SHA extensions (SHA-NI) when present,
//! about 1.5–2 GB/s per core here, so hashing is a small part of a sync next to the requests
//! (10,000 files of 8 KiB are 80 MB: ~50 ms). S3 can also verify it (`x-amz-checksum-sha256`),
//! which a faster non-cryptographic hash would not give us.

use std::{
    collections::HashMap,
    io::Read,
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest as _, Sha256};

use super::scan::FileStat;

/// A SHA-256 content hash.
pub type Digest = [u8; 32];

/// A file modified less than this long before it was looked at may still be rewritten within
/// the same timestamp tick (file times come from the kernel's coarse clock: one tick is at most
/// 10 ms) without any stat field changing, so its hash is not cached ("racy git").
const RACY_WINDOW_NS: i64 = 100_000_000;

/// Remembers, per workspace-relative path, the content hash of the file under the stat tuple
/// it had when read: (size, mtime ns, ctime ns, inode, device). A file whose tuple is unchanged
/// reuses the hash; any rewrite changes ctime, which a user cannot set, so it is read again
/// (as git's index works). The sync decision is still by content hash against the manifest.
///
/// In memory, thread-safe; one per workspace (it is keyed by relative path). Losing it costs
/// only re-reading files.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: Mutex<HashMap<String, CachedHash>>,
}

#[derive(Debug, Clone, Copy)]
struct CachedHash {
    stat: FileStat,
    hash: Digest,
}

impl HashCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The cached hash of `relative` when its stat tuple is still `stat`.
    pub(super) fn get(&self, relative: &str, stat: &FileStat) -> Option<Digest> {
        let entries = self.lock();
        let cached = entries.get(relative)?;
        same_version(&cached.stat, stat).then_some(cached.hash)
    }

    /// Records the hash of `relative` read under `stat`, which was taken at `observed`.
    pub(super) fn record(
        &self,
        relative: &str,
        stat: &FileStat,
        hash: Digest,
        observed: SystemTime,
    ) {
        let mut entries = self.lock();
        if is_racy(stat, observed) {
            entries.remove(relative);
        } else {
            entries.insert(relative.to_string(), CachedHash { stat: *stat, hash });
        }
    }

    pub(super) fn forget(&self, relative: &str) {
        self.lock().remove(relative);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, CachedHash>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Mode bits are compared too, though they do not change the content: a chmod changes ctime
/// anyway, and the manifest records them.
fn same_version(a: &FileStat, b: &FileStat) -> bool {
    a == b
}

fn is_racy(stat: &FileStat, observed: SystemTime) -> bool {
    let observed_ns = observed
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    stat.mtime_ns.max(stat.ctime_ns) > observed_ns.saturating_sub(RACY_WINDOW_NS)
}

/// Hashes a whole reader (blocking).
pub(super) fn hash_reader(mut reader: impl Read) -> std::io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().into())
}

pub(super) fn hash_bytes(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// An incremental hasher for content read in parts.
#[derive(Default, Clone)]
pub(super) struct Hasher(Sha256);

impl Hasher {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(super) fn finish(self) -> Digest {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stat(ctime_ns: i64) -> FileStat {
        FileStat { size: 3, mtime_ns: ctime_ns, ctime_ns, ino: 7, dev: 1, mode: 0o644 }
    }

    #[test]
    fn reuses_a_hash_only_for_the_same_stat_tuple() {
        let cache = HashCache::new();
        let old = stat(1_000_000_000);
        let observed = UNIX_EPOCH + Duration::from_secs(10);
        cache.record("a", &old, [1; 32], observed);
        assert_eq!(cache.get("a", &old), Some([1; 32]));
        assert_eq!(cache.get("a", &FileStat { ctime_ns: old.ctime_ns + 1, ..old }), None);
        assert_eq!(cache.get("a", &FileStat { ino: 8, ..old }), None);
        assert_eq!(cache.get("b", &old), None);
    }

    #[test]
    fn does_not_cache_a_file_modified_just_before_it_was_read() {
        let cache = HashCache::new();
        let observed = UNIX_EPOCH + Duration::from_secs(10);
        let fresh = stat(10_000_000_000 - 1_000_000);
        cache.record("a", &fresh, [1; 32], observed);
        assert_eq!(cache.get("a", &fresh), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn hashes_are_sha256() {
        assert_eq!(
            hex::encode(hash_bytes(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_reader(&b"abc"[..]).ok(), Some(hash_bytes(b"abc")));
    }
}
