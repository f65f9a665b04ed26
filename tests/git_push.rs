//! GitPush, GitPull and the clone at creation, against real bare repositories on this host
//! (and a real smart-HTTP server with basic authentication for credentials): commits travel
//! through sandboxd's mirror, pushes are fenced by the distributed lock and a compare-and-swap
//! on the remote ref.

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{TestApp, error_reason, sh, templates_with};
use sandboxd::proto::{
    CreateSandboxRequest, GitDiffRequest, GitPullRequest, GitPushRequest, GitPushResponse,
    GitStatusRequest,
};
use tonic::Code;

/// A bare repository with one commit on `main` (README.md), in its own temporary directory.
struct Remote {
    dir: tempfile::TempDir,
    bare: PathBuf,
}

async fn host_git(dir: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("git")
        .args(["-c", "user.name=Outside", "-c", "user.email=outside@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .await
        .expect("git runs on the test host");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Remote {
    async fn seeded() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        host_git(dir.path(), &["init", "-q", "--bare", "-b", "main", "remote.git"]).await;
        let seed = dir.path().join("seed");
        host_git(dir.path(), &["clone", "-q", bare.to_str().unwrap(), "seed"]).await;
        std::fs::write(seed.join("README.md"), "line one\n").unwrap();
        host_git(&seed, &["add", "."]).await;
        host_git(&seed, &["commit", "-qm", "initial"]).await;
        host_git(&seed, &["push", "-q", "origin", "HEAD:main"]).await;
        Remote { dir, bare }
    }

    /// Subjects of the commits on `branch`, newest first.
    async fn log(&self, branch: &str) -> Vec<String> {
        let text = host_git(&self.bare, &["log", "--format=%s", branch]).await;
        text.lines().map(str::to_string).collect()
    }

    async fn tip(&self, branch: &str) -> String {
        host_git(&self.bare, &["rev-parse", branch]).await.trim().to_string()
    }

    /// Commits a file straight to the remote, as someone outside sandboxd would.
    async fn push_from_outside(&self, file: &str, content: &str, subject: &str) {
        let work = self.dir.path().join(format!("outside-{}", uuid::Uuid::new_v4().simple()));
        host_git(
            self.dir.path(),
            &["clone", "-q", self.bare.to_str().unwrap(), work.to_str().unwrap()],
        )
        .await;
        std::fs::write(work.join(file), content).unwrap();
        host_git(&work, &["add", "."]).await;
        host_git(&work, &["commit", "-qm", subject]).await;
        host_git(&work, &["push", "-q", "origin", "HEAD:main"]).await;
    }
}

/// The shipped templates, with `git-agent` cloning `repository` (plus `extra` in its `[git]`).
fn templates(repository: &str, extra: &str) -> tempfile::TempDir {
    templates_with(|name, text| match name {
        "git-agent.toml" => format!("{text}\n[git]\nrepository = \"{repository}\"\n{extra}\n"),
        _ => text,
    })
}

async fn spawn(
    templates: &tempfile::TempDir,
    customize: impl FnOnce(&mut sandboxd::config::Config),
) -> TestApp {
    let dir = templates.path().to_path_buf();
    TestApp::spawn_with(move |config| {
        config.templates.dir = dir;
        config.sandbox.max_live_per_owner = 50;
        customize(config);
    })
    .await
}

/// A seeded remote, templates whose `git-agent` clones it, and a server on them.
async fn with_repository(
    extra: &str,
    customize: impl FnOnce(&mut sandboxd::config::Config),
) -> (Remote, tempfile::TempDir, TestApp) {
    let remote = Remote::seeded().await;
    let templates = templates(remote.bare.to_str().unwrap(), extra);
    let app = spawn(&templates, customize).await;
    (remote, templates, app)
}

async fn create(app: &TestApp, name: &str) -> String {
    let request = CreateSandboxRequest {
        template: "git-agent".into(),
        name: name.into(),
        ..Default::default()
    };
    app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id
}

fn push(id: &str, message: &str) -> GitPushRequest {
    GitPushRequest {
        sandbox_id: id.into(),
        message: message.into(),
        author_name: "Agent".into(),
        author_email: "agent@example.com".into(),
        ..Default::default()
    }
}

/// Starts a push of `id` that pauses right before it updates the remote: fires the first
/// receiver when it got there, and goes on when the sender is used.
fn paused_push(
    app: &TestApp,
    id: &str,
    message: &str,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<GitPushResponse, tonic::Status>>,
) {
    let pauses = app.server().app.sandboxes.push_pauses();
    let (reached, resume) = pauses.pause_before_push(common::uuid_of(id));
    let mut client = app.sync(Some(&app.owner_key));
    let request = push(id, message);
    let pushing =
        tokio::spawn(async move { client.git_push(request).await.map(|r| r.into_inner()) });
    (reached, resume, pushing)
}

async fn git_push(
    app: &TestApp,
    request: GitPushRequest,
) -> Result<GitPushResponse, tonic::Status> {
    app.sync(Some(&app.owner_key)).git_push(request).await.map(|r| r.into_inner())
}

/// The `git_pushed` audit events: (fencing token, lock acquired at, lock released at, commit).
async fn pushes_audited(
    app: &TestApp,
) -> Vec<(u64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, String)> {
    let rows: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT details FROM audit_events WHERE event_type = 'git_pushed'")
            .fetch_all(&app.pg().await)
            .await
            .unwrap();
    let time = |value: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap().to_utc()
    };
    rows.into_iter()
        .map(|(details,)| {
            (
                details["fencing_token"].as_u64().unwrap(),
                time(&details["lock_acquired_at"]),
                time(&details["lock_released_at"]),
                details["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn twenty_agents_pushing_at_once_lose_no_commit_and_never_share_the_lock() {
    let (remote, _templates, app) = with_repository("", |_| {}).await;
    let mut ids = Vec::new();
    for agent in 0..20 {
        let id = create(&app, &format!("agent-{agent}")).await;
        let (code, _) = sh(&app, &id, &format!("echo {agent} > agent-{agent}.txt")).await;
        assert_eq!(code, 0);
        ids.push(id);
    }

    let pushes = ids.iter().enumerate().map(|(agent, id)| {
        let app = &app;
        async move {
            let started = Instant::now();
            let pushed = git_push(app, push(id, &format!("agent {agent}"))).await;
            (started, Instant::now(), pushed)
        }
    });
    let results = futures::future::join_all(pushes).await;
    // All twenty were in flight at once: the last one started before the first one finished.
    let last_start = results.iter().map(|(started, _, _)| *started).max().unwrap();
    let first_end = results.iter().map(|(_, ended, _)| *ended).min().unwrap();
    assert!(last_start < first_end, "the pushes did not overlap");
    let responses: Vec<GitPushResponse> =
        results.into_iter().map(|(_, _, pushed)| pushed.expect("every push succeeds")).collect();
    assert!(responses.iter().all(|r| r.pushed && r.attempts >= 1));

    let log = remote.log("main").await;
    for agent in 0..20 {
        assert!(
            log.contains(&format!("agent {agent}")),
            "agent {agent}'s commit is missing: {log:?}"
        );
    }
    assert_eq!(log.len(), 21, "twenty commits on top of the initial one: {log:?}");
    let tree = host_git(&remote.bare, &["ls-tree", "--name-only", "main"]).await;
    assert_eq!(tree.lines().filter(|name| name.starts_with("agent-")).count(), 20);

    // The audit log's lock intervals, in fencing-token order, never overlap, and tokens grow
    // with time.
    let mut audited = pushes_audited(&app).await;
    assert_eq!(audited.len(), 20);
    audited.sort_by_key(|(token, ..)| *token);
    for pair in audited.windows(2) {
        let ((token_a, _, released_a, _), (token_b, acquired_b, _, _)) = (&pair[0], &pair[1]);
        assert!(token_a < token_b, "tokens only increase");
        assert!(
            released_a <= acquired_b,
            "token {token_a} held the lock until {released_a}, token {token_b} took it at {acquired_b}"
        );
    }
    let mut tokens: Vec<u64> = responses.iter().map(|r| r.fencing_token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 20, "each push held its own lease");
    let remote_tip = remote.tip("main").await;
    assert_eq!(audited.last().unwrap().3, remote_tip, "the last holder's commit is the tip");
}

#[tokio::test]
async fn a_holder_whose_lease_ran_out_cannot_overwrite_the_next_holders_commit() {
    let (remote, _templates, app) =
        with_repository("", |config| config.git.lock_ttl = Duration::from_millis(500)).await;
    let stale = create(&app, "stale").await;
    let next = create(&app, "next").await;
    assert_eq!(sh(&app, &stale, "echo stale > stale.txt").await.0, 0);
    assert_eq!(sh(&app, &next, "echo next > next.txt").await.0, 0);

    let (reached, resume, stale_push) = paused_push(&app, &stale, "stale work");
    reached.await.expect("the stale push reached the moment before it pushes");
    // It holds the lock, stalled; its lease runs out and the next holder pushes meanwhile.
    let pushed = git_push(&app, push(&next, "next work")).await.unwrap();
    assert!(pushed.pushed);
    let tip_after_next = remote.tip("main").await;
    assert_eq!(tip_after_next, pushed.commit);

    resume.send(()).unwrap();
    let refused = stale_push.await.unwrap().unwrap_err();
    assert_eq!(
        (refused.code(), error_reason(&refused).as_str()),
        (Code::Aborted, "LOCK_LEASE_EXPIRED")
    );
    let stale_token = pushed.fencing_token - 1;
    assert!(
        refused.message().contains(&format!("fencing token {stale_token}")),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("the remote refused the push"), "{}", refused.message());
    assert_eq!(remote.tip("main").await, tip_after_next, "nothing was overwritten");
    assert_eq!(remote.log("main").await, ["next work", "initial"]);
    let refusals: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT details FROM audit_events WHERE event_type = 'git_push_refused'")
            .fetch_all(&app.pg().await)
            .await
            .unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0["fencing_token"].as_u64(), Some(stale_token));
}

#[tokio::test]
async fn a_push_rejected_because_the_remote_moved_is_rebased_and_retried() {
    let (remote, _templates, app) = with_repository("", |_| {}).await;
    let id = create(&app, "agent").await;
    assert_eq!(sh(&app, &id, "echo mine > mine.txt").await.0, 0);

    let (reached, resume, pushing) = paused_push(&app, &id, "mine");
    reached.await.unwrap();
    // Someone who does not take the lock pushes between the fetch and the push.
    remote.push_from_outside("theirs.txt", "theirs\n", "theirs").await;
    resume.send(()).unwrap();
    let pushed = pushing.await.unwrap().unwrap();
    assert!(pushed.pushed);
    assert_eq!(pushed.attempts, 2, "the first attempt was rejected, the second landed");
    assert_eq!(remote.log("main").await, ["mine", "theirs", "initial"]);
    let status = app
        .sync(Some(&app.owner_key))
        .git_status(GitStatusRequest { sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.ahead, status.behind, status.clean), (0, 0, true));
}

#[tokio::test]
async fn a_conflicting_push_is_aborted_with_its_paths_and_the_workspace_left_as_it_was() {
    let (remote, _templates, app) = with_repository("", |_| {}).await;
    let first = create(&app, "first").await;
    let second = create(&app, "second").await;
    assert_eq!(sh(&app, &first, "echo first > README.md").await.0, 0);
    assert_eq!(sh(&app, &second, "echo second > README.md && echo extra > extra.txt").await.0, 0);
    assert!(git_push(&app, push(&first, "first edit")).await.unwrap().pushed);

    let conflict = git_push(&app, push(&second, "second edit")).await.unwrap_err();
    assert_eq!(
        (conflict.code(), error_reason(&conflict).as_str()),
        (Code::Aborted, "GIT_CONFLICT")
    );
    assert!(conflict.message().contains("README.md"), "{}", conflict.message());
    assert!(!conflict.message().contains("extra.txt"), "{}", conflict.message());
    assert_eq!(remote.log("main").await, ["first edit", "initial"]);
    // The rebase was undone: the sandbox's own commit is HEAD, nothing in progress, clean.
    let (code, out) = sh(&app, &second, "git log --format=%s -2 && test ! -d .git/rebase-merge && test ! -d .git/rebase-apply && git status --porcelain && cat README.md").await;
    assert_eq!(code, 0);
    assert_eq!(out, "second edit\ninitial\nsecond\n");

    // A pull by merge conflicts the same way and is undone too.
    let pull = GitPullRequest { sandbox_id: second.clone(), ..Default::default() };
    let conflict = app.sync(Some(&app.owner_key)).git_pull(pull).await.unwrap_err();
    assert_eq!(
        (conflict.code(), error_reason(&conflict).as_str()),
        (Code::Aborted, "GIT_CONFLICT")
    );
    let (_, out) = sh(&app, &second, "git log --format=%s -1 && git status --porcelain").await;
    assert_eq!(out, "second edit\n");
}

#[tokio::test]
async fn a_pull_rebases_onto_the_remote_branch() {
    let (remote, _templates, app) = with_repository("", |_| {}).await;
    let id = create(&app, "agent").await;
    assert_eq!(sh(&app, &id, "echo local > local.txt && git add . && git -c user.name=A -c user.email=a@x commit -qm local").await.0, 0);
    remote.push_from_outside("remote.txt", "remote\n", "remote change").await;

    let pull = GitPullRequest { sandbox_id: id.clone(), rebase: true, ..Default::default() };
    let pulled = app.sync(Some(&app.owner_key)).git_pull(pull.clone()).await.unwrap().into_inner();
    assert!(pulled.updated);
    let (_, out) = sh(&app, &id, "git log --format=%s && cat remote.txt").await;
    assert_eq!(out, "local\nremote change\ninitial\nremote\n");
    // GitDiff against a ref: the local commit beside the remote branch.
    let against =
        GitDiffRequest { sandbox_id: id.clone(), base: "origin/main".into(), ..Default::default() };
    let diff = app.sync(Some(&app.owner_key)).git_diff(against).await.unwrap().into_inner().diff;
    assert!(diff.contains("+++ b/local.txt") && !diff.contains("remote.txt"), "{diff}");
    let again = app.sync(Some(&app.owner_key)).git_pull(pull).await.unwrap().into_inner();
    assert_eq!((again.updated, again.commit), (false, pulled.commit));

    // Uncommitted changes to tracked files are in the way of a pull.
    assert_eq!(sh(&app, &id, "echo dirty >> README.md").await.0, 0);
    let pull = GitPullRequest { sandbox_id: id.clone(), rebase: true, ..Default::default() };
    let dirty = app.sync(Some(&app.owner_key)).git_pull(pull).await.unwrap_err();
    assert_eq!(
        (dirty.code(), error_reason(&dirty).as_str()),
        (Code::FailedPrecondition, "GIT_UNCOMMITTED_CHANGES")
    );
}

#[tokio::test]
async fn creation_clones_onto_an_agent_branch_and_a_failed_clone_fails_the_create() {
    let (remote, _templates, app) = with_repository("agent_branch = true", |_| {}).await;
    let id = create(&app, "agent").await;
    let status = app
        .sync(Some(&app.owner_key))
        .git_status(GitStatusRequest { sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.branch, format!("sandbox/{id}"));
    assert_eq!(sh(&app, &id, "cat README.md").await.1, "line one\n");
    assert_eq!(sh(&app, &id, "echo work > work.txt").await.0, 0);
    let pushed = git_push(&app, push(&id, "agent work")).await.unwrap();
    assert!(pushed.pushed);
    assert_eq!(remote.log(&format!("sandbox/{id}")).await, ["agent work", "initial"]);
    assert_eq!(remote.log("main").await, ["initial"], "main is untouched");

    // A template whose repository does not exist: the create fails, nothing is left running.
    let missing = templates_with(|name, text| match name {
        "git-agent.toml" => format!("{text}\n[git]\nrepository = \"/nonexistent/repo.git\"\n"),
        _ => text,
    });
    let app = spawn(&missing, |_| {}).await;
    let request = CreateSandboxRequest {
        template: "git-agent".into(),
        name: "broken".into(),
        ..Default::default()
    };
    let failed = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(
        (failed.code(), error_reason(&failed).as_str()),
        (Code::FailedPrecondition, "GIT_REMOTE_REFUSED"),
        "{}",
        failed.message()
    );
    let pool = app.pg().await;
    let states: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM sandboxes").fetch_all(&pool).await.unwrap();
    assert!(states.iter().all(|(state,)| state != "RUNNING"), "{states:?}");
    let workspaces =
        std::fs::read_dir(&app.config.runtime.workspace_root).map(|dir| dir.count()).unwrap_or(0);
    assert_eq!(workspaces, 0, "the failed sandbox's workspace was removed");
}

#[tokio::test]
async fn pushes_need_a_template_repository_and_valid_fields() {
    let (remote, _templates, app) = with_repository("", |_| {}).await;
    let id = create(&app, "agent").await;
    let bad = GitPushRequest {
        sandbox_id: id.clone(),
        branch: "--upload-pack=evil".into(),
        remote: "elsewhere".into(),
        paths: vec!["../outside".into()],
        ..Default::default()
    };
    let status = git_push(&app, bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(common::violated_fields(&status), ["paths[0]", "branch", "paths"]);
    let elsewhere = GitPushRequest { remote: "elsewhere".into(), ..push(&id, "x") };
    let status = git_push(&app, elsewhere).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["remote"]);
    // Nothing to push is not an error.
    let nothing = git_push(&app, GitPushRequest { sandbox_id: id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert!(!nothing.pushed);
    assert_eq!(nothing.commit, remote.tip("main").await);

    // A template without a repository.
    let request = CreateSandboxRequest { template: "git-agent".into(), ..Default::default() };
    let plain_templates = templates_with(|_, text| text);
    let plain = spawn(&plain_templates, |_| {}).await;
    let plain_id = plain.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id;
    let status = git_push(&plain, push(&plain_id, "x")).await.unwrap_err();
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (Code::FailedPrecondition, "GIT_NO_REMOTE")
    );
}
