use super::*;

const DATA: &[u8] = b"0123456789abcdefghij";

/// Chunks of 4 bytes, so ranges cross chunk boundaries.
async fn small_chunks(fixture: &Fixture) -> Workspace {
    fixture.workspace_with(FileLimits { read_chunk_bytes: 4, ..FileLimits::default() }).await
}

#[tokio::test]
async fn offsets_and_limits_across_chunk_boundaries() {
    let fixture = Fixture::new();
    fixture.file("f", DATA);
    let workspace = small_chunks(&fixture).await;
    let cases: &[(i64, i64, &[u8])] = &[
        (0, 0, DATA),
        (0, 4, b"0123"),
        (3, 0, b"3456789abcdefghij"),
        (3, 6, b"345678"),
        (7, 9, b"789abcdef"),
        (18, 100, b"ij"),
        (19, 1, b"j"),
    ];
    for &(offset, limit, expected) in cases {
        let (size, chunks) =
            read(&workspace, "f", ReadRange::parse(offset, limit).unwrap()).await.unwrap();
        assert_eq!(size, DATA.len() as u64);
        assert_eq!(concat(&chunks), expected, "offset {offset} limit {limit}");
        let mut next = offset as u64;
        for chunk in &chunks {
            assert_eq!(chunk.offset, next, "chunks are contiguous, in order");
            assert!(!chunk.data.is_empty() && chunk.data.len() <= 4);
            next += chunk.data.len() as u64;
        }
    }
    for offset in [20, 21, 1000] {
        let (_, chunks) =
            read(&workspace, "f", ReadRange::parse(offset, 0).unwrap()).await.unwrap();
        assert!(chunks.is_empty(), "offset {offset} at or past the end yields no chunk");
    }
}

#[tokio::test]
async fn an_empty_file_yields_one_empty_chunk() {
    let fixture = Fixture::new();
    fixture.file("empty", b"");
    let workspace = small_chunks(&fixture).await;
    let (size, chunks) = read(&workspace, "empty", ReadRange::default()).await.unwrap();
    assert_eq!(size, 0);
    assert_eq!(chunks, [ReadChunk { offset: 0, data: Vec::new() }]);
    let (_, chunks) = read(&workspace, "empty", ReadRange::parse(1, 0).unwrap()).await.unwrap();
    assert!(chunks.is_empty());
}

#[tokio::test]
async fn a_ten_mib_file_reads_back_in_chunks() {
    let fixture = Fixture::new();
    let content: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    fixture.file("big/file.bin", &content);
    let workspace = fixture.workspace().await;
    let (size, chunks) = read(&workspace, "big/file.bin", ReadRange::default()).await.unwrap();
    assert_eq!(size, content.len() as u64);
    assert_eq!(chunks.len(), 160, "10 MiB in 64 KiB chunks");
    assert!(chunks.iter().all(|c| c.data.len() == 64 * 1024));
    assert!(concat(&chunks) == content, "the chunks equal the original");
}

#[tokio::test]
async fn directories_missing_files_and_bad_ranges_are_refused() {
    let fixture = Fixture::new();
    fixture.file("dir/f", DATA);
    let workspace = fixture.workspace().await;
    assert_invalid(read(&workspace, "dir", ReadRange::default()).await, "path", "directory");
    assert_invalid(
        workspace.read(&RelPath::root("path"), ReadRange::default()).await.map(|_| ()),
        "path",
        "required",
    );
    assert_not_found(read(&workspace, "dir/missing", ReadRange::default()).await);
    assert_not_found(read(&workspace, "dir/f/below-a-file", ReadRange::default()).await);
    assert_invalid(ReadRange::parse(-1, 0), "offset", "negative");
    assert_invalid(ReadRange::parse(0, -1), "limit", "negative");
}

#[tokio::test]
async fn the_stream_is_lazy_and_stops_at_the_size_it_started_with() {
    let fixture = Fixture::new();
    let file = fixture.file("f", DATA);
    let workspace = small_chunks(&fixture).await;
    let read = workspace.read(&path("f"), ReadRange::default()).await.unwrap();
    // Grown after the open: the read ends where the file ended when it started.
    fs::write(&file, [DATA, DATA].concat()).unwrap();
    let chunks: Vec<ReadChunk> = read.chunks.try_collect().await.unwrap();
    assert_eq!(read.file_size, DATA.len() as u64);
    assert_eq!(concat(&chunks), DATA);
}
