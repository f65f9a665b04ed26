//! Workspace sync (push/pull/delete_prefix) against real S3 servers: every case runs on the
//! in-process s3s-fs server and on a moto server (`tests/common/s3_servers.rs`), both counted
//! and fault-injected at the server side by a request tap (moto through a proxy in front of
//! it). Needs `moto_server` (PyPI `moto[server]`, installed by scripts/test); no PostgreSQL or
//! Redis.

mod common;

use std::{
    collections::BTreeMap,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
    path::Path,
    time::Duration,
};

use common::s3_servers::{Flavor, TestS3};
use rand::{Rng, RngCore};
use sandboxd::workspace::sync::{
    self, HashCache, SyncReport, SyncRequest, SyncSettings, SyncTarget, load_manifest,
};

/// Runs each named case once per server: `<case>::s3s_fs` and `<case>::moto`.
macro_rules! on_both_servers {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3s_fs() {
                super::$case(&TestS3::start(Flavor::S3sFs).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                super::$case(&TestS3::start(Flavor::Moto).await).await;
            }
        }
    )*};
}

on_both_servers!(
    round_trip_is_byte_for_byte,
    push_sends_only_changes_and_deletes_removed_objects,
    unchanged_push_sends_only_the_manifest_get,
    same_size_and_mtime_rewrite_is_detected_by_hash,
    failure_before_the_manifest_keeps_the_previous_one,
    large_files_go_multipart,
    failed_multipart_upload_is_aborted,
    pull_with_delete_removes_local_files,
    delete_prefix_empties_the_prefix,
);

/// A bucket of the test's own, the target under `sandboxes/<uuid>/`, and its own cache.
struct Fixture<'a> {
    s3: &'a TestS3,
    target: SyncTarget,
    cache: HashCache,
    settings: SyncSettings,
}

impl<'a> Fixture<'a> {
    async fn new(s3: &'a TestS3) -> Fixture<'a> {
        let bucket = s3.new_bucket().await;
        let target = SyncTarget::for_sandbox(s3.client.clone(), bucket, uuid::Uuid::new_v4());
        Fixture { s3, target, cache: HashCache::new(), settings: SyncSettings::default() }
    }

    async fn push(&self, workspace: &Path) -> SyncReport {
        self.try_push(workspace).await.expect("push")
    }

    async fn try_push(&self, workspace: &Path) -> sandboxd::error::Result<SyncReport> {
        sync::push(workspace, &self.target, &SyncRequest::mirror(), &self.settings, &self.cache)
            .await
    }

    /// Pulls into `dir` with a cache of its own (another workspace).
    async fn pull_into(&self, dir: &Path, delete: bool) -> SyncReport {
        let request = SyncRequest { paths: &[], delete };
        sync::pull(dir, &self.target, &request, &self.settings, &HashCache::new())
            .await
            .expect("pull")
    }

    /// Keys under the target's files prefix, relative to it.
    async fn file_keys(&self) -> Vec<String> {
        let prefix = self.target.file_key("");
        let keys = self.s3.keys(&self.target.bucket, &prefix).await;
        keys.into_iter().map(|key| key[prefix.len()..].to_string()).collect()
    }

    /// Leaves the bucket empty.
    async fn clean_up(&self) {
        sync::delete_prefix(&self.target).await.expect("delete_prefix");
        self.s3
            .client
            .delete_bucket()
            .bucket(&self.target.bucket)
            .send()
            .await
            .expect("deleting the bucket");
    }
}

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("creating directories");
    std::fs::write(path, content).expect("writing a file");
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Every regular file under `root`: relative path → (content, permission bits).
fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
                files.insert(relative, (std::fs::read(entry.path()).expect("reading"), mode));
            }
        }
    }
    files
}

fn counts(s3: &TestS3) -> BTreeMap<String, u64> {
    s3.tap.counts()
}

fn count(s3: &TestS3, label: &str) -> u64 {
    s3.tap.counts().get(label).copied().unwrap_or(0)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

async fn round_trip_is_byte_for_byte(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "README.md", b"hello\n");
    write(source.path(), "empty", b"");
    write(source.path(), "nested/deep/dir/blob.bin", &random_bytes(300_000));
    write(source.path(), "nested/all-bytes", &(0..=255u8).collect::<Vec<_>>());
    write(source.path(), "run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(source.path().join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    // Skipped and counted: a symlink, a FIFO and a name that is not UTF-8.
    std::os::unix::fs::symlink("/etc/passwd", source.path().join("link")).unwrap();
    let fifo =
        std::process::Command::new("mkfifo").arg(source.path().join("fifo")).status().unwrap();
    assert!(fifo.success());
    let not_utf8 = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    std::fs::write(source.path().join("nested").join(not_utf8), b"skipped").unwrap();

    let pushed = fixture.push(source.path()).await;
    assert_eq!(
        (pushed.files_scanned, pushed.files_transferred, pushed.files_skipped),
        (5, 5, 3),
        "{pushed:?}"
    );
    assert_eq!(pushed.bytes_transferred, 6 + 300_000 + 256 + 18);

    let dest = tempfile::tempdir().unwrap();
    // The pulled files get the owner of the workspace root (checked when running as root).
    let owner = if is_root() { Some((65534, 65533)) } else { None };
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dest.path(), Some(uid), Some(gid)).unwrap();
    }
    let pulled = fixture.pull_into(dest.path(), false).await;
    assert_eq!((pulled.files_transferred, pulled.bytes_transferred), (5, pushed.bytes_transferred));
    let mut expected: BTreeMap<_, _> = tree(source.path());
    expected.retain(|relative, _| !relative.starts_with("nested/latin1-"));
    assert_eq!(tree(dest.path()), expected, "pulled tree differs");
    assert!(!dest.path().join("link").exists(), "the symlink is not synced");
    if let Some((uid, gid)) = owner {
        for relative in ["README.md", "nested", "nested/deep/dir", "nested/deep/dir/blob.bin"] {
            let metadata = std::fs::metadata(dest.path().join(relative)).unwrap();
            assert_eq!((metadata.uid(), metadata.gid()), (uid, gid), "owner of {relative}");
        }
    }
    // Nothing to do the second time.
    let again = fixture.pull_into(dest.path(), false).await;
    assert_eq!(again.files_transferred, 0);
    fixture.clean_up().await;
}

async fn push_sends_only_changes_and_deletes_removed_objects(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c", "d/e"] {
        write(dir.path(), name, name.as_bytes());
    }
    assert_eq!(fixture.push(dir.path()).await.files_transferred, 4);

    write(dir.path(), "a", b"changed");
    write(dir.path(), "d/new", b"new file");
    std::fs::remove_file(dir.path().join("c")).unwrap();
    s3.tap.reset();
    let report = fixture.push(dir.path()).await;
    assert_eq!(
        (report.files_scanned, report.files_transferred, report.files_deleted),
        (4, 2, 1),
        "{report:?}"
    );
    assert_eq!(report.bytes_transferred, 7 + 8);
    // At the server: the manifest GET, two file PUTs, the manifest PUT, one DeleteObjects.
    assert_eq!(
        counts(s3),
        BTreeMap::from([("GET".into(), 1), ("PUT".into(), 3), ("POST ?delete".into(), 1)]),
        "{:?}",
        s3.flavor
    );
    assert_eq!(fixture.file_keys().await, ["a", "b", "d/e", "d/new"]);
    let manifest = load_manifest(&fixture.target).await.unwrap().expect("a manifest");
    assert_eq!(manifest.files.keys().collect::<Vec<_>>(), ["a", "b", "d/e", "d/new"]);
    fixture.clean_up().await;
}

async fn unchanged_push_sends_only_the_manifest_get(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(dir.path(), &format!("dir{}/file{i}", i % 5), &random_bytes(100 + i));
    }
    assert_eq!(fixture.push(dir.path()).await.files_transferred, 50);
    // Files written within the last 100 ms are not cached yet (their next rewrite could keep
    // the same stat); the second push hashes those and finds them unchanged.
    tokio::time::sleep(Duration::from_millis(150)).await;
    fixture.push(dir.path()).await;
    s3.tap.reset();
    let report = fixture.push(dir.path()).await;
    assert_eq!((report.files_scanned, report.files_transferred, report.files_deleted), (50, 0, 0));
    // Counted at the server: one GET (the manifest), no per-file request, no manifest PUT.
    assert_eq!(counts(s3), BTreeMap::from([("GET".into(), 1)]), "{:?}", s3.flavor);
    assert!(fixture.cache.len() >= 50, "every file cached: {}", fixture.cache.len());
    fixture.clean_up().await;
}

async fn same_size_and_mtime_rewrite_is_detected_by_hash(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", b"first version");
    write(dir.path(), "other.txt", b"unchanged");
    let path = dir.path().join("notes.txt");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fixture.push(dir.path()).await.files_transferred, 2);
    let before = std::fs::metadata(&path).unwrap();

    // Same size, mtime set back: only the content (and ctime) differ.
    std::fs::write(&path, b"other version").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (before.len(), before.modified().unwrap())
    );

    let report = fixture.push(dir.path()).await;
    assert_eq!(report.files_transferred, 1, "{report:?}");
    let dest = tempfile::tempdir().unwrap();
    fixture.pull_into(dest.path(), false).await;
    assert_eq!(std::fs::read(dest.path().join("notes.txt")).unwrap(), b"other version");

    // The same with a cold cache (as after a restart): the hash still decides.
    write(dir.path(), "notes.txt", b"third version");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    fixture.cache.clear();
    let report = fixture.push(dir.path()).await;
    assert_eq!(report.files_transferred, 1, "{report:?}");
    fixture.clean_up().await;
}

async fn failure_before_the_manifest_keeps_the_previous_one(s3: &TestS3) {
    let mut fixture = Fixture::new(s3).await;
    fixture.settings.concurrency = 2;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        write(dir.path(), &format!("f{i}"), format!("v1 {i}").as_bytes());
    }
    fixture.push(dir.path()).await;
    let v1 = load_manifest(&fixture.target).await.unwrap().expect("a manifest");
    for i in 0..6 {
        write(dir.path(), &format!("f{i}"), format!("version 2 of {i}").as_bytes());
    }
    write(dir.path(), "added", b"new");

    // 1. The manifest PUT is refused after every upload went through.
    let manifest_path = format!("/{}/{}", fixture.target.bucket, fixture.target.manifest_key());
    s3.tap.reset();
    s3.tap
        .refuse_when(move |method, uri| method == http::Method::PUT && uri.path() == manifest_path);
    let error = fixture.try_push(dir.path()).await.expect_err("the manifest PUT fails");
    assert!(matches!(error, sandboxd::error::Error::Unavailable { .. }), "{error:?}");
    assert!(s3.tap.refused() >= 1);
    assert_eq!(
        count(s3, "PUT"),
        7 + s3.tap.refused(),
        "7 uploads, then the refused manifest PUT(s)"
    );
    assert_eq!(
        load_manifest(&fixture.target).await.unwrap(),
        Some(v1.clone()),
        "previous manifest intact"
    );

    // 2. One file's PUT is refused while the others go through.
    let f3_path = format!("/{}/{}", fixture.target.bucket, fixture.target.file_key("f3"));
    s3.tap.reset();
    s3.tap.refuse_when(move |method, uri| method == http::Method::PUT && uri.path() == f3_path);
    fixture.try_push(dir.path()).await.expect_err("the PUT of f3 fails");
    assert!(s3.tap.refused() >= 1);
    assert!(count(s3, "PUT") > s3.tap.refused(), "other uploads happened: {:?}", counts(s3));
    assert_eq!(load_manifest(&fixture.target).await.unwrap(), Some(v1), "previous manifest intact");

    // 3. With the server healthy again, a push completes everything.
    s3.tap.stop_refusing();
    let report = fixture.push(dir.path()).await;
    assert_eq!(report.files_transferred, 7, "{report:?}");
    let dest = tempfile::tempdir().unwrap();
    fixture.pull_into(dest.path(), false).await;
    assert_eq!(tree(dest.path()), tree(dir.path()));
    fixture.clean_up().await;
}

fn multipart_settings() -> SyncSettings {
    SyncSettings { concurrency: 4, multipart_threshold: 8 << 20, part_size: 5 << 20 }
}

async fn large_files_go_multipart(s3: &TestS3) {
    let mut fixture = Fixture::new(s3).await;
    fixture.settings = multipart_settings();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big/data.bin", &random_bytes(40 << 20));
    write(dir.path(), "small", b"small");
    s3.tap.reset();
    let report = fixture.push(dir.path()).await;
    assert_eq!((report.files_transferred, report.bytes_transferred), (2, (40 << 20) + 5));
    // 40 MiB in 5 MiB parts: one create, 8 parts, one complete.
    let at_server = counts(s3);
    assert_eq!(at_server.get("POST ?uploads"), Some(&1), "{at_server:?}");
    assert_eq!(at_server.get("PUT ?partNumber"), Some(&8), "{at_server:?}");
    assert_eq!(at_server.get("POST ?uploadId"), Some(&1), "{at_server:?}");
    let head = s3
        .client
        .head_object()
        .bucket(&fixture.target.bucket)
        .key(fixture.target.file_key("big/data.bin"))
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap_or_default().trim_matches('"').ends_with("-8"),
        "{:?}",
        head.e_tag()
    );

    let dest = tempfile::tempdir().unwrap();
    fixture.pull_into(dest.path(), false).await;
    assert!(tree(dest.path()) == tree(dir.path()), "the large file round-trips");
    // Cold cache, same size: hashed, not re-uploaded.
    fixture.cache.clear();
    s3.tap.reset();
    assert_eq!(fixture.push(dir.path()).await.files_transferred, 0);
    assert_eq!(counts(s3), BTreeMap::from([("GET".into(), 1)]));
    fixture.clean_up().await;
}

async fn failed_multipart_upload_is_aborted(s3: &TestS3) {
    let mut fixture = Fixture::new(s3).await;
    fixture.settings = multipart_settings();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.bin", &random_bytes(12 << 20));
    s3.tap.reset();
    s3.tap.refuse_when(|method, uri| {
        method == http::Method::PUT && uri.query().is_some_and(|q| q.contains("partNumber=2"))
    });
    fixture.try_push(dir.path()).await.expect_err("part 2 fails");
    let at_server = counts(s3);
    assert!(s3.tap.refused() >= 1, "{at_server:?}");
    assert_eq!(at_server.get("POST ?uploads"), Some(&1), "{at_server:?}");
    assert_eq!(
        at_server.get("DELETE ?uploadId"),
        Some(&1),
        "the upload was aborted: {at_server:?}"
    );
    assert_eq!(at_server.get("POST ?uploadId"), None, "never completed: {at_server:?}");
    assert_eq!(load_manifest(&fixture.target).await.unwrap(), None);
    assert!(fixture.file_keys().await.is_empty());
    s3.tap.stop_refusing();
    assert_eq!(fixture.push(dir.path()).await.files_transferred, 1);
    fixture.clean_up().await;
}

async fn pull_with_delete_removes_local_files(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "keep", b"keep");
    write(source.path(), "src/lib.rs", b"fn main() {}");
    fixture.push(source.path()).await;

    let dest = tempfile::tempdir().unwrap();
    write(dest.path(), "stale", b"old");
    write(dest.path(), "src/stale.rs", b"old");
    write(dest.path(), "src/lib.rs", b"local edit");
    // Within paths only: `src/` is pulled with delete, `stale` at the top stays.
    let paths = vec!["src/".to_string()];
    let request = SyncRequest { paths: &paths, delete: true };
    let report =
        sync::pull(dest.path(), &fixture.target, &request, &fixture.settings, &HashCache::new())
            .await
            .unwrap();
    assert_eq!((report.files_transferred, report.files_deleted), (1, 1), "{report:?}");
    assert!(dest.path().join("stale").exists());
    assert!(!dest.path().join("src/stale.rs").exists());
    assert!(!dest.path().join("keep").exists());

    let report = fixture.pull_into(dest.path(), true).await;
    assert_eq!((report.files_transferred, report.files_deleted), (1, 1), "{report:?}");
    assert_eq!(tree(dest.path()), tree(source.path()));
    // No temporary file is left behind.
    assert!(
        std::fs::read_dir(dest.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".sandboxd"))
    );
    fixture.clean_up().await;
}

async fn delete_prefix_empties_the_prefix(s3: &TestS3) {
    let fixture = Fixture::new(s3).await;
    let dir = tempfile::tempdir().unwrap();
    let files = 1_100;
    let mut rng = rand::rng();
    for i in 0..files {
        write(dir.path(), &format!("d{}/f{i}", i % 7), &random_bytes(rng.random_range(1..64)));
    }
    // Another sandbox in the same bucket is not touched.
    let neighbour = SyncTarget::for_sandbox(
        s3.client.clone(),
        fixture.target.bucket.clone(),
        uuid::Uuid::new_v4(),
    );
    let one = tempfile::tempdir().unwrap();
    write(one.path(), "x", b"x");
    sync::push(
        one.path(),
        &neighbour,
        &SyncRequest::mirror(),
        &fixture.settings,
        &HashCache::new(),
    )
    .await
    .unwrap();
    assert_eq!(fixture.push(dir.path()).await.files_transferred, files);
    assert_eq!(
        s3.keys(&fixture.target.bucket, &fixture.target.prefix).await.len() as u64,
        files + 1
    );

    s3.tap.reset();
    let deleted = sync::delete_prefix(&fixture.target).await.unwrap();
    assert_eq!(deleted, files + 1, "every file and the manifest");
    assert_eq!(count(s3, "POST ?delete"), 2, "1,000 keys per DeleteObjects: {:?}", counts(s3));
    assert!(s3.keys(&fixture.target.bucket, &fixture.target.prefix).await.is_empty());
    assert_eq!(s3.keys(&fixture.target.bucket, &neighbour.prefix).await.len(), 2);
    let empty = SyncTarget { prefix: String::new(), ..neighbour.clone() };
    assert!(sync::delete_prefix(&empty).await.is_err(), "an empty prefix is refused");
    sync::delete_prefix(&neighbour).await.unwrap();
    fixture.clean_up().await;
}
