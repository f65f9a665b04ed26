//! Graceful shutdown drains in-flight RPCs; deadlines and message-size limits are enforced; a
//! cancelled RPC never leaves a half-provisioned sandbox.

mod common;

use std::time::Duration;

use common::TestApp;
use sandboxd::proto::{CreateSandboxRequest, SandboxState};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Templates dir with the shipped templates plus `slow`, whose SQL takes about a second, so an
/// RPC can be caught in flight.
fn templates_with_slow_one() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/templates");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("slow.toml"),
        "name = \"slow\"\nschema_sql = \"CREATE TABLE t (id int); SELECT pg_sleep(1);\"\n",
    )
    .unwrap();
    dir
}

/// Waits until the server is inside the `slow` template's SQL: a create is in flight. Creation
/// commits nothing until it is done, so the running statement is what can be seen of it.
async fn wait_for_slow_template_sql(pool: &sqlx::PgPool) {
    for _ in 0..600 {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active'
               AND pid <> pg_backend_pid() AND query LIKE '%SELECT pg_sleep(1)%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if running > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the slow template's SQL never ran");
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_create_then_refuses_new_connections() {
    let templates = templates_with_slow_one();
    let dir = templates.path().to_path_buf();
    let mut app = TestApp::spawn_with(|config| config.templates.dir = dir).await;
    let pg = app.pg().await;
    let mut health_watch = app
        .health()
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health_watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let mut client = app.owner();
    let in_flight = tokio::spawn(async move {
        client
            .create_sandbox(CreateSandboxRequest { template: "slow".into(), ..Default::default() })
            .await
    });
    wait_for_slow_template_sql(&pg).await;

    let server = app.take_server();
    let addr = server.local_addr;
    server.shutdown_token().cancel();
    // Health flips to NOT_SERVING as the drain starts.
    assert_eq!(health_watch.message().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    drop(health_watch);

    let created = in_flight.await.unwrap().expect("the in-flight create completes").into_inner();
    assert_eq!(created.state(), SandboxState::Running);
    tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .expect("server stops within the grace period")
        .expect("clean shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener is closed");
}

#[tokio::test]
async fn a_client_deadline_is_honoured_and_the_sandbox_still_finishes_provisioning() {
    let templates = templates_with_slow_one();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(|config| config.templates.dir = dir).await;
    let mut request =
        tonic::Request::new(CreateSandboxRequest { template: "slow".into(), ..Default::default() });
    request.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "unexpected {status:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(900), "the deadline cut the call short");

    // The work continued server-side: the sandbox ends RUNNING, not stuck in CREATING.
    let pg = app.pg().await;
    common::wait_for_state(&pg, "RUNNING").await;
}

#[tokio::test]
async fn messages_over_the_size_limit_are_rejected() {
    let app = TestApp::spawn_with(|config| {
        config.server.max_message_bytes = 64 * 1024;
        // ReadFile chunks must fit in a message (the config check says so).
        config.files.read_chunk_bytes = 16 * 1024;
    })
    .await;
    let huge_label = "x".repeat(100 * 1024);
    let request = CreateSandboxRequest {
        template: "discord-guild".into(),
        labels: [("big".to_string(), huge_label)].into(),
        ..Default::default()
    };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    // gRPC's code for a message over the limit, with our details (not tonic's bare OUT_OF_RANGE).
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(common::error_reason(&status), "MESSAGE_TOO_LARGE");
}
