//! File access to a sandbox's workspace directory: the library behind `ListFiles`, `ReadFile`
//! and `WriteFile`.
//!
//! # Threat model
//!
//! sandboxd runs as root; the workspace (`/var/lib/sandboxd/workspaces/<uuid>`) belongs to the
//! sandbox's unprivileged uid, and processes inside the sandbox can change anything in it at any
//! moment, concurrently with a request. Two parties are untrusted: the RPC caller, who names
//! paths, and the sandbox's processes, who shape the tree those paths resolve in (symlinks such as
//! `escape -> /etc` or `-> ../other-sandbox`, FIFOs, deep trees, files swapped between a check and
//! a use). Nothing either does may make sandboxd read, stat, create, chown or replace anything
//! outside the workspace root, or block sandboxd forever.
//!
//! How that holds:
//! - A caller's path is first checked lexically ([`RelPath`]): relative, no `..`, `.` or empty
//!   components, no NUL, bounded length.
//! - Every open of a caller's path is one `openat2` relative to an `O_PATH` fd of the root with
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (`confine.rs`): the kernel refuses, at the moment of
//!   the open, any symlink that is absolute or climbs above the root, so a symlink swapped in after
//!   a check is judged as well. Such paths are INVALID_ARGUMENT ("leads outside the workspace").
//! - **Decision: a symlink that stays inside the workspace is followed** when it is part of a
//!   caller's path (a relative `docs -> src/docs` works for read, list and as a parent directory
//!   of a write), because it cannot reach anything the sandbox could not reach anyway. Absolute
//!   symlinks are refused even when they would point into the workspace (`RESOLVE_BENEATH`).
//! - Everything after that open works on file descriptors and single names (`*at` calls): the
//!   listing walk opens child directories with `O_NOFOLLOW` and never follows a symlink; a write
//!   creates its temp file with `O_CREAT | O_EXCL | O_NOFOLLOW` and renames it with `renameat`
//!   inside the already-confined parent directory fd.
//! - Reads open with `O_NONBLOCK` and refuse anything but a regular file, so a planted FIFO cannot
//!   hang a request. Writes never write into an existing inode (temp file, then rename), so a hard
//!   link cannot redirect a write either.
//! - The listing walk holds a handful of fds whatever the depth of the tree (the listed
//!   directory and the one being read; a parent is reopened on the way back up), so a deep tree
//!   cannot exhaust sandboxd's fds.
//!
//! Residual: a directory already opened can be renamed by the sandbox while a request works in
//! it, but only within what the sandbox can reach — the workspace is its own bind mount inside the
//! sandbox, and a rename across mounts fails. Hard links to files outside cannot be made from
//! inside the sandbox for the same reason (and `fs.protected_hardlinks`). `openat2` needs Linux
//! 5.6; without it every call fails with INTERNAL rather than falling back to unchecked opens.
//!
//! Ownership: new files and directories get the uid/gid of the workspace root (when sandboxd runs
//! as root), so the sandbox's commands can change them.

mod confine;
mod limits;
mod list;
mod path;
mod read;
mod write;

use std::{os::fd::OwnedFd, path::Path, sync::Arc};

use rustix::{
    fs::{Gid, Mode, OFlags, Uid},
    io::Errno,
};

pub use limits::FileLimits;
pub use list::{FileEntry, FileKind, ListPage, ListQuery};
pub use path::{MAX_COMPONENT_BYTES, MAX_PATH_BYTES, RelPath};
pub use read::{ChunkStream, FileRead, ReadChunk, ReadRange};
pub use write::{FileWriter, WriteOutcome};

use crate::error::{Error, Result};

/// An opened workspace: an `O_PATH` fd of its root directory plus the limits. Cheap to clone;
/// open one per request (or keep one per sandbox).
#[derive(Clone)]
pub struct Workspace {
    inner: Arc<Inner>,
}

struct Inner {
    root: OwnedFd,
    /// The owner new files and directories get; `None` when sandboxd does not run as root (it
    /// could not give them away, and they are then its own anyway).
    owner: Option<(Uid, Gid)>,
    limits: FileLimits,
}

impl Workspace {
    /// Opens the workspace whose root directory is `root` (a path sandboxd chose, trusted).
    /// A missing root is FAILED_PRECONDITION (`WORKSPACE_MISSING`).
    pub async fn open(root: impl AsRef<Path>, limits: FileLimits) -> Result<Self> {
        let root = root.as_ref().to_owned();
        blocking(move || {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd =
                rustix::fs::open(&root, flags, Mode::empty()).map_err(|errno| match errno {
                    Errno::NOENT | Errno::NOTDIR => Error::FailedPrecondition {
                        reason: "WORKSPACE_MISSING",
                        message: "the sandbox's workspace directory does not exist".into(),
                    },
                    other => {
                        confine::io_error(other, format!("opening workspace {}", root.display()))
                    }
                })?;
            let stat = rustix::fs::fstat(&fd)
                .map_err(|e| confine::io_error(e, format!("inspecting {}", root.display())))?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let running_as_root = unsafe { libc::geteuid() } == 0;
            let owner =
                running_as_root.then(|| (Uid::from_raw(stat.st_uid), Gid::from_raw(stat.st_gid)));
            Ok(Self { inner: Arc::new(Inner { root: fd, owner, limits }) })
        })
        .await
    }

    pub fn limits(&self) -> &FileLimits {
        &self.inner.limits
    }
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        Error::Internal(anyhow::Error::new(error).context("workspace file task failed"))
    })?
}

#[cfg(test)]
mod tests;
