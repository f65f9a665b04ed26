//! PushWorkspace, PullWorkspace and GetSyncStatus over gRPC, and the lifecycle's syncs
//! (`init_from_store`, `final_sync`, `keep_objects`), against a real `process` sandbox and the
//! in-process s3s-fs server. The engine's own tests (both S3 servers, faults, multipart) are in
//! `workspace_sync.rs`.

mod common;

use common::{TestApp, error_reason};
use sandboxd::proto::{
    CreateSandboxRequest, DestroySandboxRequest, ExecRequest, GetSyncStatusRequest,
    PullWorkspaceRequest, PushWorkspaceRequest, exec_response::Output,
};
use tokio_stream::StreamExt;
use tonic::Code;

const SCRATCH: &str = r#"
name = "scratch"
runtime = "process"
keep_objects = false
"#;

async fn setup() -> common::WithS3 {
    common::spawn_with_s3("scratch.toml", SCRATCH).await
}

async fn create(app: &TestApp, template: &str, init_from: &str) -> String {
    let request = CreateSandboxRequest {
        template: template.into(),
        init_from_store: init_from.into(),
        ..Default::default()
    };
    app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id
}

async fn sh(app: &TestApp, id: &str, script: &str) -> String {
    let request = ExecRequest {
        sandbox_id: id.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let mut stream = app.owner().exec(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        if let Output::StdoutChunk(chunk) = message.unwrap().output.unwrap() {
            out.extend(chunk);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn push(id: &str, delete: bool) -> PushWorkspaceRequest {
    PushWorkspaceRequest { sandbox_id: id.into(), delete, ..Default::default() }
}

async fn objects_under(setup: &common::WithS3, prefix: &str) -> usize {
    let mut config = sandboxd::config::S3Config::default();
    setup.s3.apply(&mut config);
    let client = sandboxd::objectstore::client(&config).await;
    let bucket = &setup.app.config.s3.bucket;
    let listed = client.list_objects_v2().bucket(bucket).prefix(prefix).send().await.unwrap();
    listed.contents().len()
}

#[tokio::test]
async fn push_pull_and_status_round_trip_a_workspace() {
    let setup = setup().await;
    let app = &setup.app;
    let sync = || app.sync(Some(&app.owner_key));
    let id = create(app, "git-agent", "").await;
    sh(app, &id, "mkdir -p src/deep && echo one > a.txt && head -c 300000 /dev/urandom > src/deep/blob && : > empty").await;
    let before = sh(app, &id, "sha256sum a.txt src/deep/blob empty").await;
    let pushed = sync().push_workspace(push(&id, false)).await.unwrap().into_inner();
    assert_eq!((pushed.files_scanned, pushed.files_transferred), (3, 3), "{pushed:?}");
    assert_eq!(pushed.bytes_transferred, 4 + 300_000);
    let again = sync().push_workspace(push(&id, false)).await.unwrap().into_inner();
    assert_eq!(again.files_transferred, 0, "an unchanged workspace transfers nothing");

    // Lose a file and change another; a pull restores both, byte for byte.
    sh(app, &id, "rm src/deep/blob && echo changed > a.txt && echo local-only > extra").await;
    let pull = PullWorkspaceRequest { sandbox_id: id.clone(), delete: true, ..Default::default() };
    let pulled = sync().pull_workspace(pull.clone()).await.unwrap().into_inner();
    assert_eq!((pulled.files_transferred, pulled.files_deleted), (2, 1), "{pulled:?}");
    assert_eq!(sh(app, &id, "sha256sum a.txt src/deep/blob empty").await, before);
    assert_eq!(sh(app, &id, "test -e extra && echo present || echo gone").await, "gone\n");

    // A pull right after a sync is skipped under max_staleness.
    let fresh = PullWorkspaceRequest {
        max_staleness: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..pull
    };
    let skipped = sync().pull_workspace(fresh).await.unwrap().into_inner();
    assert!(skipped.skipped);
    assert_eq!(skipped.files_transferred, 0);
    assert_eq!(skipped.sync_time, pulled.sync_time, "names the sync that made it unnecessary");

    let status = sync()
        .get_sync_status(GetSyncStatusRequest { sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.last_push.unwrap().sync_time, again.sync_time);
    assert_eq!(status.last_pull.unwrap().files_transferred, 2);

    let bad = PushWorkspaceRequest { paths: vec!["../up".into()], ..push(&id, false) };
    let status = sync().push_workspace(bad).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["paths[0]"]);
}

#[tokio::test]
async fn final_sync_and_init_from_store_carry_a_workspace_into_a_new_sandbox() {
    let setup = setup().await;
    let app = &setup.app;
    let first = create(app, "git-agent", "").await;
    sh(app, &first, "mkdir notes && echo 'remember this' > notes/todo.md").await;
    let destroy =
        DestroySandboxRequest { sandbox_id: first.clone(), final_sync: true, ..Default::default() };
    app.owner().destroy_sandbox(destroy).await.unwrap();
    // git-agent keeps its objects: the prefix survives the destroy.
    assert!(objects_under(&setup, &format!("sandboxes/{first}/")).await >= 2);

    let second = create(app, "git-agent", &first).await;
    assert_eq!(sh(app, &second, "cat notes/todo.md").await, "remember this\n");

    // A scratch template removes its prefix with the sandbox.
    let scratch = create(app, "scratch", "").await;
    sh(app, &scratch, "echo temp > t").await;
    app.sync(Some(&app.owner_key)).push_workspace(push(&scratch, false)).await.unwrap();
    assert_eq!(objects_under(&setup, &format!("sandboxes/{scratch}/")).await, 2);
    app.owner().destroy_sandbox(common::destroy_request(&scratch)).await.unwrap();
    assert_eq!(objects_under(&setup, &format!("sandboxes/{scratch}/")).await, 0);

    // Sources must be the caller's, and data-only templates have nowhere to put files.
    let request = CreateSandboxRequest {
        template: "git-agent".into(),
        init_from_store: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let request = CreateSandboxRequest {
        template: "discord-guild".into(),
        init_from_store: first.clone(),
        ..Default::default()
    };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["init_from_store"]);
}

#[tokio::test]
async fn without_an_object_store_sync_is_refused_and_the_sandbox_lives_on() {
    let app = TestApp::spawn().await;
    let id = create(&app, "git-agent", "").await;
    let status = app.sync(Some(&app.owner_key)).push_workspace(push(&id, false)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "OBJECT_STORE_DISABLED");
    let destroy =
        DestroySandboxRequest { sandbox_id: id.clone(), final_sync: true, ..Default::default() };
    let status = app.owner().destroy_sandbox(destroy).await.unwrap_err();
    assert_eq!(error_reason(&status), "OBJECT_STORE_DISABLED");
    let sandbox = app.owner().get_sandbox(common::by_id(&id)).await.unwrap().into_inner();
    assert_eq!(sandbox.state(), sandboxd::proto::SandboxState::Running);
}

#[tokio::test]
async fn sandboxctl_files_and_sync_commands_work_against_the_server() {
    let setup = setup().await;
    let app = &setup.app;
    let id = create(app, "git-agent", "").await;
    let ctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"));
        command
            .args(["--addr", &format!("http://{}", app.addr)])
            .args(args)
            .env("SANDBOXD_API_KEY", &app.owner_key);
        command
    };
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), "put by sandboxctl\n").unwrap();
    let local_path = local.path().to_str().unwrap();
    // Async: the server runs on this test's runtime, so the client must not block it.
    async fn ok(mut command: tokio::process::Command) -> String {
        let output = command.output().await.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
    ok(ctl(&["files", "put", &id, local_path, "docs/readme.txt"])).await;
    assert_eq!(ok(ctl(&["files", "cat", &id, "docs/readme.txt"])).await, "put by sandboxctl\n");
    assert!(ok(ctl(&["files", "ls", &id, "-r"])).await.contains("docs/readme.txt"));
    assert!(ok(ctl(&["sync", "push", &id])).await.contains("1 transferred"));
    assert!(ok(ctl(&["sync", "status", &id])).await.contains("last pull: never"));
}
