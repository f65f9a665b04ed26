//! `ListFiles`: the entries of a directory (direct children, or everything below it) or of one
//! file, ordered by path in byte order, one page at a time.
//!
//! Symlinks met while walking are reported as entries of their own (kind [`FileKind::Symlink`],
//! size = length of the link text) and never followed, so a listing cannot wander out of the
//! workspace. Only the listed `path` itself may pass through symlinks that stay inside (see the
//! module doc of [`super`]). Names that are not UTF-8 cannot be named in a request either and are
//! skipped. A listing is not a snapshot: changes made while paging may or may not show.
//!
//! Cost: pages are stateless (the token holds the last path returned), so each page walks again
//! from the listed directory, but prunes every subtree that lies wholly before the token: a page
//! reads the directories on the way down to the token (each read in full and sorted, since the
//! kernel returns names unordered) and then only what the page itself returns. A page therefore
//! costs O(sum of the sizes of the directories on the token's path + page size) reads, plus a
//! stat per returned entry — not a walk of the whole tree. Non-recursive pages of one huge
//! directory read that directory once per page.

use std::{
    os::fd::{AsFd, OwnedFd},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustix::{
    fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat},
    io::Errno,
};

use super::{
    Inner, Workspace, blocking,
    confine::{self, CONFINED, NO_SYMLINKS},
    path::RelPath,
};
use crate::{
    error::{Error, Result},
    sandbox::page_token,
};

/// A parsed `ListFiles` request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub path: RelPath,
    pub recursive: bool,
    /// Entries per page, already clamped (1..=1000).
    pub page_size: u32,
    /// The last path of the previous page.
    pub after: Option<RelPath>,
}

impl ListQuery {
    /// Parses the request fields; errors name `path`, `page_size` or `page_token`. A token is
    /// only accepted with the `path` and `recursive` it was made for.
    pub fn parse(path: &str, recursive: bool, page_size: i32, page_token: &str) -> Result<Self> {
        let path = RelPath::parse("path", path)?;
        let page_size = page_token::page_size(page_size)?;
        let position: Option<String> = page_token::decode(page_token, &filters(&path, recursive))?;
        let after = match position {
            None => None,
            Some(raw) => {
                let malformed =
                    || Error::invalid("page_token", "is not a page token of this listing");
                let after = RelPath::parse("page_token", &raw).map_err(|_| malformed())?;
                if !path.contains(&after) {
                    return Err(malformed());
                }
                Some(after)
            }
        };
        Ok(Self { path, recursive, page_size, after })
    }
}

fn filters(path: &RelPath, recursive: bool) -> (&str, bool) {
    (path.as_str(), recursive)
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub files: Vec<FileEntry>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// One file, directory or other entry of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the workspace root.
    pub path: String,
    pub kind: FileKind,
    /// Bytes; 0 for directories; the length of the link text for symlinks.
    pub size: u64,
    pub modify_time: SystemTime,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl FileEntry {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device node.
    Other,
}

impl Workspace {
    /// One page of the listing `query` asks for. NOT_FOUND when its path does not exist.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage> {
        let inner = self.inner.clone();
        blocking(move || list(&inner, &query)).await
    }
}

fn list(inner: &Inner, query: &ListQuery) -> Result<ListPage> {
    let base = confine::open(
        &inner.root,
        query.path.as_open_path(),
        OFlags::PATH,
        Mode::empty(),
        CONFINED,
    )
    .map_err(|errno| confine::open_error(&query.path, "path", errno))?;
    let stat = rustix::fs::fstat(&base).map_err(|e| io(e, &query.path))?;
    let page_size = query.page_size as usize;
    let mut files = Vec::new();
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        Walk { query, base: &base, want: page_size + 1, files: &mut files }.run()?;
    } else if query.after.is_none() {
        files.push(entry(query.path.as_str().to_owned(), &stat));
    }
    let mut next_page_token = String::new();
    if files.len() > page_size {
        files.truncate(page_size);
        if let Some(last) = files.last() {
            next_page_token =
                page_token::encode(&last.path, &filters(&query.path, query.recursive));
        }
    }
    Ok(ListPage { files, next_page_token })
}

/// A name read from a directory: an entry, or (recursive listings) the subtree of a directory,
/// keyed `name/` so that sorting keys sorts the full paths (`a-b` < `a/…` < `a0`).
struct Item {
    key: String,
    subtree: bool,
}

impl Item {
    fn name(&self) -> &str {
        if self.subtree { &self.key[..self.key.len() - 1] } else { &self.key }
    }
}

struct Frame {
    /// The directory, relative to the workspace root.
    dir: RelPath,
    /// The directory relative to the listed one, for reopening it (empty: the listed one).
    below_base: String,
    items: Vec<Item>,
    next: usize,
}

struct Walk<'a> {
    query: &'a ListQuery,
    /// `O_PATH` fd of the listed directory.
    base: &'a OwnedFd,
    want: usize,
    files: &'a mut Vec<FileEntry>,
}

impl Walk<'_> {
    /// Depth-first in key order. Only the fd of the directory whose items are being handled is
    /// open; returning to a parent reopens it (below the base, no symlinks), so the number of
    /// fds does not grow with depth.
    fn run(&mut self) -> Result<()> {
        let base_dir = self.open_below_base("")?;
        let items = read_items(&base_dir, self.query.recursive, &self.query.path)?;
        let mut frames =
            vec![Frame { dir: self.query.path.clone(), below_base: String::new(), items, next: 0 }];
        // The fd of the directory of the frame at this depth.
        let mut current: Option<(usize, OwnedFd)> = Some((0, base_dir));
        let after = self.query.after.as_ref().map(RelPath::as_str);
        while self.files.len() < self.want {
            let Some(frame) = frames.last_mut() else { break };
            let Some(item) = frame.items.get(frame.next) else {
                frames.pop();
                continue;
            };
            frame.next += 1;
            let (name, subtree) = (item.name().to_owned(), item.subtree);
            let path = frame.dir.join(&name);
            if subtree {
                let prefix = format!("{path}/");
                // The subtree's paths all start with `prefix`: wholly before the token?
                if after.is_some_and(|a| a > prefix.as_str() && !a.starts_with(&prefix)) {
                    continue;
                }
            } else if after.is_some_and(|a| path.as_str() <= a) {
                continue;
            }
            let depth = frames.len() - 1;
            let dir_fd = match current.take() {
                Some((d, fd)) if d == depth => fd,
                _ => match self.open_below_base(&frames[depth].below_base) {
                    Ok(fd) => fd,
                    // The directory went away or was replaced by a symlink since: skip it.
                    Err(_) => {
                        frames.pop();
                        continue;
                    }
                },
            };
            if !subtree {
                match rustix::fs::statat(&dir_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => self.files.push(entry(path.as_str().to_owned(), &stat)),
                    Err(Errno::NOENT) => {}
                    Err(errno) => return Err(io(errno, &path)),
                }
                current = Some((depth, dir_fd));
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let opened = rustix::fs::openat(&dir_fd, name.as_str(), flags, Mode::empty());
            let child = match opened {
                Ok(fd) => fd,
                // Gone, or no longer a directory (a symlink now): nothing to descend into.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                    current = Some((depth, dir_fd));
                    continue;
                }
                Err(errno) => return Err(io(errno, &path)),
            };
            drop(dir_fd);
            let items = read_items(&child, true, &path)?;
            let parent_below_base = &frames[depth].below_base;
            let below_base = if parent_below_base.is_empty() {
                name
            } else {
                format!("{parent_below_base}/{name}")
            };
            frames.push(Frame { dir: path, below_base, items, next: 0 });
            current = Some((depth + 1, child));
        }
        Ok(())
    }

    /// Opens a directory below the listed one for reading, following no symlink at all.
    fn open_below_base(&self, below_base: &str) -> Result<OwnedFd> {
        let path = if below_base.is_empty() { "." } else { below_base };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        confine::open(self.base, path, flags, Mode::empty(), NO_SYMLINKS)
            .map_err(|errno| confine::open_error(&self.query.path, "path", errno))
    }
}

/// The names in `dir` as sorted items (subtrees only when `recursive`).
fn read_items(dir: &OwnedFd, recursive: bool, path: &RelPath) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for entry in Dir::read_from(dir.as_fd()).map_err(|e| io(e, path))? {
        let entry = entry.map_err(|e| io(e, path))?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = recursive
            && match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory),
                _ => false,
            };
        if is_dir {
            items.push(Item { key: format!("{name}/"), subtree: true });
        }
        items.push(Item { key: name.to_owned(), subtree: false });
    }
    items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(items)
}

fn entry(path: String, stat: &Stat) -> FileEntry {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let size = if kind == FileKind::Dir { 0 } else { u64::try_from(stat.st_size).unwrap_or(0) };
    FileEntry { path, kind, size, modify_time: modify_time(stat), mode: stat.st_mode & 0o7777 }
}

fn modify_time(stat: &Stat) -> SystemTime {
    // `st_mtime` is a `c_long`: `i64` here, narrower on some targets.
    #[allow(clippy::useless_conversion)]
    let seconds = i64::from(stat.st_mtime);
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0).min(999_999_999);
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(seconds.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    time.unwrap_or(UNIX_EPOCH)
}

fn io(errno: Errno, path: &RelPath) -> Error {
    confine::io_error(errno, format!("listing workspace path {:?}", path.as_str()))
}
