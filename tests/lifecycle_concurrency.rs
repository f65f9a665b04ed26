//! Concurrent creates: the owner quota, request-id idempotency, name uniqueness and
//! EnsureSandbox all hold when many calls race.

mod common;

use std::collections::HashSet;

use common::{TestApp, create_request, error_reason, violated_fields};
use futures::future::join_all;
use sandboxd::{
    auth::Role,
    proto::{CreateSandboxRequest, EnsureSandboxRequest, SandboxState},
};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn twenty_concurrent_creates_by_one_owner_give_exactly_five_sandboxes() {
    let app = TestApp::spawn().await;
    // A tenant of this test alone: Redis is shared by every test, and the markers are counted by
    // tenant below.
    let tenant = format!("quota-{}", uuid::Uuid::new_v4().simple());
    let key = app.key_for(&tenant, "bob", Role::Member).await;
    let calls = (0..20).map(|i| {
        let mut client = app.control(Some(&key));
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
    assert_eq!(markers_of_tenant(&app, &tenant).await, 5, "refused creates left no Redis keys");
}

/// Namespace markers (`sandbox:{<id>}:__sandboxd`) in Redis that name `tenant`.
async fn markers_of_tenant(app: &TestApp, tenant: &str) -> usize {
    let mut redis = app.redis().await;
    let markers: Vec<String> =
        redis::cmd("KEYS").arg("sandbox:{*}:__sandboxd").query_async(&mut redis).await.unwrap();
    let mut count = 0;
    for marker in markers {
        let owner: Option<String> =
            redis::cmd("HGET").arg(&marker).arg("tenant").query_async(&mut redis).await.unwrap();
        count += usize::from(owner.as_deref() == Some(tenant));
    }
    count
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
