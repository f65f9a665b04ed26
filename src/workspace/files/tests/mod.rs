//! Tests against real files in a temp dir: `<tmp>/ws` is the workspace root, `<tmp>/outside`
//! a sibling directory standing for everything the workspace must not reach.

mod escape;
mod list;
mod read;
mod write;

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use futures::TryStreamExt;
use tempfile::TempDir;

use super::{FileLimits, ReadChunk, ReadRange, RelPath, Workspace};
use crate::error::{Error, Result};

pub(super) const SECRET: &[u8] = b"top secret\n";

pub(super) struct Fixture {
    _dir: TempDir,
    pub root: PathBuf,
    pub outside: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();
        Self { _dir: dir, root, outside }
    }

    pub async fn workspace(&self) -> Workspace {
        self.workspace_with(FileLimits::default()).await
    }

    pub async fn workspace_with(&self, limits: FileLimits) -> Workspace {
        Workspace::open(&self.root, limits).await.unwrap()
    }

    /// Writes `content` at `rel` below the root, creating parents.
    pub fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    pub fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root.join(rel)).unwrap();
    }

    /// Plants a symlink `rel -> target`, as a process in the sandbox could.
    pub fn symlink(&self, rel: &str, target: impl AsRef<Path>) {
        let link = self.root.join(rel);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(target, link).unwrap();
    }

    /// Every name below the root, sorted, to show nothing stray (temp files) is left.
    pub fn names_below(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

pub(super) fn path(raw: &str) -> RelPath {
    RelPath::parse("path", raw).unwrap()
}

/// Reads `raw` through the workspace: the reported size and every chunk.
pub(super) async fn read(
    workspace: &Workspace,
    raw: &str,
    range: ReadRange,
) -> Result<(u64, Vec<ReadChunk>)> {
    let read = workspace.read(&path(raw), range).await?;
    let chunks = read.chunks.try_collect().await?;
    Ok((read.file_size, chunks))
}

pub(super) fn concat(chunks: &[ReadChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
}

#[track_caller]
pub(super) fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, field: &str, needle: &str) {
    match result {
        Err(Error::InvalidArgument(violations)) => {
            assert_eq!(violations[0].field, field, "{violations:?}");
            assert!(violations[0].description.contains(needle), "{violations:?}");
        }
        other => panic!("expected INVALID_ARGUMENT on {field} ({needle}), got {other:?}"),
    }
}

#[track_caller]
pub(super) fn assert_not_found<T: std::fmt::Debug>(result: Result<T>) {
    assert!(matches!(result, Err(Error::NotFound { .. })), "expected NOT_FOUND, got {result:?}");
}

#[tokio::test]
async fn a_missing_workspace_root_is_a_failed_precondition() {
    let fixture = Fixture::new();
    let result = Workspace::open(fixture.root.join("gone"), FileLimits::default()).await;
    assert!(
        matches!(result, Err(Error::FailedPrecondition { reason: "WORKSPACE_MISSING", .. })),
        "{:?}",
        result.err()
    );
}
