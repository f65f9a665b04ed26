//! ListFiles, ReadFile and WriteFile over gRPC on a real `process` sandbox: round trips in
//! chunks, ownership the sandbox's commands can use, and confinement against symlinks planted
//! by the sandbox itself.

mod common;

use common::{TestApp, error_reason, violated_fields};
use sandboxd::proto::{
    CreateSandboxRequest, ExecRequest, ListFilesRequest, ReadFileRequest, WriteFileHeader,
    WriteFileRequest, exec_response::Output, write_file_request::Content,
};
use tokio_stream::StreamExt;
use tonic::Code;

async fn create(app: &TestApp, template: &str) -> String {
    let request = CreateSandboxRequest { template: template.into(), ..Default::default() };
    app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id
}

async fn sh(app: &TestApp, id: &str, script: &str) -> (i32, String) {
    let request = ExecRequest {
        sandbox_id: id.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let mut stream = app.owner().exec(request).await.unwrap().into_inner();
    let (mut out, mut code) = (Vec::new(), None);
    while let Some(message) = stream.next().await {
        match message.unwrap().output.unwrap() {
            Output::StdoutChunk(chunk) | Output::StderrChunk(chunk) => out.extend(chunk),
            Output::Exit(exit) => code = Some(exit.exit_code),
        }
    }
    (code.unwrap(), String::from_utf8_lossy(&out).into_owned())
}

fn write_messages(id: &str, path: &str, content: &[u8]) -> Vec<WriteFileRequest> {
    let header = WriteFileHeader { sandbox_id: id.into(), path: path.into() };
    let mut messages = vec![WriteFileRequest { content: Some(Content::Header(header)) }];
    for chunk in content.chunks(256 * 1024) {
        messages.push(WriteFileRequest { content: Some(Content::Chunk(chunk.to_vec())) });
    }
    messages
}

async fn write(app: &TestApp, id: &str, path: &str, content: &[u8]) -> Result<i64, tonic::Status> {
    let messages = write_messages(id, path, content);
    let response = app.sync(Some(&app.owner_key)).write_file(tokio_stream::iter(messages)).await?;
    Ok(response.into_inner().bytes_written)
}

async fn read(app: &TestApp, id: &str, path: &str) -> Result<Vec<u8>, tonic::Status> {
    let request =
        ReadFileRequest { sandbox_id: id.into(), path: path.into(), ..Default::default() };
    let mut stream = app.sync(Some(&app.owner_key)).read_file(request).await?.into_inner();
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().await {
        content.extend(chunk?.chunk);
    }
    Ok(content)
}

fn list_request(id: &str, path: &str) -> ListFilesRequest {
    ListFilesRequest {
        sandbox_id: id.into(),
        path: path.into(),
        recursive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn files_round_trip_in_chunks_and_belong_to_the_sandbox() {
    let app = TestApp::spawn().await;
    let id = create(&app, "git-agent").await;
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(write(&app, &id, "data/big.bin", &content).await.unwrap(), 3_000_000);
    assert_eq!(read(&app, &id, "data/big.bin").await.unwrap(), content);
    let listed = app
        .sync(Some(&app.owner_key))
        .list_files(list_request(&id, ""))
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<(&str, i64, bool, u32)> =
        listed.files.iter().map(|f| (f.path.as_str(), f.size, f.is_dir, f.mode)).collect();
    assert_eq!(paths, [("data", 0, true, 0o755), ("data/big.bin", 3_000_000, false, 0o644)]);
    // The sandbox's own commands see the file and may change it.
    let (code, out) =
        sh(&app, &id, "wc -c < data/big.bin && echo more >> data/big.bin && echo ok").await;
    assert_eq!((code, out.as_str()), (0, "3000000\nok\n"));
    let status = read(&app, &id, "missing.txt").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn paths_that_leave_the_workspace_are_refused_even_through_planted_symlinks() {
    let app = TestApp::spawn().await;
    let id = create(&app, "git-agent").await;
    let other = create(&app, "git-agent").await;
    assert_eq!(write(&app, &other, "secret.txt", b"other's secret").await.unwrap(), 14);
    let other_root = app.config.runtime.workspace_root.join(&other);
    // Symlinks made by the sandbox's own command: to the host's /etc, and to a sibling
    // workspace by its host path.
    let (code, out) = sh(
        &app,
        &id,
        &format!(
            "ln -s /etc escape && ln -s {} sibling && ln -s ../.. up && echo planted",
            other_root.display()
        ),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "planted\n"));
    assert!(std::fs::read("/etc/hostname").is_ok() || std::fs::read("/etc/passwd").is_ok());
    for path in ["escape/passwd", "sibling/secret.txt", "up/etc/passwd", "../x", "/etc/passwd"] {
        let status = read(&app, &id, path).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(violated_fields(&status), ["path"], "{path}");
    }
    let status = write(&app, &id, "escape/sandboxd-was-here", b"x").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["header.path"]);
    assert!(!std::path::Path::new("/etc/sandboxd-was-here").exists());
    let status =
        app.sync(Some(&app.owner_key)).list_files(list_request(&id, "escape")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let data_only = create(&app, "discord-guild").await;
    let status = read(&app, &data_only, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "NO_RUNTIME");
}

#[tokio::test]
async fn a_write_the_client_abandons_mid_stream_leaves_the_file_as_it_was() {
    let captured = common::log_capture::CapturedLogs::install();
    let app = TestApp::spawn().await;
    let id = create(&app, "git-agent").await;
    write(&app, &id, "keep.txt", b"original").await.unwrap();
    // A replacement whose stream never ends: the header and a first chunk only.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    for message in write_messages(&id, "keep.txt", b"trunc") {
        sender.send(message).await.unwrap();
    }
    let logged_before = captured.text().len();
    let mut client = app.sync(Some(&app.owner_key));
    let call = tokio::spawn(async move {
        client.write_file(tokio_stream::wrappers::ReceiverStream::new(receiver)).await
    });
    common::eventually("the server is writing", std::time::Duration::from_secs(10), || async {
        captured.text()[logged_before..].contains("rpc{rpc=/sandboxd.v1.SyncService/WriteFile}")
    })
    .await;
    // The client goes away: its call is dropped (HTTP/2 reset), the stream never ends.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    common::eventually(
        "the server saw the call cancelled",
        std::time::Duration::from_secs(10),
        || common::one_cancelled_call(&app, "WriteFile"),
    )
    .await;
    common::wait_for_handed_off_work(&app).await;
    drop(sender);
    assert_eq!(
        read(&app, &id, "keep.txt").await.unwrap(),
        b"original",
        "not replaced by a truncated upload"
    );
    let listed = app.sync(Some(&app.owner_key)).list_files(list_request(&id, "")).await.unwrap();
    let paths: Vec<String> = listed.into_inner().files.into_iter().map(|f| f.path).collect();
    assert_eq!(paths, ["keep.txt"], "no temporary file is left behind");
}
