//! Concurrent creates: the owner quota, request-id idempotency, name uniqueness and
//! EnsureSandbox all hold when many calls race.

mod common;

use std::collections::HashSet;

use common::{TestApp, create_request, error_reason, violated_fields};
use futures::future::join_all;
use sandboxd::proto::{CreateSandboxRequest, EnsureSandboxRequest, SandboxState};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn twenty_concurrent_creates_by_one_owner_give_exactly_five_sandboxes() {
    let app = TestApp::spawn().await;
    let calls = (0..20).map(|i| {
        let mut client = app.owner();
        async move { client.create_sandbox(create_request(&format!("quota-{i}"))).await }
    });
    let results = join_all(calls).await;
    let created = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(created, 5, "exactly the quota succeeds");
    for status in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(error_reason(status), "QUOTA_EXCEEDED");
        assert!(status.get_details_quota_failure().is_some(), "QuotaFailure details");
    }
    let (live,): (i64,) = sqlx::query_as("SELECT count(*) FROM sandboxes WHERE state = 'RUNNING'")
        .fetch_one(&app.pg().await)
        .await
        .unwrap();
    assert_eq!(live, 5);
}

#[tokio::test]
async fn concurrent_duplicates_of_one_request_id_yield_one_sandbox() {
    let app = TestApp::spawn().await;
    let request = CreateSandboxRequest { request_id: "dup-1".into(), ..create_request("dup") };
    let calls = (0..8).map(|_| {
        let (mut client, request) = (app.owner(), request.clone());
        async move { client.create_sandbox(request).await }
    });
    let ids: HashSet<String> = join_all(calls)
        .await
        .into_iter()
        .map(|result| result.expect("every duplicate succeeds").into_inner().sandbox_id)
        .collect();
    assert_eq!(ids.len(), 1, "all duplicates got the same sandbox");
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM sandboxes").fetch_one(&app.pg().await).await.unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn concurrent_creates_with_one_name_let_exactly_one_win() {
    let app = TestApp::spawn_with(|config| config.sandbox.max_live_per_owner = 50).await;
    let calls = (0..8).map(|_| {
        let mut client = app.owner();
        async move { client.create_sandbox(create_request("contested")).await }
    });
    let results = join_all(calls).await;
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
    for status in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(error_reason(status), "SANDBOX_NAME_TAKEN");
    }
}

fn ensure(name: &str) -> EnsureSandboxRequest {
    EnsureSandboxRequest {
        template: "discord-guild".into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn ensure_gets_or_creates_and_concurrent_calls_share_one_sandbox() {
    let app = TestApp::spawn().await;
    let calls = (0..8).map(|_| {
        let mut client = app.owner();
        async move { client.ensure_sandbox(ensure("shared")).await }
    });
    let responses: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|result| result.expect("ensure succeeds").into_inner())
        .collect();
    let ids: HashSet<&str> =
        responses.iter().map(|r| r.sandbox.as_ref().unwrap().sandbox_id.as_str()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(responses.iter().filter(|r| r.created).count(), 1, "exactly one call created it");
    assert!(responses.iter().all(|r| r.sandbox.as_ref().unwrap().state() == SandboxState::Running));

    let again = app.owner().ensure_sandbox(ensure("shared")).await.unwrap().into_inner();
    assert!(!again.created);

    let unnamed = app.owner().ensure_sandbox(ensure("")).await.unwrap_err();
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&unnamed), ["name"]);

    let other_template = EnsureSandboxRequest { template: "git-agent".into(), ..ensure("shared") };
    let mismatch = app.owner().ensure_sandbox(other_template).await.unwrap_err();
    assert_eq!(mismatch.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn redis_going_down_midway_leaves_nothing_and_the_sandbox_ends_destroyed_with_the_error() {
    use common::gate::{Gate, redis_socket_addr};
    use sandboxd::config::SecretUrl;
    use std::time::Duration;

    let redis = Gate::closed(redis_socket_addr(&common::redis_url())).await;
    redis.open();
    let redis_url = format!("redis://{}", redis.addr);
    // A long readiness interval keeps the server taking requests after Redis goes away, so the
    // create really fails midway (after the schema was made) instead of being refused up front.
    let app = TestApp::spawn_with(|config| {
        config.redis.url = SecretUrl::new(redis_url);
        config.redis.timeout = Duration::from_millis(500);
        config.server.readiness_interval = Duration::from_secs(3600);
    })
    .await;
    redis.close();

    let status = app.owner().create_sandbox(create_request("doomed")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis.open();

    let pg = app.pg().await;
    let mut ended = None;
    for _ in 0..300 {
        let row: Option<(uuid::Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, state, last_error FROM sandboxes WHERE state = 'DESTROYED'")
                .fetch_optional(&pg)
                .await
                .unwrap();
        if row.is_some() {
            ended = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, _, last_error) = ended.expect("the failed sandbox ends DESTROYED once Redis is back");
    assert!(last_error.unwrap_or_default().contains("redis"), "last_error names the cause");
    let (schemas,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(format!("sandbox_{}", id.simple()))
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(schemas, 0, "no schema left behind");
    assert_eq!(
        common::audited_states(&pg, id).await,
        ["CREATING", "FAILED", "DESTROYING", "DESTROYED"]
    );
}
