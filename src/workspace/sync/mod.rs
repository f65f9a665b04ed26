//! Incremental sync between a sandbox's workspace directory and its object-store prefix.
//!
//! # Object layout
//! Under a [`SyncTarget`]'s `prefix` (e.g. `sandboxes/<uuid>/`):
//! - `<prefix>workspace/<relative path>`: one object per regular file, the path relative to the
//!   workspace root with `/` separators;
//! - `<prefix>workspace.manifest.json`: the [`Manifest`] of the last completed push (or the
//!   pull source of truth): every file's size, SHA-256 and permission bits.
//!
//! # What is synced
//! Regular files only. Symbolic links, sockets, FIFOs and devices are skipped (a link could
//! point outside the workspace, and sandboxd runs as root), and so are names that are not
//! UTF-8 (S3 keys are UTF-8): each skip is counted in [`SyncReport::files_skipped`] and logged
//! as a warning. Directories are implied by the files in them; empty directories are not kept.
//! Files named `.sandboxd-pull-*.tmp` are pull's own temporary files and never pushed.
//!
//! # Change detection
//! A file is unchanged when its size and SHA-256 equal the manifest's entry. To avoid reading
//! every file on every sync, a [`HashCache`] remembers each file's hash under its stat tuple;
//! the decision is still always by content hash against the manifest, never by mtime alone.
//! Pushing an unchanged workspace sends exactly one request (the manifest GET).
//!
//! # Crash safety of push
//! A push uploads changed files first, writes the manifest second, and deletes removed objects
//! last. A failure (or crash) during uploads leaves the previous manifest in place: it names
//! only objects that exist (a file uploaded but not yet in the manifest is harmless, the next
//! push sends it again). Deleting only after the new manifest is written means no manifest ever
//! names a deleted object; a failure during deletes leaves unreferenced objects, which pull
//! ignores (it reads only the manifest) and [`delete_prefix`] removes at destroy.

mod delete;
mod hash_cache;
mod manifest;
mod paths;
mod pull;
mod push;
mod scan;
mod transfer;

use std::{fmt, time::Duration};

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use delete::{delete_prefix, delete_prefix_keeping};
pub use hash_cache::HashCache;
pub use manifest::{FileEntry, MANIFEST_VERSION, Manifest, load_manifest};
pub use pull::pull;
pub use push::push;

/// Where a workspace is synced to: objects under `prefix` in `bucket`.
#[derive(Clone)]
pub struct SyncTarget {
    pub client: Client,
    pub bucket: String,
    /// Ends with `/` (e.g. `sandboxes/<uuid>/`); may be empty.
    pub prefix: String,
}

impl SyncTarget {
    /// The target of one sandbox: `s3://<bucket>/sandboxes/<uuid>/`.
    pub fn for_sandbox(client: Client, bucket: impl Into<String>, sandbox: uuid::Uuid) -> Self {
        Self { client, bucket: bucket.into(), prefix: format!("sandboxes/{sandbox}/") }
    }

    /// The object key of a workspace file (`relative` uses `/` separators).
    pub fn file_key(&self, relative: &str) -> String {
        format!("{}workspace/{relative}", self.prefix)
    }

    pub fn manifest_key(&self) -> String {
        format!("{}workspace.manifest.json", self.prefix)
    }
}

impl fmt::Debug for SyncTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncTarget")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (all but the last) and largest part of a multipart upload.
const MIN_PART_SIZE: u64 = 5 * MIB;
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;

/// Tuning of push and pull; embeddable in the server config as `[sync]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Most S3 requests in flight at once (uploads, parts, downloads), and most files read at
    /// once. Memory held by in-flight uploads is at most about
    /// `concurrency × max(multipart_threshold, part_size)`.
    pub concurrency: usize,
    /// Files of at least this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Bytes per part (at least 5 MiB, S3's minimum; raised for files over 10,000 parts).
    pub part_size: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self { concurrency: 32, multipart_threshold: 16 * MIB, part_size: 8 * MIB }
    }
}

impl SyncSettings {
    /// Checks the limits S3 and this engine need; field names are as in `[sync]`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1024).contains(&self.concurrency) {
            return Err(Error::invalid("sync.concurrency", "must be between 1 and 1024"));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::invalid("sync.part_size", "must be between 5 MiB and 5 GiB"));
        }
        if self.multipart_threshold == 0 || self.multipart_threshold > MAX_PART_SIZE {
            return Err(Error::invalid(
                "sync.multipart_threshold",
                "must be between 1 byte and 5 GiB",
            ));
        }
        Ok(())
    }
}

/// What to sync. `paths` are workspace-relative paths of files or directories with `/`
/// separators (validated by the caller; this module still refuses absolute paths and `..`);
/// empty means the whole workspace. With `delete`, files (push: objects; pull: local files)
/// within `paths` that the source does not have are removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncRequest<'a> {
    pub paths: &'a [String],
    pub delete: bool,
}

impl SyncRequest<'static> {
    /// The whole workspace, with deletes.
    pub fn mirror() -> Self {
        Self { paths: &[], delete: true }
    }
}

/// What one push or pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Regular files found locally within the request's paths.
    pub files_scanned: u64,
    /// Files uploaded (push) or downloaded (pull).
    pub files_transferred: u64,
    /// Objects (push) or local files (pull) deleted.
    pub files_deleted: u64,
    /// Entries skipped: symlinks, special files and non-UTF-8 names.
    pub files_skipped: u64,
    /// Content bytes uploaded or downloaded (without the manifest).
    pub bytes_transferred: u64,
    pub duration: Duration,
}

/// An S3 request failed: retryable, UNAVAILABLE.
pub(crate) fn s3_failure(what: String, error: impl Into<aws_sdk_s3::Error>) -> Error {
    Error::unavailable("object store", anyhow::Error::new(error.into()).context(what))
}

/// A local filesystem operation failed.
pub(crate) fn local_failure(what: String, error: std::io::Error) -> Error {
    Error::Internal(anyhow::Error::new(error).context(what))
}

/// A blocking task panicked or was cancelled (never expected).
pub(crate) fn join_failure(error: tokio::task::JoinError) -> Error {
    Error::Internal(anyhow::Error::new(error).context("sync worker task failed"))
}

/// The workspace root's metadata; it must be a directory itself, not a symlink to one.
pub(crate) fn workspace_root(workspace: &std::path::Path) -> Result<std::fs::Metadata> {
    match std::fs::symlink_metadata(workspace) {
        Ok(metadata) if metadata.is_dir() => Ok(metadata),
        Ok(_) => Err(Error::FailedPrecondition {
            reason: "WORKSPACE_NOT_A_DIRECTORY",
            message: format!("the workspace {} is not a directory", workspace.display()),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::FailedPrecondition {
                reason: "WORKSPACE_MISSING",
                message: format!("the workspace {} does not exist", workspace.display()),
            })
        }
        Err(error) => Err(local_failure(format!("reading {}", workspace.display()), error)),
    }
}
