//! The request's path filter: which workspace-relative paths a sync covers.

use crate::error::{Error, Result};

/// Workspace-relative roots (files or directories); empty covers everything.
#[derive(Debug, Clone, Default)]
pub(super) struct PathFilter {
    roots: Vec<String>,
}

impl PathFilter {
    /// Normalizes `paths` (a trailing `/` is dropped) and refuses what could leave the
    /// workspace: absolute paths, `.`/`..` or empty components, NUL.
    pub(super) fn new(paths: &[String]) -> Result<Self> {
        let mut roots = Vec::with_capacity(paths.len());
        for (index, path) in paths.iter().enumerate() {
            let trimmed = path.trim_end_matches('/');
            let bad = trimmed.is_empty()
                || trimmed.starts_with('/')
                || trimmed.contains('\0')
                || trimmed.split('/').any(|part| part.is_empty() || part == "." || part == "..");
            if bad {
                return Err(Error::invalid(
                    format!("paths[{index}]"),
                    "must be a relative path inside the workspace (no leading '/', no '.' or '..')",
                ));
            }
            roots.push(trimmed.to_string());
        }
        // A root under another root adds nothing.
        roots.sort();
        roots.dedup();
        let mut kept: Vec<String> = Vec::with_capacity(roots.len());
        for root in roots {
            if !kept.iter().any(|parent| is_within(&root, parent)) {
                kept.push(root);
            }
        }
        Ok(Self { roots: kept })
    }

    /// Whether the file at `relative` is covered.
    pub(super) fn covers(&self, relative: &str) -> bool {
        self.roots.is_empty() || self.roots.iter().any(|root| is_within(relative, root))
    }

    /// Whether anything under the directory `relative` may be covered (so a scan descends).
    pub(super) fn may_cover_under(&self, relative: &str) -> bool {
        self.roots.is_empty()
            || self.roots.iter().any(|root| is_within(relative, root) || is_within(root, relative))
    }
}

/// `path` is `root` or below it.
fn is_within(path: &str, root: &str) -> bool {
    path.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(paths: &[&str]) -> PathFilter {
        let owned: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        PathFilter::new(&owned).expect("valid paths")
    }

    #[test]
    fn covers_roots_and_what_is_below_them_only() {
        let f = filter(&["src/", "README.md"]);
        assert!(f.covers("src/main.rs"));
        assert!(f.covers("README.md"));
        assert!(!f.covers("srcx/main.rs"));
        assert!(!f.covers("README.md.bak"));
        assert!(f.may_cover_under("src"));
        assert!(!f.may_cover_under("docs"));
        assert!(filter(&[]).covers("anything/at/all"));
        assert!(filter(&["a/b/c"]).may_cover_under("a/b"));
    }

    #[test]
    fn refuses_paths_that_leave_the_workspace() {
        for bad in ["/etc", "../x", "a/../b", "a//b", ".", "", "a\0b"] {
            assert!(PathFilter::new(&[bad.to_string()]).is_err(), "{bad:?} accepted");
        }
    }
}
