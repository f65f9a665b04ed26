//! Push: workspace → object store.

use std::{
    collections::HashSet,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Instant, SystemTime},
};

use futures::{StreamExt, stream};
use tokio::sync::Semaphore;

use super::{
    HashCache, SyncReport, SyncRequest, SyncSettings, SyncTarget,
    delete::delete_keys,
    hash_cache::{Digest, hash_bytes, hash_reader},
    join_failure, local_failure,
    manifest::{FileEntry, Manifest, load_manifest, store_manifest},
    paths::PathFilter,
    scan::{LocalFile, open_scanned, scan},
    transfer::{put_multipart, put_small},
    workspace_root,
};
use crate::error::{Error, Result};

/// Uploads new and changed files of `workspace` (within `request.paths`) to `target`, then
/// writes the manifest, then (with `request.delete`) deletes the objects of files that are
/// gone — in that order, so the manifest never names an object that was not uploaded or was
/// deleted (see the module docs).
///
/// A file is sent when its size or SHA-256 differs from the last manifest's entry; hashes come
/// from `cache` when the file's stat tuple is unchanged. Files below
/// `settings.multipart_threshold` go in one PUT from the bytes that were hashed (one read);
/// larger ones as a multipart upload. An unchanged workspace costs one request (the manifest
/// GET) and writes nothing. A file that vanishes or is replaced during the push is treated as
/// absent. Dropping the returned future mid-way may leave an incomplete multipart upload
/// (a bucket lifecycle rule `AbortIncompleteMultipartUpload` cleans those).
pub async fn push(
    workspace: &Path,
    target: &SyncTarget,
    request: &SyncRequest<'_>,
    settings: &SyncSettings,
    cache: &HashCache,
) -> Result<SyncReport> {
    let started = Instant::now();
    settings.validate()?;
    let filter = PathFilter::new(request.paths)?;
    workspace_root(workspace)?;
    let root = workspace.to_path_buf();
    let scan_filter = filter.clone();
    let scanning = async move {
        tokio::task::spawn_blocking(move || scan(&root, &scan_filter))
            .await
            .map_err(join_failure)?
    };
    let (previous, scanned) = tokio::try_join!(load_manifest(target), scanning)?;
    let scanned_at = started.elapsed();
    let previous = previous.unwrap_or_else(Manifest::new);
    let mut report = SyncReport {
        files_scanned: scanned.files.len() as u64,
        files_skipped: scanned.skipped,
        ..SyncReport::default()
    };

    let mut next = previous.clone();
    let mut present: HashSet<String> = HashSet::with_capacity(scanned.files.len());
    let mut work = Vec::new();
    for file in scanned.files {
        present.insert(file.relative.clone());
        let old = previous.files.get(&file.relative).copied();
        let known = cache.get(&file.relative, &file.stat);
        match (old, known) {
            (Some(old), Some(hash)) if old.size == file.stat.size && old.sha256 == hash => {
                set_mode(&mut next, &file.relative, file.stat.mode);
            }
            _ => work.push(Candidate { file, old, known }),
        }
    }

    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let failed = AtomicBool::new(false);
    let context = Context { root: workspace, target, settings, cache, permits, failed: &failed };
    let outcomes: Vec<Result<Outcome>> = stream::iter(work)
        .map(|candidate| context.push_one(candidate))
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::Unchanged { relative, mode }) => set_mode(&mut next, &relative, mode),
            Ok(Outcome::Uploaded { relative, entry }) => {
                report.files_transferred += 1;
                report.bytes_transferred += entry.size;
                next.files.insert(relative, entry);
            }
            Ok(Outcome::Vanished { relative }) => {
                present.remove(&relative);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }

    let mut removed = Vec::new();
    if request.delete {
        for relative in previous.files.keys() {
            if filter.covers(relative) && !present.contains(relative) {
                next.files.remove(relative);
                removed.push(target.file_key(relative));
            }
        }
    }
    let transferred_at = started.elapsed();
    if next != previous {
        store_manifest(target, &next).await?;
    }
    let manifest_at = started.elapsed();
    report.files_deleted = delete_keys(target, removed).await?;
    report.duration = started.elapsed();
    tracing::debug!(
        ?report,
        prefix = %target.prefix,
        scan_ms = scanned_at.as_millis(),
        transfer_ms = (transferred_at - scanned_at).as_millis(),
        manifest_ms = (manifest_at - transferred_at).as_millis(),
        "workspace pushed"
    );
    Ok(report)
}

fn set_mode(manifest: &mut Manifest, relative: &str, mode: u32) {
    if let Some(entry) = manifest.files.get_mut(relative) {
        entry.mode = mode;
    }
}

/// A scanned file that may need uploading: not cached, or cached with a hash that differs.
struct Candidate {
    file: LocalFile,
    old: Option<FileEntry>,
    known: Option<Digest>,
}

enum Outcome {
    Unchanged { relative: String, mode: u32 },
    Uploaded { relative: String, entry: FileEntry },
    Vanished { relative: String },
}

struct Context<'a> {
    root: &'a Path,
    target: &'a SyncTarget,
    settings: &'a SyncSettings,
    cache: &'a HashCache,
    permits: Arc<Semaphore>,
    failed: &'a AtomicBool,
}

impl Context<'_> {
    async fn push_one(&self, candidate: Candidate) -> Result<Outcome> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::unavailable(
                "object store",
                anyhow::anyhow!("push stopped: another transfer failed"),
            ));
        }
        let path = self.root.join(&candidate.file.relative);
        let result = if candidate.file.stat.size < self.settings.multipart_threshold {
            self.push_small(path, candidate).await
        } else {
            self.push_large(path, candidate).await
        };
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// One read serves the hash and the upload, so what is uploaded is what was hashed.
    async fn push_small(&self, path: PathBuf, candidate: Candidate) -> Result<Outcome> {
        let Candidate { file, old, .. } = candidate;
        let observed = SystemTime::now();
        let scanned = file.stat;
        let read = tokio::task::spawn_blocking(move || -> Result<Option<_>> {
            let Some((mut opened, stat)) = open_scanned(&path, &scanned)? else {
                return Ok(None);
            };
            let mut bytes = Vec::with_capacity(usize::try_from(stat.size).unwrap_or(0));
            opened
                .read_to_end(&mut bytes)
                .map_err(|error| local_failure(format!("reading {}", path.display()), error))?;
            let hash = hash_bytes(&bytes);
            Ok(Some((bytes, hash, stat)))
        })
        .await
        .map_err(join_failure)??;
        let Some((bytes, hash, stat)) = read else {
            return Ok(Outcome::Vanished { relative: file.relative });
        };
        self.cache.record(&file.relative, &stat, hash, observed);
        let entry = FileEntry { size: bytes.len() as u64, sha256: hash, mode: stat.mode };
        if old.is_some_and(|old| old.size == entry.size && old.sha256 == hash) {
            return Ok(Outcome::Unchanged { relative: file.relative, mode: stat.mode });
        }
        let _permit = self.permits.acquire().await.map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("request permits closed"))
        })?;
        put_small(self.target, &file.relative, bytes, &hash).await?;
        Ok(Outcome::Uploaded { relative: file.relative, entry })
    }

    /// Large files are hashed first only when that can avoid the upload (same size as the
    /// manifest's entry, hash not cached); the upload hashes what it sends.
    async fn push_large(&self, path: PathBuf, candidate: Candidate) -> Result<Outcome> {
        let Candidate { file, old, known } = candidate;
        let same_size = old.is_some_and(|old| old.size == file.stat.size);
        if same_size && known.is_none() {
            let observed = SystemTime::now();
            let scanned = file.stat;
            let hash_path = path.clone();
            let hashed = tokio::task::spawn_blocking(move || -> Result<Option<_>> {
                let Some((opened, stat)) = open_scanned(&hash_path, &scanned)? else {
                    return Ok(None);
                };
                let hash = hash_reader(opened).map_err(|error| {
                    local_failure(format!("reading {}", hash_path.display()), error)
                })?;
                Ok(Some((hash, stat)))
            })
            .await
            .map_err(join_failure)??;
            let Some((hash, stat)) = hashed else {
                return Ok(Outcome::Vanished { relative: file.relative });
            };
            self.cache.record(&file.relative, &stat, hash, observed);
            if old.is_some_and(|old| old.sha256 == hash) {
                return Ok(Outcome::Unchanged { relative: file.relative, mode: stat.mode });
            }
        }
        let observed = SystemTime::now();
        let scanned = file.stat;
        let open_path = path.clone();
        let opened = tokio::task::spawn_blocking(move || open_scanned(&open_path, &scanned))
            .await
            .map_err(join_failure)??;
        let Some((opened, stat)) = opened else {
            return Ok(Outcome::Vanished { relative: file.relative });
        };
        let (size, hash, opened) = put_multipart(
            self.target,
            &file.relative,
            opened,
            self.settings,
            &self.permits,
            self.failed,
        )
        .await?;
        // Cache the hash only if the file did not change while it was read.
        let after = opened.metadata().map(|metadata| super::scan::FileStat::of(&metadata));
        if after.is_ok_and(|after| after == stat) {
            self.cache.record(&file.relative, &stat, hash, observed);
        }
        Ok(Outcome::Uploaded {
            relative: file.relative,
            entry: FileEntry { size, sha256: hash, mode: stat.mode },
        })
    }
}
