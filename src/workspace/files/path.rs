//! Lexical validation of a caller's workspace path, before anything touches the filesystem.
//!
//! One spelling per file: `/`-separated components, no leading or trailing `/`, no empty, `.` or
//! `..` components, no NUL byte, at most [`MAX_PATH_BYTES`] bytes and [`MAX_COMPONENT_BYTES`] per
//! component. Symlinks cannot be judged here; [`super::confine`] refuses those that escape.

use std::fmt;

use crate::error::{Error, Result};

/// Longest accepted path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// A validated path relative to the workspace root; empty means the root itself. It remembers
/// the request field it came from, so that errors found later (a symlink leading out) name it.
#[derive(Debug, Clone)]
pub struct RelPath {
    path: String,
    field: &'static str,
}

impl PartialEq for RelPath {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for RelPath {}

impl RelPath {
    /// The workspace root, as named by `field`.
    pub fn root(field: &'static str) -> Self {
        Self { path: String::new(), field }
    }

    /// Parses the path of a file (the root is refused). `field` names the request field in the
    /// INVALID_ARGUMENT violation, e.g. `path` or `header.path`.
    pub fn parse_file(field: &'static str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        Self::parse(field, raw)
    }

    /// Parses a path that may name the root (empty).
    pub fn parse(field: &'static str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Ok(Self::root(field));
        }
        let invalid = |description: &str| Err(Error::invalid(field, description));
        if raw.contains('\0') {
            return invalid("must not contain a NUL byte");
        }
        if raw.len() > MAX_PATH_BYTES {
            return invalid(&format!("must be at most {MAX_PATH_BYTES} bytes long"));
        }
        if raw.starts_with('/') {
            return invalid("must be relative to the workspace root, not absolute");
        }
        for component in raw.split('/') {
            match component {
                "" => return invalid("must not contain empty components (`//` or a trailing `/`)"),
                "." => return invalid("must not contain `.` components"),
                ".." => return invalid("must not contain `..` components"),
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return invalid(&format!(
                        "must not have components longer than {MAX_COMPONENT_BYTES} bytes"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self { path: raw.to_owned(), field })
    }

    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The request field this path came from.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The path handed to `openat2` relative to the root fd (`.` for the root).
    pub(super) fn as_open_path(&self) -> &str {
        if self.is_root() { "." } else { &self.path }
    }

    /// The parent (root for a top-level entry) and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &str)> {
        if self.is_root() {
            return None;
        }
        let field = self.field;
        Some(match self.path.rsplit_once('/') {
            Some((parent, name)) => (RelPath { path: parent.to_owned(), field }, name),
            None => (RelPath::root(field), self.path.as_str()),
        })
    }

    /// The components, outermost first (none for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|c| !c.is_empty())
    }

    /// `self/name`, for a `name` read from a directory (no `/`, not `.` or `..`).
    pub(super) fn join(&self, name: &str) -> RelPath {
        let path = if self.is_root() { name.to_owned() } else { format!("{}/{name}", self.path) };
        RelPath { path, field: self.field }
    }

    /// True when `other` is `self` or lies below it.
    pub fn contains(&self, other: &RelPath) -> bool {
        let (outer, inner) = (&self.path, &other.path);
        self.is_root()
            || inner == outer
            || (inner.starts_with(outer.as_str())
                && inner.as_bytes().get(outer.len()) == Some(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> bool {
        matches!(RelPath::parse("path", raw), Err(Error::InvalidArgument(v)) if v[0].field == "path")
    }

    #[test]
    fn canonical_relative_paths_are_accepted() {
        for raw in ["a", "a/b/c", ".hidden", "a/..b", "a/b..", "...", "with space/é", "a\\b"] {
            assert_eq!(RelPath::parse("path", raw).unwrap().as_str(), raw);
        }
        assert!(RelPath::parse("path", "").unwrap().is_root());
    }

    #[test]
    fn escapes_and_odd_spellings_are_refused() {
        for raw in [
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "/",
            "a\0b",
        ] {
            assert!(refused(raw), "{raw:?} should be refused");
        }
        assert!(refused(&"a/".repeat(2049)));
        assert!(refused(&"x".repeat(256)));
        assert!(!refused(&"x".repeat(255)));
    }

    #[test]
    fn file_paths_require_a_name_and_name_the_field() {
        let err = RelPath::parse_file("header.path", "").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(v) if v[0].field == "header.path"));
    }

    #[test]
    fn split_join_and_contains() {
        let path = RelPath::parse("path", "a/b/c").unwrap();
        let (parent, name) = path.split_last().unwrap();
        assert_eq!((parent.as_str(), name), ("a/b", "c"));
        assert_eq!(parent.join(name), path);
        assert!(RelPath::parse("p", "x").unwrap().split_last().unwrap().0.is_root());
        assert!(parent.contains(&path));
        assert!(!RelPath::parse("p", "a/bb").unwrap().contains(&path));
        assert!(RelPath::root("path").contains(&path));
    }
}
