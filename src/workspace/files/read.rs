//! `ReadFile`: a regular file's bytes (or a range of them) as a stream of chunks.

use std::{fs::File, os::unix::fs::FileExt, pin::Pin, sync::Arc};

use futures::Stream;
use rustix::fs::{FileType, Mode, OFlags};

use super::{
    Workspace, blocking,
    confine::{self, CONFINED},
    path::RelPath,
};
use crate::error::{Error, Result};

/// Which bytes to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadRange {
    pub offset: u64,
    /// `None`: up to the end of the file.
    pub limit: Option<u64>,
}

impl ReadRange {
    /// From the request's `offset` and `limit` (0 = to the end); negatives name their field.
    pub fn parse(offset: i64, limit: i64) -> Result<Self> {
        let offset =
            u64::try_from(offset).map_err(|_| Error::invalid("offset", "must not be negative"))?;
        let limit =
            u64::try_from(limit).map_err(|_| Error::invalid("limit", "must not be negative"))?;
        Ok(Self { offset, limit: (limit > 0).then_some(limit) })
    }
}

/// The next bytes of the file, starting at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ReadChunk>> + Send + 'static>>;

/// An opened read: the size when it started and the chunks, in file order.
pub struct FileRead {
    pub file_size: u64,
    /// Each chunk is read when the stream is polled, so memory stays at one chunk however big
    /// the file and however slow the client. An I/O failure midway ends the stream with an error.
    pub chunks: ChunkStream,
}

impl Workspace {
    /// Opens `path` for reading `range`. NOT_FOUND when it does not exist, INVALID_ARGUMENT when
    /// it is a directory or not a regular file (a FIFO, a socket) or leads outside the workspace.
    ///
    /// The read ends at the size the file had when it was opened (a file growing meanwhile is
    /// not chased; one shrinking ends the stream early). An offset at or past that end yields no
    /// chunk; an empty file read from offset 0 yields one empty chunk.
    pub async fn read(&self, path: &RelPath, range: ReadRange) -> Result<FileRead> {
        if path.is_root() {
            return Err(Error::invalid(path.field(), "is required"));
        }
        let inner = self.inner.clone();
        let opened_path = path.clone();
        let (file, file_size) = blocking(move || {
            let path = opened_path;
            // O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
            let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
            let fd = confine::open(&inner.root, path.as_str(), flags, Mode::empty(), CONFINED)
                .map_err(|errno| confine::open_error(&path, "file", errno))?;
            let stat = rustix::fs::fstat(&fd).map_err(|e| {
                confine::io_error(e, format!("inspecting workspace file {:?}", path.as_str()))
            })?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => {}
                FileType::Directory => return Err(Error::invalid(path.field(), "is a directory")),
                _ => return Err(Error::invalid(path.field(), "is not a regular file")),
            }
            Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
        })
        .await?;
        let chunk_bytes = self.inner.limits.read_chunk_bytes.max(1);
        let chunks = chunks(Arc::new(file), path.clone(), file_size, range, chunk_bytes);
        Ok(FileRead { file_size, chunks })
    }
}

fn chunks(
    file: Arc<File>,
    path: RelPath,
    file_size: u64,
    range: ReadRange,
    chunk_bytes: usize,
) -> ChunkStream {
    let end =
        range.limit.map_or(file_size, |limit| file_size.min(range.offset.saturating_add(limit)));
    Box::pin(async_stream::try_stream! {
        if file_size == 0 && range.offset == 0 {
            yield ReadChunk { offset: 0, data: Vec::new() };
        }
        let mut position = range.offset;
        while position < end {
            let want = usize::try_from(end - position).unwrap_or(usize::MAX).min(chunk_bytes);
            let (file, path) = (file.clone(), path.clone());
            let data = blocking(move || {
                read_full_at(&file, position, want).map_err(|error| {
                    confine::std_io_error(error, format!("reading workspace file {:?}", path.as_str()))
                })
            })
            .await?;
            if data.is_empty() {
                break;
            }
            let read = data.len() as u64;
            yield ReadChunk { offset: position, data };
            position += read;
        }
    })
}

/// Up to `want` bytes at `offset`; fewer only at the end of the file.
fn read_full_at(file: &File, offset: u64, want: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}
