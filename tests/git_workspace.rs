//! GitStatus and GitDiff on a real repository in a `process` sandbox's workspace (git runs inside
//! the sandbox).

mod common;

use common::{TestApp, error_reason};
use sandboxd::proto::{CreateSandboxRequest, GitChangeType, GitDiffRequest, GitStatusRequest};
use tonic::Code;

#[tokio::test]
async fn status_and_diff_report_the_workspace_repository() {
    let app = TestApp::spawn().await;
    let request = CreateSandboxRequest { template: "git-agent".into(), ..Default::default() };
    let id = app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id;
    let sync = || app.sync(Some(&app.owner_key));
    let status = sync().git_status(GitStatusRequest { sandbox_id: id.clone() }).await.unwrap_err();
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (Code::FailedPrecondition, "NOT_A_GIT_REPOSITORY")
    );

    let setup = "git init -q -b main && git config user.email a@example.com && git config user.name A \
        && echo one > a.txt && echo gone > old.txt && git add . && git commit -qm init \
        && echo two >> a.txt && echo fresh > 'new file.txt' && git mv old.txt moved.txt";
    assert_eq!(common::sh(&app, &id, setup).await.0, 0);
    let status =
        sync().git_status(GitStatusRequest { sandbox_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(status.branch, "main");
    assert!(!status.clean);
    let files: Vec<_> = status
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.staged(), f.unstaged(), f.original_path.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("a.txt", GitChangeType::Unmodified, GitChangeType::Modified, ""),
            ("moved.txt", GitChangeType::Renamed, GitChangeType::Unmodified, "old.txt"),
            ("new file.txt", GitChangeType::Unmodified, GitChangeType::Untracked, ""),
        ]
    );

    let unstaged = GitDiffRequest { sandbox_id: id.clone(), ..Default::default() };
    let diff = sync().git_diff(unstaged.clone()).await.unwrap().into_inner().diff;
    assert!(diff.contains("+two"), "{diff}");
    assert!(!diff.contains("moved.txt"), "the rename is staged, not in the unstaged diff");
    let staged = GitDiffRequest { staged: true, ..unstaged.clone() };
    let diff = sync().git_diff(staged).await.unwrap().into_inner().diff;
    assert!(diff.contains("rename to moved.txt"), "{diff}");
    let only_new = GitDiffRequest { paths: vec!["moved.txt".into()], ..unstaged };
    assert_eq!(sync().git_diff(only_new).await.unwrap().into_inner().diff, "");
    let escaping =
        GitDiffRequest { sandbox_id: id.clone(), paths: vec!["../x".into()], ..Default::default() };
    let status = sync().git_diff(escaping).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["paths[0]"]);
}
