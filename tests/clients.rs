//! Clients in other languages and the command-line tools, against the real server: the Python
//! example (stubs generated from proto/ at test time), `sandboxd keys`, and config validation.

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
    assert!(stdout.contains("python client example: OK"), "{stdout}");
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
