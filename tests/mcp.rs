//! `sandboxctl mcp` driven by a real MCP client: the official Python SDK (PyPI `mcp`) over
//! stdio and over streamable HTTP (`--listen`), against the real server with the `process`
//! runtime (needs bubblewrap, as tests/process_runtime.rs does) and an in-process S3 store
//! (workspace sync and artifacts; tenant `acme` requires four eyes, so the agent's own review
//! is refused and a second MCP session with an admin's key reviews), and, for capability
//! detection, against a gRPC server that offers none of sandboxd's
//! services. The Python packages are in
//! clients/python/requirements-mcp.txt (scripts/test installs them); without them the tests
//! fail and say how to install them.

mod common;

use std::{process::Output, time::Duration};

use common::{Bearer, TestApp};
use sandboxd::{
    auth::Role,
    proto::{
        GetArtifactRequest, GetSandboxRequest, ReadArtifactRequest, ReviewState, SandboxState,
        artifact_service_client::ArtifactServiceClient, get_sandbox_request::Selector,
    },
};
use tokio_stream::StreamExt;

const AGENT_TEMPLATE: &str = r#"
name = "mcp-workbench"
description = "A workspace for the MCP test's agent"
runtime = "process"
"#;

fn require_python_packages() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import mcp, jsonschema, anyio"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "the MCP tests need python3 with the packages of clients/python/requirements-mcp.txt: \
         python3 -m pip install -r clients/python/requirements-mcp.txt"
    );
}

/// The report the agent publishes as an artifact (clients/python/mcp_agent.py's REPORT).
const AGENT_REPORT: &str = "# Login fix\nThe agent changed notes/hello.txt.\n";

/// Runs the agent with `api_key` (and `reviewer_key` for the review by someone else).
async fn run_agent(api_key: &str, reviewer_key: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new("python3")
        .arg("clients/python/mcp_agent.py")
        .args(args)
        .env("SANDBOXD_API_KEY", api_key)
        .env("SANDBOXD_REVIEWER_API_KEY", reviewer_key)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the MCP agent finished within 120 s")
        .expect("python3 runs")
}

/// The server with the agent's process template, an in-process S3 store (for workspace_push /
/// workspace_pull and artifacts) and four eyes required for tenant acme; the guards keep the
/// template dir and S3 data alive. The key is an admin's of acme (subject bob), the reviewer.
async fn spawn_app() -> (common::WithS3, String) {
    let fixture = common::spawn_with_s3_and("mcp-workbench.toml", AGENT_TEMPLATE, |config| {
        config.artifacts.four_eyes_tenants.insert("acme".into(), true);
    })
    .await;
    let reviewer_key = fixture.app.key_for("acme", "bob", Role::Admin).await;
    (fixture, reviewer_key)
}

/// The agent's run succeeded, the gRPC API shows the sandbox it made, destroyed, and the
/// artifact it published (by alice, the owner key), approved by bob with the report's bytes.
async fn check_agent_session(app: &TestApp, reviewer_key: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    assert!(stdout.contains("mcp agent example: OK"), "{stdout}");
    assert!(stdout.contains("cancel: the cancelled exec's process is gone"), "{stdout}");
    for key in [&app.owner_key, reviewer_key] {
        assert!(!stderr.contains(key) && !stdout.contains(key), "key leaked");
    }
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("sandbox_id="))
        .expect("the agent printed its sandbox id")
        .to_string();
    let request = GetSandboxRequest { selector: Some(Selector::SandboxId(id.clone())) };
    let sandbox = app.owner().get_sandbox(request).await.unwrap().into_inner();
    assert_eq!(sandbox.state(), SandboxState::Destroyed);
    assert_eq!(sandbox.template, "mcp-workbench");
    assert_eq!(sandbox.destroy_reason, "agent done");
    check_reviewed_artifact(app, &stdout, &id).await;
}

async fn check_reviewed_artifact(app: &TestApp, stdout: &str, sandbox_id: &str) {
    assert!(stdout.contains("artifacts: the publisher's own review was refused"), "{stdout}");
    let artifact_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("artifact_id="))
        .expect("the agent printed its artifact id")
        .to_string();
    let bearer = Bearer(Some(app.owner_key.clone()));
    let mut artifacts = ArtifactServiceClient::with_interceptor(app.channel(), bearer);
    let request = GetArtifactRequest { artifact_id: artifact_id.clone() };
    let artifact = artifacts.get_artifact(request).await.unwrap().into_inner();
    assert_eq!(artifact.sandbox_id, sandbox_id);
    assert_eq!(artifact.review_state(), ReviewState::Approved);
    assert_eq!((artifact.publisher.as_str(), artifact.reviewer.as_str()), ("alice", "bob"));
    assert_eq!(artifact.review_comment, "looks right");
    let read = artifacts.read_artifact(ReadArtifactRequest { artifact_id }).await;
    let mut stream = read.unwrap().into_inner();
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().await {
        content.extend_from_slice(&chunk.unwrap().chunk);
    }
    assert_eq!(String::from_utf8(content).unwrap(), AGENT_REPORT);
}

#[tokio::test]
async fn an_mcp_agent_creates_a_sandbox_works_in_it_sees_progress_and_structured_errors_and_destroys_it()
 {
    require_python_packages();
    let (fixture, reviewer_key) = spawn_app().await;
    let app = &fixture.app;
    let addr = format!("http://{}", app.addr);
    let output = run_agent(
        &app.owner_key,
        &reviewer_key,
        &[
            "--sandboxctl",
            env!("CARGO_BIN_EXE_sandboxctl"),
            "--addr",
            &addr,
            "--template",
            "mcp-workbench",
        ],
    )
    .await;
    check_agent_session(app, &reviewer_key, &output).await;
}

#[tokio::test]
async fn the_same_session_over_streamable_http_forwards_each_clients_own_key() {
    use tokio::io::AsyncBufReadExt;
    require_python_packages();
    let (fixture, reviewer_key) = spawn_app().await;
    let app = &fixture.app;
    // No SANDBOXD_API_KEY for the MCP server: over HTTP each client's key is forwarded.
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["mcp", "--listen", "127.0.0.1:0"])
        .env("SANDBOXD_ADDR", format!("http://{}", app.addr))
        .env_remove("SANDBOXD_API_KEY")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let first = first.expect("the HTTP server started").unwrap().expect("it printed its address");
    let url = first.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"), "{first}");
    let args = ["--http", &url, "--template", "mcp-workbench"];
    let output = run_agent(&app.owner_key, &reviewer_key, &args).await;
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("http: a client without an API key is refused")
    );
    check_agent_session(app, &reviewer_key, &output).await;
    server.kill().await.unwrap();
}

#[tokio::test]
async fn tools_of_services_the_server_does_not_offer_are_not_listed() {
    require_python_packages();
    // A gRPC server with only the health service: every sandboxd RPC is UNIMPLEMENTED there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let addr = format!("http://{addr}");
    let sandboxctl = env!("CARGO_BIN_EXE_sandboxctl");
    let output =
        run_agent("", "", &["--sandboxctl", sandboxctl, "--addr", &addr, "--expect-no-tools"])
            .await;
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("mcp agent example: OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
