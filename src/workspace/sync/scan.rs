//! Walking the workspace: regular files with their stat tuple, without following links.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use super::{local_failure, paths::PathFilter};
use crate::error::Result;

/// Prefix of pull's temporary files; a scan never reports them.
pub(super) const TEMP_PREFIX: &str = ".sandboxd-pull-";

/// The stat fields that identify one version of a file (as git's index does): a rewrite always
/// changes `ctime`, which no user can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl FileStat {
    pub(super) fn of(metadata: &fs::Metadata) -> Self {
        Self {
            size: metadata.size(),
            mtime_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
            ino: metadata.ino(),
            dev: metadata.dev(),
            mode: metadata.mode() & 0o7777,
        }
    }

    fn same_inode(&self, other: &FileStat) -> bool {
        self.ino == other.ino && self.dev == other.dev
    }
}

fn nanos(seconds: i64, nanoseconds: i64) -> i64 {
    seconds.saturating_mul(1_000_000_000).saturating_add(nanoseconds)
}

/// A regular file found by a scan.
#[derive(Debug, Clone)]
pub(super) struct LocalFile {
    pub relative: String,
    pub stat: FileStat,
}

#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Sorted by relative path.
    pub files: Vec<LocalFile>,
    pub skipped: u64,
}

/// Walks `root` (blocking): regular files covered by `filter`. Directories are entered only
/// through real directory entries, never through a symlink. An entry that vanishes while being
/// looked at is left out, as if the scan had come a moment later.
pub(super) fn scan(root: &Path, filter: &PathFilter) -> Result<Scan> {
    let mut result = Scan::default();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative_dir)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !relative_dir.is_empty() => {
                continue;
            }
            Err(error) => return Err(local_failure(format!("listing {}", dir.display()), error)),
        };
        for entry in entries {
            let entry = entry
                .map_err(|error| local_failure(format!("listing {}", dir.display()), error))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                result.skipped += 1;
                tracing::warn!(dir = %dir.display(), name = %name.to_string_lossy(), "sync skips a file name that is not UTF-8");
                continue;
            };
            let relative = if relative_dir.is_empty() {
                name.to_string()
            } else {
                format!("{relative_dir}/{name}")
            };
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(local_failure(
                        format!("reading {}", entry.path().display()),
                        error,
                    ));
                }
            };
            if file_type.is_dir() {
                if filter.may_cover_under(&relative) {
                    pending.push((entry.path(), relative));
                }
                continue;
            }
            if !filter.covers(&relative) {
                continue;
            }
            if !file_type.is_file() {
                result.skipped += 1;
                tracing::warn!(path = %relative, "sync skips a symlink or special file");
                continue;
            }
            if name.starts_with(TEMP_PREFIX) && name.ends_with(".tmp") {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(local_failure(
                        format!("reading {}", entry.path().display()),
                        error,
                    ));
                }
            };
            result.files.push(LocalFile { relative, stat: FileStat::of(&metadata) });
        }
    }
    result.files.sort_unstable_by(|a, b| a.relative.cmp(&b.relative));
    Ok(result)
}

/// Opens a scanned file for reading, without following a symlink in its place, and checks it
/// is still the inode the scan saw. `None` when it is gone or was replaced since (the caller
/// treats it as not there; the next sync sees the new state), so a path swapped for something
/// else after the scan is never read.
pub(super) fn open_scanned(path: &Path, scanned: &FileStat) -> Result<Option<(File, FileStat)>> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(error) if is_gone(&error) => return Ok(None),
        Err(error) => return Err(local_failure(format!("opening {}", path.display()), error)),
    };
    let metadata = file
        .metadata()
        .map_err(|error| local_failure(format!("reading {}", path.display()), error))?;
    let stat = FileStat::of(&metadata);
    if !metadata.is_file() || !stat.same_inode(scanned) {
        return Ok(None);
    }
    Ok(Some((file, stat)))
}

/// Not found, or a symlink where the scan saw a file (`ELOOP` from `O_NOFOLLOW`).
fn is_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ELOOP)
}
