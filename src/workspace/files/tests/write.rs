use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::*;

async fn write(workspace: &Workspace, raw: &str, chunks: &[&[u8]]) -> Result<u64> {
    let mut writer = workspace.write(&RelPath::parse_file("header.path", raw)?).await?;
    for chunk in chunks {
        writer.write_chunk(chunk.to_vec()).await?;
    }
    Ok(writer.finish().await?.bytes_written)
}

#[tokio::test]
async fn a_new_file_and_its_parents_are_created() {
    let fixture = Fixture::new();
    let workspace = fixture.workspace().await;
    assert_eq!(write(&workspace, "a/b/c.txt", &[b"hello ", b"", b"world"]).await.unwrap(), 11);
    assert_eq!(fs::read(fixture.root.join("a/b/c.txt")).unwrap(), b"hello world");
    let mode =
        |rel: &str| fs::metadata(fixture.root.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode("a"), mode("a/b"), mode("a/b/c.txt")), (0o755, 0o755, 0o644));
    assert_eq!(write(&workspace, "empty", &[]).await.unwrap(), 0);
    assert_eq!(fs::read(fixture.root.join("empty")).unwrap(), b"");
    assert_eq!(fixture.names_below("a/b"), ["c.txt"], "no temp file left");
}

#[tokio::test]
async fn a_replaced_file_keeps_its_mode() {
    let fixture = Fixture::new();
    let file = fixture.file("script.sh", b"old");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4750)).unwrap();
    let workspace = fixture.workspace().await;
    write(&workspace, "script.sh", &[b"new"]).await.unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"new");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750, "permission bits kept, setuid dropped");
}

#[tokio::test]
async fn new_files_and_directories_belong_to_the_workspace_owner() {
    let fixture = Fixture::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give files away");
        return;
    }
    std::os::unix::fs::chown(&fixture.root, Some(4242), Some(4343)).unwrap();
    let workspace = fixture.workspace().await;
    write(&workspace, "x/y/file", &[b"owned"]).await.unwrap();
    for rel in ["x", "x/y", "x/y/file"] {
        let meta = fs::metadata(fixture.root.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{rel}");
    }
}

#[tokio::test]
async fn a_dropped_writer_leaves_the_old_file_and_no_temp() {
    let fixture = Fixture::new();
    let file = fixture.file("d/f", b"old content");
    let workspace = fixture.workspace().await;
    let mut writer = workspace.write(&path("d/f")).await.unwrap();
    writer.write_chunk(b"partial new".to_vec()).await.unwrap();
    assert_eq!(fixture.names_below("d").len(), 2, "the temp file exists while writing");
    drop(writer);
    assert_eq!(fs::read(&file).unwrap(), b"old content");
    assert_eq!(fixture.names_below("d"), ["f"]);

    // Cancelled mid-chunk (the future dropped while the blocking write runs).
    let mut writer = workspace.write(&path("d/f")).await.unwrap();
    let big = vec![7u8; 8 * 1024 * 1024];
    let cancelled =
        tokio::time::timeout(std::time::Duration::from_micros(1), writer.write_chunk(big)).await;
    drop(writer);
    // The blocking task finishes on its own; give it a moment to drop its state.
    for _ in 0..200 {
        if fixture.names_below("d") == ["f"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = cancelled;
    assert_eq!(fs::read(&file).unwrap(), b"old content");
    assert_eq!(fixture.names_below("d"), ["f"]);
}

#[tokio::test]
async fn the_size_limit_fails_the_write_and_removes_the_temp() {
    let fixture = Fixture::new();
    let file = fixture.file("f", b"old");
    let limits = FileLimits { max_write_bytes: 10, ..FileLimits::default() };
    let workspace = fixture.workspace_with(limits).await;
    assert_eq!(write(&workspace, "f", &[b"12345", b"67890"]).await.unwrap(), 10, "at the limit");
    let result = write(&workspace, "f", &[b"12345", b"678901"]).await;
    match result {
        Err(Error::QuotaExceeded { message, .. }) => assert!(message.contains("10 bytes")),
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert_eq!(fs::read(&file).unwrap(), b"1234567890");
    assert_eq!(fixture.names_below(""), ["f"]);
}

#[tokio::test]
async fn writing_onto_a_directory_or_below_a_file_is_refused() {
    let fixture = Fixture::new();
    fixture.file("dir/f", b"x");
    let workspace = fixture.workspace().await;
    assert_invalid(write(&workspace, "dir", &[b"x"]).await, "header.path", "directory");
    assert_invalid(write(&workspace, "dir/f/g", &[b"x"]).await, "header.path", "not a directory");
    assert_invalid(
        workspace.write(&RelPath::root("header.path")).await.map(|_| ()),
        "header.path",
        "required",
    );
    assert_eq!(fixture.names_below("dir"), ["f"]);
    // A directory appearing in place of the target while the stream runs.
    let mut writer = workspace.write(&path("later")).await.unwrap();
    fixture.file("later/inner", b"x");
    writer.write_chunk(b"x".to_vec()).await.unwrap();
    assert_invalid(writer.finish().await, "path", "directory");
    assert_eq!(fixture.names_below(""), ["dir", "later"]);
}

#[tokio::test]
async fn readers_never_see_a_partial_file() {
    let fixture = Fixture::new();
    let old = vec![b'o'; 1024 * 1024];
    let new = vec![b'n'; 1024 * 1024];
    let target = fixture.file("f", &old);
    let workspace = fixture.workspace().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, target, old, new) = (stop.clone(), target.clone(), old.clone(), new.clone());
        std::thread::spawn(move || {
            let (mut reads, mut saw_new) = (0, false);
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let content = fs::read(&target).unwrap();
                assert!(content == old || content == new, "partial read: {} bytes", content.len());
                saw_new |= content == new;
                reads += 1;
            }
            (reads, saw_new || fs::read(&target).unwrap() == new)
        })
    };
    let mut writer = workspace.write(&path("f")).await.unwrap();
    for piece in new.chunks(16 * 1024) {
        writer.write_chunk(piece.to_vec()).await.unwrap();
        tokio::task::yield_now().await;
    }
    writer.finish().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (reads, saw_new) = reader.join().unwrap();
    assert!(reads > 1 && saw_new, "the reader ran during the write ({reads} reads)");
}
