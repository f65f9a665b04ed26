//! Credentials of a remote reach git only through `GIT_ASKPASS` on sandboxd's side: a clone and
//! a push over smart HTTP with basic authentication (a real `git http-backend`) succeed, so the
//! secret was used, and it appears in no log line (captured at TRACE), error, workspace or
//! mirror file.

mod common;

use common::{TestApp, templates_with};
use sandboxd::{
    config::Secret,
    git::settings::GitCredential,
    proto::{CreateSandboxRequest, ExecRequest, GitPushRequest},
};
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;

const SECRET: &str = "s3cr3t-T0ken-2f9c1d";

async fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .args(["-c", "user.name=Seed", "-c", "user.email=seed@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .unwrap()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|window| window == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn remote_credentials_are_used_but_never_logged_or_stored() {
    let captured = common::log_capture::CapturedLogs::install();

    // A bare repository behind HTTP basic authentication.
    let root = tempfile::tempdir().unwrap();
    assert!(
        git(root.path(), &["init", "-q", "--bare", "-b", "main", "repo.git"])
            .await
            .status
            .success()
    );
    let seed = root.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    assert!(git(&seed, &["init", "-q", "-b", "main"]).await.status.success());
    std::fs::write(seed.join("README.md"), "hello\n").unwrap();
    assert!(git(&seed, &["add", "."]).await.status.success());
    assert!(git(&seed, &["commit", "-qm", "initial"]).await.status.success());
    let bare = root.path().join("repo.git");
    assert!(
        git(&seed, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]).await.status.success()
    );
    let password_file = root.path().join("password");
    std::fs::write(&password_file, SECRET).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/git_http_server.py");
    let mut server = tokio::process::Command::new("python3")
        .args([script, root.path().to_str().unwrap(), "agent", password_file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the git HTTP server");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let port = lines.next_line().await.unwrap().expect("the server prints its port");
    let url = format!("http://127.0.0.1:{port}/repo.git");

    // Without credentials the server refuses: the secret is really needed.
    let anonymous = git(root.path(), &["ls-remote", &url]).await;
    assert!(!anonymous.status.success(), "the HTTP remote must require authentication");

    let templates = templates_with(|name, text| match name {
        "git-agent.toml" => format!("{text}\n[git]\nrepository = \"{url}\"\n"),
        _ => text,
    });
    let dir = templates.path().to_path_buf();
    let prefix = format!("http://127.0.0.1:{port}/");
    let app = TestApp::spawn_with(move |config| {
        config.templates.dir = dir;
        config.git.credentials = vec![GitCredential {
            url_prefix: prefix,
            username: "agent".into(),
            password: Secret::new(SECRET),
            password_env: String::new(),
        }];
    })
    .await;

    let request = CreateSandboxRequest {
        template: "git-agent".into(),
        name: "http".into(),
        ..Default::default()
    };
    let id = app
        .owner()
        .create_sandbox(request)
        .await
        .expect("the clone over HTTP works")
        .into_inner()
        .sandbox_id;
    let exec = ExecRequest {
        sandbox_id: id.clone(),
        command: vec!["sh".into(), "-c".into(), "cat README.md && echo change > change.txt".into()],
        ..Default::default()
    };
    let mut stream = app.owner().exec(exec).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        if let Some(sandboxd::proto::exec_response::Output::StdoutChunk(chunk)) =
            message.unwrap().output
        {
            out.extend(chunk);
        }
    }
    assert_eq!(out, b"hello\n", "the workspace is a clone of the authenticated remote");
    let push = GitPushRequest {
        sandbox_id: id.clone(),
        message: "over http".into(),
        ..Default::default()
    };
    let pushed = app
        .sync(Some(&app.owner_key))
        .git_push(push)
        .await
        .expect("the push over HTTP works")
        .into_inner();
    assert!(pushed.pushed);
    let log = git(&bare, &["log", "--format=%s", "main"]).await;
    assert_eq!(String::from_utf8_lossy(&log.stdout), "over http\ninitial\n");

    let logs = captured.text();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "logs were captured at TRACE");
    assert!(
        logs.contains("git on the host") && logs.contains("with_credential=true"),
        "the remote's git commands were logged"
    );
    assert!(!logs.contains(SECRET), "the secret is in a log line");
    let workspace = app.config.runtime.workspace_root.join(common::uuid_of(&id).to_string());
    assert!(
        files_containing(&workspace, SECRET.as_bytes()).is_empty(),
        "the secret is in the workspace"
    );
    assert!(
        files_containing(&app.config.git.mirror_dir, SECRET.as_bytes()).is_empty(),
        "the secret is in a mirror"
    );
    let audit: Vec<(String,)> = sqlx::query_as("SELECT details::text FROM audit_events")
        .fetch_all(&app.pg().await)
        .await
        .unwrap();
    assert!(audit.iter().all(|(details,)| !details.contains(SECRET)));
    server.kill().await.ok();
}
