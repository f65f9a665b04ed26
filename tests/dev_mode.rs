//! `sandboxd dev` end to end: the README's run command on throwaway PostgreSQL, Redis and S3,
//! with the README's grpcurl and sandboxctl tours run against it exactly as written.

mod common;

use std::path::Path;

use common::dev_process::DevProcess;
use sandboxd::{config::S3Config, dev::InProcessS3, objectstore};

const DEV_KEY: &str = "sbx_devtest0000000000000000000000000000000000000001";

/// The shell block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start =
        readme.find(&begin).unwrap_or_else(|| panic!("README has no {begin}")) + begin.len();
    let stop = readme[start..].find(&end).unwrap_or_else(|| panic!("README has no {end}")) + start;
    let block = &readme[start..stop];
    let code: Vec<&str> =
        block.lines().filter(|line| !line.trim_start().starts_with("```")).collect();
    code.join("\n")
}

async fn run_tour(name: &str, envs: &[(&str, String)]) -> String {
    let script = readme_block(name);
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the README's {name} failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn sandboxd_dev_serves_on_throwaway_dependencies_and_the_readme_tours_work() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path(), DEV_KEY).await;
    let addr = dev.grpc.clone();

    let grpcurl =
        run_tour("grpcurl-tour", &[("ADDR", addr.clone()), ("KEY", DEV_KEY.into())]).await;
    for expected in [
        "sandboxd.v1.SandboxControl",
        "SERVING",
        "SANDBOX_STATE_RUNNING",
        "SANDBOX_STATE_DESTROYED",
    ] {
        assert!(
            grpcurl.contains(expected),
            "{expected} missing from the grpcurl tour output:\n{grpcurl}"
        );
    }

    let ctl_dir =
        Path::new(env!("CARGO_BIN_EXE_sandboxctl")).parent().unwrap().display().to_string();
    let path = format!("{ctl_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let ctl = run_tour(
        "sandboxctl-tour",
        &[
            ("PATH", path),
            ("SANDBOXD_ADDR", format!("http://{addr}")),
            ("SANDBOXD_API_KEY", DEV_KEY.into()),
        ],
    )
    .await;
    assert!(ctl.contains("discord-guild") && ctl.contains("DESTROYED"), "{ctl}");

    // SIGTERM drains and stops everything dev started, including the throwaway PostgreSQL.
    dev.stop().await;
    assert!(
        !data.path().join("postgres/data/postmaster.pid").exists(),
        "the throwaway PostgreSQL was stopped"
    );
}

#[tokio::test]
async fn the_in_process_s3_server_speaks_the_s3_protocol() {
    let data = tempfile::tempdir().unwrap();
    let server = InProcessS3::start(data.path()).await.unwrap();
    let mut config = S3Config::default();
    server.apply(&mut config);
    let client = objectstore::client(&config).await;
    objectstore::ensure_bucket(&client, &config.bucket).await.unwrap();
    objectstore::ensure_bucket(&client, &config.bucket).await.expect("ensuring twice is fine");
    let key = "sandboxes/0190-test/hello.txt";
    client
        .put_object()
        .bucket(&config.bucket)
        .key(key)
        .body(b"hello sandbox".to_vec().into())
        .send()
        .await
        .unwrap();
    let listed =
        client.list_objects_v2().bucket(&config.bucket).prefix("sandboxes/").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
    let body = client
        .get_object()
        .bucket(&config.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"hello sandbox");

    config.secret_access_key = sandboxd::config::Secret::new("wrong");
    let intruder = objectstore::client(&config).await;
    assert!(
        intruder.list_objects_v2().bucket(&config.bucket).send().await.is_err(),
        "bad credentials are refused"
    );
}
