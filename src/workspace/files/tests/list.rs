use std::{fs, os::unix::fs::PermissionsExt};

use super::*;
use crate::workspace::files::{FileKind, ListPage, ListQuery};

/// Names chosen so that byte order of full paths differs from a naive depth-first walk:
/// `a-b` < `a/…` < `a0` because `-` < `/` < `0`.
const TREE: &[&str] = &["a/b", "a/c/d", "a/c/e", "a-b", "a0", "b.txt", "z/y/x/w"];

fn tree() -> Fixture {
    let fixture = Fixture::new();
    for file in TREE {
        fixture.file(file, file.as_bytes());
    }
    fixture.dir("empty");
    fixture
}

async fn all_pages(workspace: &Workspace, path: &str, recursive: bool, size: i32) -> Vec<String> {
    let mut token = String::new();
    let mut paths = Vec::new();
    let mut pages = 0;
    loop {
        let query = ListQuery::parse(path, recursive, size, &token).unwrap();
        let ListPage { files, next_page_token } = workspace.list(query).await.unwrap();
        assert!(files.len() <= size as usize);
        pages += 1;
        assert!(pages < 100, "paging does not end");
        paths.extend(files.into_iter().map(|f| f.path));
        if next_page_token.is_empty() {
            return paths;
        }
        token = next_page_token;
    }
}

#[tokio::test]
async fn recursive_listing_is_in_byte_order_across_pages() {
    let fixture = tree();
    let workspace = fixture.workspace().await;
    let expected = [
        "a", "a-b", "a/b", "a/c", "a/c/d", "a/c/e", "a0", "b.txt", "empty", "z", "z/y", "z/y/x",
        "z/y/x/w",
    ];
    let mut sorted = expected.to_vec();
    sorted.sort();
    assert_eq!(sorted, expected, "the expectation itself is in byte order");
    for size in [1, 2, 3, 5, 13, 50] {
        assert_eq!(all_pages(&workspace, "", true, size).await, expected, "page size {size}");
    }
    assert_eq!(all_pages(&workspace, "a", true, 2).await, ["a/b", "a/c", "a/c/d", "a/c/e"]);
}

#[tokio::test]
async fn direct_children_and_a_single_file() {
    let fixture = tree();
    let workspace = fixture.workspace().await;
    assert_eq!(
        all_pages(&workspace, "", false, 2).await,
        ["a", "a-b", "a0", "b.txt", "empty", "z"]
    );
    assert_eq!(all_pages(&workspace, "empty", true, 2).await, Vec::<String>::new());
    assert_eq!(all_pages(&workspace, "a/c/d", false, 2).await, ["a/c/d"]);

    fs::set_permissions(fixture.root.join("a/c/d"), fs::Permissions::from_mode(0o640)).unwrap();
    let page = workspace.list(ListQuery::parse("a/c", false, 0, "").unwrap()).await.unwrap();
    let d = &page.files[0];
    assert_eq!((d.path.as_str(), d.kind, d.size, d.mode), ("a/c/d", FileKind::File, 5, 0o640));
    let modified = fs::metadata(fixture.root.join("a/c/d")).unwrap().modified().unwrap();
    assert_eq!(d.modify_time, modified);
    let page = workspace.list(ListQuery::parse("", false, 1, "").unwrap()).await.unwrap();
    assert!(page.files[0].is_dir() && page.files[0].size == 0);
}

#[tokio::test]
async fn a_missing_path_is_not_found() {
    let fixture = tree();
    let workspace = fixture.workspace().await;
    for missing in ["nope", "a/nope", "b.txt/under-a-file"] {
        assert_not_found(workspace.list(ListQuery::parse(missing, true, 0, "").unwrap()).await);
    }
}

#[tokio::test]
async fn page_sizes_and_tokens_are_validated() {
    let fixture = tree();
    let workspace = fixture.workspace().await;
    assert_invalid(ListQuery::parse("", true, -1, ""), "page_size", "negative");
    assert_eq!(ListQuery::parse("", true, 0, "").unwrap().page_size, 50);
    assert_eq!(ListQuery::parse("", true, 5000, "").unwrap().page_size, 1000);

    let first = workspace.list(ListQuery::parse("", true, 2, "").unwrap()).await.unwrap();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    assert!(ListQuery::parse("", true, 7, &token).is_ok(), "page size may change between pages");
    assert_invalid(ListQuery::parse("", false, 2, &token), "page_token", "different");
    assert_invalid(ListQuery::parse("a", true, 2, &token), "page_token", "different");
    for garbage in ["!!!", "bm90IGpzb24", "e30"] {
        assert_invalid(ListQuery::parse("", true, 2, garbage), "page_token", "page token");
    }
    // Well-formed envelopes whose position is not a path below the listed one.
    let filters = ("a", true);
    for position in ["../x", "/etc", "b.txt", "a-b"] {
        let forged = crate::sandbox::page_token::encode(position, &filters);
        assert_invalid(ListQuery::parse("a", true, 2, &forged), "page_token", "page token");
    }
}

#[tokio::test]
async fn names_that_are_not_utf8_are_skipped() {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt};
    let fixture = tree();
    fs::write(fixture.root.join(OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
    let workspace = fixture.workspace().await;
    assert_eq!(
        all_pages(&workspace, "", false, 50).await,
        ["a", "a-b", "a0", "b.txt", "empty", "z"]
    );
}
