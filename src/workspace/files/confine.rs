//! Opening workspace paths so that the kernel, not a check before the open, keeps them inside
//! the workspace: `openat2(2)` relative to the root's fd with `RESOLVE_BENEATH` (no absolute
//! paths or symlinks, no `..` above the fd) and `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd`-style
//! jumps). The kernel applies both at the moment of the open, so a symlink swapped in after any
//! check of ours is judged too.

use std::os::fd::{AsFd, OwnedFd};

use rustix::{
    fs::{Mode, OFlags, ResolveFlags},
    io::Errno,
};

use super::path::RelPath;
use crate::error::Error;

/// Resolution of a caller's path: symlinks may be followed while they stay below the root.
pub(super) const CONFINED: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// Resolution while walking a tree: no symlink at all, not even one that stays inside.
pub(super) const NO_SYMLINKS: ResolveFlags = CONFINED.union(ResolveFlags::NO_SYMLINKS);

/// `openat2` with `O_CLOEXEC`, retrying the `EAGAIN` the kernel returns when a concurrent rename
/// could have made a `..` resolution unsafe.
pub(super) fn open(
    dir: impl AsFd,
    path: &str,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir.as_fd(), path, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// The error for a failed confined open of `path` (`resource` names it in NOT_FOUND).
pub(super) fn open_error(path: &RelPath, resource: &'static str, errno: Errno) -> Error {
    match errno {
        // A missing component, or one that is a file where a directory is needed.
        Errno::NOENT | Errno::NOTDIR => Error::not_found(resource, path.as_str()),
        Errno::XDEV => Error::invalid(path.field(), "leads outside the workspace"),
        Errno::LOOP => Error::invalid(
            path.field(),
            "leads outside the workspace or through a loop of symbolic links",
        ),
        Errno::NAMETOOLONG => Error::invalid(path.field(), "is too long"),
        Errno::NOSYS => Error::Internal(anyhow::anyhow!(
            "openat2 is not available (Linux 5.6 or later is required for workspace file access)"
        )),
        other => io_error(other, format!("opening workspace path {:?}", path.as_str())),
    }
}

/// An unexpected I/O failure: not the caller's fault, so INTERNAL; a full filesystem is
/// RESOURCE_EXHAUSTED.
pub(super) fn io_error(errno: Errno, context: String) -> Error {
    match errno {
        Errno::NOSPC | Errno::DQUOT => Error::QuotaExceeded {
            subject: "workspace".into(),
            message: "the workspace's filesystem is full".into(),
        },
        other => Error::Internal(anyhow::Error::new(std::io::Error::from(other)).context(context)),
    }
}

/// [`io_error`] for a `std::io::Error`.
pub(super) fn std_io_error(error: std::io::Error, context: String) -> Error {
    match error.raw_os_error() {
        Some(code) => io_error(Errno::from_raw_os_error(code), context),
        None => Error::Internal(anyhow::Error::new(error).context(context)),
    }
}
