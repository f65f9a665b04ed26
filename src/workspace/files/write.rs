//! `WriteFile`: content streamed into a temp file next to the target, renamed over it at the end.
//!
//! Readers of the target see the old file or the new one, never a part (the temp file is synced
//! before the rename). A writer dropped before [`FileWriter::finish`] — the client cancelled, the
//! stream failed, the size limit was hit — removes its temp file and leaves the target untouched.
//! The final component is replaced as a name: when the target is a symlink, the symlink itself is
//! replaced by the new file (nothing is written through it).

use std::{ffi::OsString, fs::File, io::Write, os::fd::OwnedFd, sync::Arc};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags},
    io::Errno,
};

use super::{
    Inner, Workspace, blocking,
    confine::{self, CONFINED},
    path::RelPath,
};
use crate::error::{Error, Result};

/// Mode of a new file (a replaced one keeps its permission bits).
const NEW_FILE_MODE: u32 = 0o644;
/// Mode of a new directory.
const NEW_DIR_MODE: u32 = 0o755;

/// What a finished write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub path: RelPath,
    /// The file's new size.
    pub bytes_written: u64,
}

/// An open write: feed it chunks in order, then [`finish`](Self::finish) it. Dropping it (or any
/// error from it) discards the content and leaves the old file as it was.
///
/// From a gRPC handler, after decoding the header:
/// ```ignore
/// let mut writer = workspace.write(&path).await?;
/// while let Some(message) = stream.message().await? {
///     match message.content {
///         Some(Content::Chunk(bytes)) => writer.write_chunk(bytes).await?,
///         _ => return Err(Error::invalid("content", "only the first message may be a header").into()),
///     }
/// }
/// let outcome = writer.finish().await?;
/// ```
pub struct FileWriter {
    /// `None` after a failure: the temp file is already gone.
    state: Option<State>,
    path: RelPath,
    max_bytes: u64,
}

struct State {
    file: File,
    temp: TempFile,
    written: u64,
}

/// The temp file's name in its directory; removed on drop unless renamed into place.
struct TempFile {
    dir: Arc<OwnedFd>,
    name: OsString,
    target: String,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(errno) = rustix::fs::unlinkat(&*self.dir, &self.name, AtFlags::empty())
        {
            tracing::warn!(temp = ?self.name, error = %errno, "could not remove a workspace temp file");
        }
    }
}

impl Workspace {
    /// Starts writing `path`. Missing parent directories are created (owned like the root);
    /// INVALID_ARGUMENT when `path` is a directory, has a file as a parent, or leads outside the
    /// workspace.
    pub async fn write(&self, path: &RelPath) -> Result<FileWriter> {
        let Some((parent, name)) = path.split_last() else {
            return Err(Error::invalid(path.field(), "is required"));
        };
        let (inner, name) = (self.inner.clone(), name.to_owned());
        let state = blocking(move || start(&inner, &parent, &name)).await?;
        let max_bytes = self.inner.limits.max_write_bytes;
        Ok(FileWriter { state: Some(state), path: path.clone(), max_bytes })
    }
}

fn start(inner: &Inner, parent: &RelPath, name: &str) -> Result<State> {
    let dir = Arc::new(ensure_dir(inner, parent)?);
    let target = parent.join(name);
    let mode = match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => return Err(Error::invalid(target.field(), "is a directory")),
            // Permission bits only: no setuid/setgid/sticky carried over.
            FileType::RegularFile => stat.st_mode & 0o777,
            _ => NEW_FILE_MODE,
        },
        Err(Errno::NOENT) => NEW_FILE_MODE,
        Err(errno) => return Err(io(errno, &target)),
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (fd, temp_name) = loop {
        let temp_name = temp_name(name);
        match rustix::fs::openat(&*dir, &temp_name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => break (fd, temp_name),
            Err(Errno::EXIST) => continue,
            Err(errno) => return Err(io(errno, &target)),
        }
    };
    let temp = TempFile { dir, name: temp_name, target: name.to_owned(), renamed: false };
    if let Some((uid, gid)) = inner.owner {
        rustix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(|e| io(e, &target))?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io(e, &target))?;
    Ok(State { file: File::from(fd), temp, written: 0 })
}

/// `.<name>.sandboxd-<random>.tmp`, with `name` shortened to keep within `NAME_MAX`.
fn temp_name(name: &str) -> OsString {
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    OsString::from(format!(".{}.sandboxd-{:016x}.tmp", &name[..cut], rand::random::<u64>()))
}

/// The `O_PATH` fd of directory `dir`, creating missing components one at a time. Each is
/// resolved again from the root with [`CONFINED`], and created with `mkdirat` of a single name
/// in its confined parent, so nothing is ever created outside the workspace.
fn ensure_dir(inner: &Inner, dir: &RelPath) -> Result<OwnedFd> {
    let open = |path: &RelPath| {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        confine::open(&inner.root, path.as_open_path(), flags, Mode::empty(), CONFINED)
    };
    match open(dir) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(errno) => return Err(parent_error(dir, errno)),
    }
    let mut current = open(&RelPath::root(dir.field())).map_err(|e| parent_error(dir, e))?;
    let mut prefix = RelPath::root(dir.field());
    for component in dir.components() {
        prefix = prefix.join(component);
        match open(&prefix) {
            Ok(fd) => current = fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&current, component, Mode::from_raw_mode(NEW_DIR_MODE)) {
                    Ok(()) => give_new_dir(inner, &current, component, &prefix)?,
                    // Made concurrently, or a dangling symlink (then the open below says so).
                    Err(Errno::EXIST) => {}
                    Err(errno) => return Err(io(errno, &prefix)),
                }
                current = open(&prefix).map_err(|e| parent_error(dir, e))?;
            }
            Err(errno) => return Err(parent_error(dir, errno)),
        }
    }
    Ok(current)
}

/// Sets the owner and mode of a directory just made (opened without following a symlink, in
/// case it was swapped for one meanwhile).
fn give_new_dir(inner: &Inner, parent: &OwnedFd, name: &str, path: &RelPath) -> Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
        Err(errno) => return Err(io(errno, path)),
    };
    if let Some((uid, gid)) = inner.owner {
        rustix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(|e| io(e, path))?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(NEW_DIR_MODE)).map_err(|e| io(e, path))
}

fn parent_error(dir: &RelPath, errno: Errno) -> Error {
    match errno {
        Errno::NOTDIR => Error::invalid(dir.field(), "has a parent that is not a directory"),
        Errno::NOENT => {
            Error::invalid(dir.field(), "has a parent that is a dangling symbolic link")
        }
        other => confine::open_error(dir, "directory", other),
    }
}

impl FileWriter {
    /// Appends `chunk`. RESOURCE_EXHAUSTED (and the write abandoned) when the file would grow
    /// past `files.max_write_bytes`.
    pub async fn write_chunk(&mut self, chunk: impl AsRef<[u8]> + Send + 'static) -> Result<()> {
        let mut state = self.state.take().ok_or_else(failed_before)?;
        let length = chunk.as_ref().len() as u64;
        if state.written.saturating_add(length) > self.max_bytes {
            return Err(Error::QuotaExceeded {
                subject: format!("file:{}", self.path),
                message: format!(
                    "the file exceeds the largest write of {} bytes (files.max_write_bytes)",
                    self.max_bytes
                ),
            });
        }
        let path = self.path.clone();
        // On failure (or if this future is dropped) the state drops with the task: temp removed.
        let state = blocking(move || {
            state.file.write_all(chunk.as_ref()).map_err(|e| {
                confine::std_io_error(e, format!("writing workspace file {:?}", path.as_str()))
            })?;
            state.written += length;
            Ok(state)
        })
        .await?;
        self.state = Some(state);
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.state.as_ref().map_or(0, |state| state.written)
    }

    /// Syncs the content and renames it over the target atomically.
    pub async fn finish(mut self) -> Result<WriteOutcome> {
        let mut state = self.state.take().ok_or_else(failed_before)?;
        let path = self.path.clone();
        blocking(move || {
            let context = || format!("replacing workspace file {:?}", path.as_str());
            state.file.sync_data().map_err(|e| confine::std_io_error(e, context()))?;
            let temp = &mut state.temp;
            match rustix::fs::renameat(&*temp.dir, &temp.name, &*temp.dir, temp.target.as_str()) {
                Ok(()) => temp.renamed = true,
                Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                    return Err(Error::invalid(path.field(), "is a directory"));
                }
                Err(errno) => return Err(confine::io_error(errno, context())),
            }
            Ok(WriteOutcome { path, bytes_written: state.written })
        })
        .await
    }
}

fn failed_before() -> Error {
    Error::Internal(anyhow::anyhow!("workspace file writer used after it failed"))
}

fn io(errno: Errno, path: &RelPath) -> Error {
    confine::io_error(errno, format!("writing workspace path {:?}", path.as_str()))
}
