//! Pull: object store → workspace.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use futures::{StreamExt, stream};
use tokio::sync::Semaphore;

use super::{
    HashCache, SyncReport, SyncRequest, SyncSettings, SyncTarget,
    hash_cache::hash_reader,
    join_failure, local_failure,
    manifest::{FileEntry, Manifest, load_manifest},
    paths::PathFilter,
    scan::{FileStat, open_scanned, scan},
    transfer::{Owner, download},
    workspace_root,
};
use crate::error::{Error, Result};

/// Makes `workspace` (within `request.paths`) match the manifest at `target`: files whose size
/// or SHA-256 differ from their manifest entry are downloaded, each written atomically (a
/// temporary file in the same directory, renamed into place; on failure it is removed), with
/// missing parent directories created. With `request.delete`, local regular files the manifest
/// does not name are removed. A prefix without a manifest is empty.
///
/// Written files and created directories get the owner of the workspace root (sandboxd runs as
/// root; the sandbox's commands as the workspace owner) — skipped when not running as root —
/// and the manifest's permission bits (without setuid/setgid/sticky). Downloads are not
/// fsynced: after a power loss a file may be lost, but never half-written under its name.
///
/// Parent directories are checked component by component and a symlink or file in the way is
/// an error (a pull never writes through a link). Manifest paths that could leave the
/// workspace are skipped and counted. A sandbox process that swaps a directory for a symlink
/// *during* a pull can still race the check: pull into a workspace whose processes are stopped
/// when that matters.
pub async fn pull(
    workspace: &Path,
    target: &SyncTarget,
    request: &SyncRequest<'_>,
    settings: &SyncSettings,
    cache: &HashCache,
) -> Result<SyncReport> {
    let started = Instant::now();
    settings.validate()?;
    let filter = PathFilter::new(request.paths)?;
    let owner = Owner::of(&workspace_root(workspace)?);
    let root = workspace.to_path_buf();
    let scan_filter = filter.clone();
    let scanning = async move {
        tokio::task::spawn_blocking(move || scan(&root, &scan_filter))
            .await
            .map_err(join_failure)?
    };
    let (manifest, scanned) = tokio::try_join!(load_manifest(target), scanning)?;
    let manifest = manifest.unwrap_or_else(Manifest::new);
    let mut report = SyncReport {
        files_scanned: scanned.files.len() as u64,
        files_skipped: scanned.skipped,
        ..SyncReport::default()
    };
    let local: HashMap<&str, &FileStat> =
        scanned.files.iter().map(|file| (file.relative.as_str(), &file.stat)).collect();

    let mut work = Vec::new();
    for (relative, entry) in &manifest.files {
        if !filter.covers(relative) {
            continue;
        }
        if PathFilter::new(std::slice::from_ref(relative)).is_err() {
            report.files_skipped += 1;
            tracing::warn!(path = %relative, "pull skips a manifest path that would leave the workspace");
            continue;
        }
        let action = match local.get(relative.as_str()) {
            Some(stat) if stat.size == entry.size => match cache.get(relative, stat) {
                Some(hash) if hash == entry.sha256 => {
                    if stat.mode == entry.mode {
                        continue;
                    }
                    Action::Chmod(**stat)
                }
                Some(_) => Action::Download,
                None => Action::Verify(**stat),
            },
            _ => Action::Download,
        };
        work.push((relative.clone(), *entry, action));
    }

    let permits = Semaphore::new(settings.concurrency);
    let context = Context { root: workspace, target, cache, owner: &owner, permits: &permits };
    let context = &context;
    // Owned paths in the work items: a closure over borrowed ones is not provably `Send` for
    // every lifetime once this future runs inside a spawned task.
    let outcomes: Vec<Result<Option<u64>>> =
        stream::iter(work)
            .map(|(relative, entry, action)| async move {
                context.pull_one(&relative, entry, action).await
            })
            .buffer_unordered(settings.concurrency)
            .collect()
            .await;
    for outcome in outcomes {
        if let Some(bytes) = outcome? {
            report.files_transferred += 1;
            report.bytes_transferred += bytes;
        }
    }

    if request.delete {
        let doomed: Vec<String> = scanned
            .files
            .iter()
            .filter(|file| !manifest.files.contains_key(&file.relative))
            .map(|file| file.relative.clone())
            .collect();
        for relative in &doomed {
            cache.forget(relative);
        }
        let root = workspace.to_path_buf();
        report.files_deleted = tokio::task::spawn_blocking(move || remove_files(&root, &doomed))
            .await
            .map_err(join_failure)??;
    }
    report.duration = started.elapsed();
    tracing::debug!(?report, prefix = %target.prefix, "workspace pulled");
    Ok(report)
}

enum Action {
    Download,
    /// Same size, hash unknown: hash the local file, download only if it differs.
    Verify(FileStat),
    /// Same content, other permission bits.
    Chmod(FileStat),
}

struct Context<'a> {
    root: &'a Path,
    target: &'a SyncTarget,
    cache: &'a HashCache,
    owner: &'a Owner,
    permits: &'a Semaphore,
}

impl Context<'_> {
    /// `Some(bytes)` when the file was downloaded.
    async fn pull_one(
        &self,
        relative: &str,
        entry: FileEntry,
        action: Action,
    ) -> Result<Option<u64>> {
        let path = self.root.join(relative);
        match action {
            Action::Download => {}
            Action::Chmod(stat) => {
                blocking(move || chmod_scanned(&path, &stat, entry.mode)).await?;
                return Ok(None);
            }
            Action::Verify(stat) => {
                let observed = SystemTime::now();
                let hash_path = path.clone();
                let hashed = blocking(move || -> Result<Option<_>> {
                    let Some((file, stat)) = open_scanned(&hash_path, &stat)? else {
                        return Ok(None);
                    };
                    let hash = hash_reader(&file).map_err(|error| {
                        local_failure(format!("reading {}", hash_path.display()), error)
                    })?;
                    Ok(Some((hash, stat)))
                })
                .await?;
                if let Some((hash, stat)) = hashed {
                    self.cache.record(relative, &stat, hash, observed);
                    if hash == entry.sha256 {
                        if stat.mode != entry.mode {
                            blocking(move || chmod_scanned(&path, &stat, entry.mode)).await?;
                        }
                        return Ok(None);
                    }
                }
            }
        }
        let root = self.root.to_path_buf();
        let owner = self.owner.clone();
        let parent_of = relative.to_string();
        blocking(move || create_parents(&root, &parent_of, &owner)).await?;
        let observed = SystemTime::now();
        let written =
            download(self.target, relative, path, entry.mode, self.owner, self.permits).await?;
        if written.size != entry.size || written.hash != entry.sha256 {
            // The object was rewritten after the manifest (an interrupted or concurrent push);
            // the newer content is kept and the next push records it.
            tracing::warn!(path = %relative, prefix = %self.target.prefix, "pulled object differs from its manifest entry");
        }
        self.cache.record(relative, &written.stat, written.hash, observed);
        Ok(Some(written.size))
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(join_failure)?
}

/// `chmod` through a descriptor opened without following links.
fn chmod_scanned(path: &Path, stat: &FileStat, mode: u32) -> Result<()> {
    let Some((file, _)) = open_scanned(path, stat)? else {
        return Ok(());
    };
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(|error| local_failure(format!("chmod {}", path.display()), error))
}

/// Creates the parent directories of `relative` under `root`, each a real directory: a symlink
/// or a file in the way is an error.
fn create_parents(root: &Path, relative: &str, owner: &Owner) -> Result<()> {
    let Some((parents, _)) = relative.rsplit_once('/') else {
        return Ok(());
    };
    let mut path: PathBuf = root.to_path_buf();
    for component in parents.split('/') {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_dir() => continue,
            Ok(_) => {
                return Err(Error::FailedPrecondition {
                    reason: "WORKSPACE_PATH_CONFLICT",
                    message: format!(
                        "cannot pull {relative}: {} is not a directory (a file or symlink is in the way)",
                        path.display()
                    ),
                });
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(local_failure(format!("reading {}", path.display()), error)),
        }
        match std::fs::create_dir(&path) {
            Ok(()) => owner.apply_to_dir(&path)?,
            // Another download created it meanwhile; the next component's check (or the
            // rename) still refuses anything but a directory.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let metadata = std::fs::symlink_metadata(&path)
                    .map_err(|error| local_failure(format!("reading {}", path.display()), error))?;
                if !metadata.is_dir() {
                    return Err(Error::FailedPrecondition {
                        reason: "WORKSPACE_PATH_CONFLICT",
                        message: format!(
                            "cannot pull {relative}: {} is not a directory",
                            path.display()
                        ),
                    });
                }
            }
            Err(error) => return Err(local_failure(format!("creating {}", path.display()), error)),
        }
    }
    Ok(())
}

fn remove_files(root: &Path, relatives: &[String]) -> Result<u64> {
    let mut removed = 0;
    for relative in relatives {
        let path = root.join(relative);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(local_failure(format!("removing {}", path.display()), error)),
        }
    }
    Ok(removed)
}
