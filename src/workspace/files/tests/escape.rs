//! Every way out of the workspace is refused — for read, list and write — and each test first
//! shows that its way out is real: the target exists and is reachable without confinement.

use std::fs;

use super::*;
use crate::workspace::files::ListQuery;

#[test]
fn lexical_escapes_are_refused_naming_the_field() {
    assert!(fs::read("/etc/passwd").is_ok(), "the target of the escape exists");
    for raw in ["../x", "/etc/passwd", "a/../../x", "..", "a/./b", "a//b", "nul\0byte"] {
        assert_invalid(RelPath::parse("path", raw), "path", "");
        assert_invalid(RelPath::parse_file("header.path", raw), "header.path", "");
        assert_invalid(ListQuery::parse(raw, true, 0, ""), "path", "");
    }
}

#[tokio::test]
async fn a_symlink_to_etc_is_refused_for_read_list_and_write() {
    let fixture = Fixture::new();
    fixture.symlink("link", "/etc");
    assert!(
        fs::read(fixture.root.join("link/passwd")).is_ok(),
        "unconfined, link/passwd is readable"
    );
    let workspace = fixture.workspace().await;

    assert_invalid(read(&workspace, "link/passwd", ReadRange::default()).await, "path", "outside");
    assert_invalid(read(&workspace, "link", ReadRange::default()).await, "path", "outside");
    for listed in ["link", "link/passwd"] {
        let query = ListQuery::parse(listed, false, 0, "").unwrap();
        assert_invalid(workspace.list(query).await, "path", "outside");
    }

    let name = format!("sandboxd-escape-{:016x}", rand::random::<u64>());
    let nested = format!("link/{name}/file");
    for raw in [format!("link/{name}"), nested] {
        let target = RelPath::parse_file("header.path", &raw).unwrap();
        assert_invalid(workspace.write(&target).await.map(|_| ()), "header.path", "outside");
    }
    let created = fs::exists(format!("/etc/{name}")).unwrap();
    if created {
        let _ = fs::remove_dir_all(format!("/etc/{name}"));
        let _ = fs::remove_file(format!("/etc/{name}"));
    }
    assert!(!created, "the write created something in /etc");
}

#[tokio::test]
async fn a_symlink_to_a_sibling_directory_is_refused() {
    let fixture = Fixture::new();
    fixture.symlink("sib", "../outside");
    fixture.symlink("deep/er/sib", "../../../outside");
    assert_eq!(fs::read(fixture.root.join("sib/secret")).unwrap(), SECRET);
    assert_eq!(fs::read(fixture.root.join("deep/er/sib/secret")).unwrap(), SECRET);
    let workspace = fixture.workspace().await;

    for raw in ["sib/secret", "deep/er/sib/secret"] {
        assert_invalid(read(&workspace, raw, ReadRange::default()).await, "path", "outside");
        let query = ListQuery::parse(raw.trim_end_matches("/secret"), true, 0, "").unwrap();
        assert_invalid(workspace.list(query).await, "path", "outside");
        let writing = RelPath::parse_file("header.path", &format!("{raw}-new/x")).unwrap();
        assert_invalid(workspace.write(&writing).await.map(|_| ()), "header.path", "outside");
        let writing = RelPath::parse_file("header.path", raw).unwrap();
        assert_invalid(workspace.write(&writing).await.map(|_| ()), "header.path", "outside");
    }
    assert_eq!(fs::read(fixture.outside.join("secret")).unwrap(), SECRET);
    assert_eq!(fixture_outside_names(&fixture), ["secret"]);
}

fn fixture_outside_names(fixture: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&fixture.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_symlink_chain_that_ends_outside_is_refused() {
    let fixture = Fixture::new();
    fixture.dir("real");
    fixture.symlink("c1", "c2");
    fixture.symlink("c2", "real/c3");
    fixture.symlink("real/c3", "../../outside");
    assert_eq!(fs::read(fixture.root.join("c1/secret")).unwrap(), SECRET);
    let workspace = fixture.workspace().await;
    assert_invalid(read(&workspace, "c1/secret", ReadRange::default()).await, "path", "outside");
    assert_invalid(
        workspace.list(ListQuery::parse("c1", false, 0, "").unwrap()).await,
        "path",
        "outside",
    );
    let writing = RelPath::parse_file("path", "c1/new").unwrap();
    assert_invalid(workspace.write(&writing).await.map(|_| ()), "path", "outside");
    assert_eq!(fixture_outside_names(&fixture), ["secret"]);
}

#[tokio::test]
async fn an_absolute_symlink_is_refused_even_into_the_workspace() {
    let fixture = Fixture::new();
    fixture.file("real/file", b"inside");
    fixture.symlink("abs", fixture.root.join("real"));
    assert_eq!(fs::read(fixture.root.join("abs/file")).unwrap(), b"inside");
    let workspace = fixture.workspace().await;
    assert_invalid(read(&workspace, "abs/file", ReadRange::default()).await, "path", "outside");
}

#[tokio::test]
async fn symlinks_that_stay_inside_are_followed() {
    let fixture = Fixture::new();
    fixture.file("src/docs/readme", b"hello");
    fixture.symlink("docs", "src/docs");
    fixture.symlink("chain", "docs");
    fixture.symlink("src/up", "../src/docs/readme");
    let workspace = fixture.workspace().await;

    let (_, chunks) = read(&workspace, "chain/readme", ReadRange::default()).await.unwrap();
    assert_eq!(concat(&chunks), b"hello");
    let (_, chunks) = read(&workspace, "src/up", ReadRange::default()).await.unwrap();
    assert_eq!(concat(&chunks), b"hello");

    let page = workspace.list(ListQuery::parse("docs", false, 0, "").unwrap()).await.unwrap();
    let paths: Vec<&str> = page.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["docs/readme"]);

    let mut writer = workspace.write(&path("docs/new/file")).await.unwrap();
    writer.write_chunk(b"via link".to_vec()).await.unwrap();
    writer.finish().await.unwrap();
    assert_eq!(fs::read(fixture.root.join("src/docs/new/file")).unwrap(), b"via link");
}

#[tokio::test]
async fn writing_onto_a_symlink_replaces_the_link_not_its_target() {
    let fixture = Fixture::new();
    fixture.symlink("out", "../outside/secret");
    assert_eq!(fs::read(fixture.root.join("out")).unwrap(), SECRET);
    let workspace = fixture.workspace().await;
    // The final name is only replaced, never resolved: nothing outside is touched.
    let mut writer = workspace.write(&path("out")).await.unwrap();
    writer.write_chunk(b"replaced".to_vec()).await.unwrap();
    writer.finish().await.unwrap();
    assert!(!fs::symlink_metadata(fixture.root.join("out")).unwrap().is_symlink());
    assert_eq!(fs::read(fixture.root.join("out")).unwrap(), b"replaced");
    assert_eq!(fs::read(fixture.outside.join("secret")).unwrap(), SECRET);
}

#[tokio::test]
async fn a_recursive_listing_reports_symlinks_without_following_them() {
    let fixture = Fixture::new();
    fixture.file("a/file", b"x");
    fixture.symlink("a/etc", "/etc");
    fixture.symlink("a/sib", "../../outside");
    fixture.symlink("a/self", "..");
    assert!(fs::read_dir(fixture.root.join("a/sib")).is_ok());
    let workspace = fixture.workspace().await;
    let page = workspace.list(ListQuery::parse("", true, 0, "").unwrap()).await.unwrap();
    let listed: Vec<(&str, FileKindName)> =
        page.files.iter().map(|f| (f.path.as_str(), kind_name(f))).collect();
    assert_eq!(
        listed,
        [
            ("a", "dir"),
            ("a/etc", "symlink"),
            ("a/file", "file"),
            ("a/self", "symlink"),
            ("a/sib", "symlink"),
        ]
    );
    assert_eq!(page.files[1].size, "/etc".len() as u64);
}

type FileKindName = &'static str;

fn kind_name(entry: &crate::workspace::files::FileEntry) -> FileKindName {
    use crate::workspace::files::FileKind;
    match entry.kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    }
}

#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let fixture = Fixture::new();
    let fifo = fixture.root.join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let workspace = fixture.workspace().await;
    let reading = read(&workspace, "pipe", ReadRange::default());
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), reading).await;
    assert_invalid(result.expect("reading a FIFO must not block"), "path", "not a regular file");
}
