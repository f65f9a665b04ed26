//! `git status --porcelain=v2 --branch -z`, parsed.

/// How a file differs on one side (index or work tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unmodified,
    Modified,
    Added,
    Deleted,
    Renamed,
    Copied,
    Untracked,
    Conflicted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub staged: Change,
    pub unstaged: Change,
    /// For renames and copies, where it came from.
    pub original_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `None` when HEAD is detached.
    pub branch: Option<String>,
    pub ahead: i32,
    pub behind: i32,
    /// Ordered by path.
    pub files: Vec<FileChange>,
}

fn change(code: char) -> Change {
    match code {
        'M' | 'T' => Change::Modified,
        'A' => Change::Added,
        'D' => Change::Deleted,
        'R' => Change::Renamed,
        'C' => Change::Copied,
        'U' => Change::Conflicted,
        _ => Change::Unmodified,
    }
}

/// Parses the `-z` form: NUL-terminated records; a rename's original path is the record after.
/// Records it does not know are skipped (newer git may add some).
pub fn parse(output: &str) -> Status {
    let mut status = Status::default();
    let mut records = output.split('\0').filter(|record| !record.is_empty());
    while let Some(record) = records.next() {
        if let Some(header) = record.strip_prefix("# ") {
            parse_header(header, &mut status);
            continue;
        }
        let mut kind_and_rest = record.splitn(2, ' ');
        let (Some(kind), Some(rest)) = (kind_and_rest.next(), kind_and_rest.next()) else {
            continue;
        };
        // Fields before the path: `1` has 7, `2` has 8 (then the original path as the next
        // record), `u` has 9.
        let skip = match kind {
            "1" => 7,
            "2" => 8,
            "u" => 9,
            "?" => {
                status.files.push(FileChange {
                    path: rest.to_string(),
                    staged: Change::Unmodified,
                    unstaged: Change::Untracked,
                    original_path: None,
                });
                continue;
            }
            _ => continue,
        };
        let mut fields = rest.splitn(skip + 1, ' ');
        let xy = fields.next().unwrap_or("..");
        let Some(path) = fields.nth(skip - 1) else { continue };
        let mut codes = xy.chars();
        let (x, y) = (codes.next().unwrap_or('.'), codes.next().unwrap_or('.'));
        let (staged, unstaged) = if kind == "u" {
            (Change::Conflicted, Change::Conflicted)
        } else {
            (change(x), change(y))
        };
        let original_path = if kind == "2" { records.next().map(str::to_string) } else { None };
        status.files.push(FileChange { path: path.to_string(), staged, unstaged, original_path });
    }
    status.files.sort_by(|a, b| a.path.cmp(&b.path));
    status
}

fn parse_header(header: &str, status: &mut Status) {
    if let Some(head) = header.strip_prefix("branch.head ") {
        status.branch = (head != "(detached)").then(|| head.to_string());
    } else if let Some(ab) = header.strip_prefix("branch.ab ") {
        let mut parts = ab.split(' ');
        let number = |part: Option<&str>| {
            part.and_then(|p| p.trim_start_matches(['+', '-']).parse().ok()).unwrap_or(0)
        };
        status.ahead = number(parts.next());
        status.behind = number(parts.next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_branch_changes_renames_conflicts_and_untracked_files() {
        let output = [
            "# branch.oid 1234",
            "# branch.head main",
            "# branch.upstream origin/main",
            "# branch.ab +2 -1",
            "1 .M N... 100644 100644 100644 aaa bbb src/lib.rs",
            "1 A. N... 000000 100644 100644 000 ccc with space.txt",
            "2 R. N... 100644 100644 100644 ddd ddd R100 new.rs",
            "old.rs",
            "u UU N... 100644 100644 100644 100644 e f g conflict.txt",
            "? notes.md",
            "",
        ]
        .join("\0");
        let status = parse(&output);
        assert_eq!(status.branch.as_deref(), Some("main"));
        assert_eq!((status.ahead, status.behind), (2, 1));
        let summary: Vec<_> = status
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.staged, f.unstaged, f.original_path.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("conflict.txt", Change::Conflicted, Change::Conflicted, None),
                ("new.rs", Change::Renamed, Change::Unmodified, Some("old.rs")),
                ("notes.md", Change::Unmodified, Change::Untracked, None),
                ("src/lib.rs", Change::Unmodified, Change::Modified, None),
                ("with space.txt", Change::Added, Change::Unmodified, None),
            ]
        );
    }

    #[test]
    fn a_detached_head_has_no_branch() {
        assert_eq!(parse("# branch.oid 1\0# branch.head (detached)\0").branch, None);
    }
}
