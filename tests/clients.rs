//! Clients in other languages and the command-line tools, against the real server: the Python
//! and TypeScript examples (stubs generated or loaded from proto/ at test time), `sandboxd
//! keys`, and config validation.

mod common;

use std::{process::Command, time::Duration};

use common::TestApp;
use sandboxd::proto::ListTemplatesRequest;
use tonic::Code;

fn sandboxd_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sandboxd"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_python_example_creates_gets_destroys_and_decodes_error_info() {
    let app = TestApp::spawn().await;
    let stubs = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    run_ok(
        Command::new("python3")
            .args(["-m", "grpc_tools.protoc", "-I", "proto"])
            .arg(format!("--python_out={}", stubs.path().display()))
            .arg(format!("--grpc_python_out={}", stubs.path().display()))
            .args([
                "proto/sandboxd/v1/sandbox.proto",
                "proto/sandboxd/v1/routing.proto",
                "proto/sandboxd/v1/sync.proto",
            ])
            .current_dir(root),
    );
    // Async: the server runs on this test's runtime, so the client must not block it.
    let output = tokio::process::Command::new("python3")
        .arg("clients/python/example.py")
        .args(["--target", &app.addr.to_string(), "--api-key", &app.owner_key])
        .arg("--stubs")
        .arg(stubs.path())
        .current_dir(root)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for step in
        ["ResolveGuild → sandbox", "WatchSandboxes delivered:", "default (production) route"]
    {
        assert!(stdout.contains(step), "{step:?} missing: {stdout}");
    }
    assert!(stdout.contains("python client example: OK"), "{stdout}");
}

#[tokio::test]
async fn the_typescript_example_creates_lists_watches_destroys_and_decodes_errors() {
    let app = TestApp::spawn().await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/typescript");
    assert!(
        std::path::Path::new(example).join("node_modules/@grpc/grpc-js").exists(),
        "clients/typescript has no node_modules: run `npm ci --prefix clients/typescript` (scripts/test does)"
    );
    // Compiled and run here, against this test's server (the stubs load proto/ at run time).
    let output = tokio::process::Command::new("npm")
        .args(["run", "--silent", "example", "--", "--target", &app.addr.to_string()])
        .args(["--api-key", &app.owner_key])
        .current_dir(example)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("WatchSandboxes delivered:"), "{stdout}");
    assert!(stdout.contains("typescript client example: OK"), "{stdout}");
}

#[tokio::test]
async fn keys_created_listed_and_revoked_with_the_cli_work_against_the_server() {
    let app = TestApp::spawn_with(|config| config.auth.key_cache_ttl = Duration::ZERO).await;
    let env = [("SANDBOXD_DATABASE__URL", app.database_url.as_str())];
    let key = run_ok(sandboxd_bin().envs(env).args([
        "keys",
        "create",
        "--tenant",
        "initech",
        "--role",
        "member",
        "--subject",
        "peter",
    ]));
    let key = key.trim();
    assert!(key.starts_with("sbx_") && key.len() == 52, "{key:?}");
    app.control(Some(key))
        .list_templates(ListTemplatesRequest {})
        .await
        .expect("the new key works");

    let listing = run_ok(sandboxd_bin().envs(env).args(["keys", "list", "--tenant", "initech"]));
    assert!(
        listing.contains("peter") && listing.contains("member") && listing.contains("active"),
        "{listing}"
    );
    assert!(!listing.contains(key), "the key itself is never listed");
    let id = listing.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();

    run_ok(sandboxd_bin().envs(env).args(["keys", "revoke", &id]));
    let status = app.control(Some(key)).list_templates(ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let listing = run_ok(sandboxd_bin().envs(env).args(["keys", "list", "--tenant", "initech"]));
    assert!(listing.contains("revoked"), "{listing}");
}

#[test]
fn invalid_configuration_is_refused_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandboxd.toml");
    std::fs::write(&file, "[redis]\npool_size = 0\n[sandbox]\ndefault_ttl = \"300h\"\n").unwrap();
    let output = sandboxd_bin()
        .args(["serve", "--config"])
        .arg(&file)
        .env("SANDBOXD_DATABASE__URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "redis.pool_size",
        "default_ttl must not exceed",
        "database.url must start with postgres://",
    ] {
        assert!(stderr.contains(problem), "{problem:?} missing from: {stderr}");
    }

    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nno_such_key = 1\n").unwrap();
    let output = sandboxd_bin().args(["serve", "--config"]).arg(&file).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_such_key"));
}

#[test]
fn secrets_in_urls_never_reach_error_output() {
    let output = sandboxd_bin()
        .args(["serve"])
        .env("SANDBOXD_DATABASE__URL", "postgres://app:hunter2@127.0.0.1:1/x")
        .env("SANDBOXD_TEMPLATES__DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
}

async fn sandboxctl(app: &TestApp, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(args)
        .env("SANDBOXD_ADDR", format!("http://{}", app.addr))
        .env("SANDBOXD_API_KEY", &app.owner_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "sandboxctl {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn sandboxctl_covers_the_sandbox_lifecycle() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::spawn().await;
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["watch", "--json"])
        .env("SANDBOXD_ADDR", format!("http://{}", app.addr))
        .env("SANDBOXD_API_KEY", &app.owner_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watch_log = tokio::io::BufReader::new(watch.stderr.take().unwrap()).lines();
    let ready =
        tokio::time::timeout(std::time::Duration::from_secs(10), watch_log.next_line()).await;
    assert!(ready.unwrap().unwrap().unwrap().contains("watching"), "watch started");
    let ensured =
        sandboxctl(&app, &["ensure", "discord-guild", "ctl-box", "--label", "team=ops"]).await;
    assert!(ensured.starts_with("created"), "{ensured}");
    let again = sandboxctl(&app, &["ensure", "discord-guild", "ctl-box"]).await;
    assert!(again.starts_with("already existed"), "{again}");

    let listed: serde_json::Value = serde_json::from_str(
        &sandboxctl(&app, &["list", "--label", "team=ops", "--state", "running", "--json"]).await,
    )
    .unwrap();
    assert_eq!(listed[0]["name"], "ctl-box");
    let table = sandboxctl(&app, &["list"]).await;
    assert!(table.contains("ctl-box") && table.contains("RUNNING"), "{table}");

    let extended = sandboxctl(&app, &["extend", "ctl-box", "1h"]).await;
    assert!(extended.contains("ctl-box"), "{extended}");
    let health = sandboxctl(&app, &["health", "ctl-box"]).await;
    assert!(health.contains("HEALTHY") && health.contains("redis"), "{health}");
    let conn = sandboxctl(&app, &["conn", "ctl-box"]).await;
    assert!(conn.contains("export PGOPTIONS='-c search_path=sandbox_"), "{conn}");
    let stats = sandboxctl(&app, &["stats", "ctl-box"]).await;
    assert!(stats.contains("communities"), "{stats}");
    let audit = sandboxctl(&app, &["audit", "ctl-box"]).await;
    assert!(audit.contains("ttl_extended") && audit.contains("sandbox_created"), "{audit}");
    sandboxctl(&app, &["destroy", "ctl-box", "--reason", "done"]).await;

    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("watch printed an event")
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["event"], "CREATED");
    assert!(!event["resume_token"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn sandboxctl_manages_and_resolves_guild_routes() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::spawn().await;
    sandboxctl(&app, &["create", "discord-guild", "--name", "routed"]).await;
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["route", "watch"])
        .env("SANDBOXD_ADDR", format!("http://{}", app.addr))
        .env("SANDBOXD_API_KEY", &app.owner_key)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await;
        serde_json::from_str::<serde_json::Value>(&line.unwrap().unwrap().unwrap()).unwrap()
    };
    let snapshot = next_line().await;
    assert_eq!(snapshot["last_batch"], true, "{snapshot}");

    let added = sandboxctl(&app, &["route", "add", "424242", "routed"]).await;
    assert!(added.contains("424242"), "{added}");
    let resolved: serde_json::Value = serde_json::from_str(
        &sandboxctl(&app, &["route", "resolve", "424242", "1", "--json"]).await,
    )
    .unwrap();
    assert_eq!(resolved[0]["target"], "SANDBOX");
    assert_eq!(resolved[1]["target"], "DEFAULT");
    let listed = sandboxctl(&app, &["route", "list", "--sandbox", "routed"]).await;
    assert!(listed.contains("424242"), "{listed}");
    assert_eq!(sandboxctl(&app, &["route", "rm", "424242"]).await.trim(), "removed");
    assert_eq!(sandboxctl(&app, &["route", "rm", "424242"]).await.trim(), "no such route");

    let change = next_line().await;
    assert_eq!(change["change"], "ADDED", "{change}");
    assert_eq!(next_line().await["change"], "REMOVED");
}
