//! Redis going away in the middle of the lifecycle: nothing is left half-made, the state says
//! what happened, and the next call (or the background cleanup) finishes the job once Redis is
//! back.

mod common;

use std::time::Duration;

use common::{
    TestApp, create_request,
    gate::{Gate, redis_socket_addr},
};
use redis::AsyncCommands;
use sandboxd::{
    config::SecretUrl,
    proto::{
        CreateSandboxRequest, DestroySandboxRequest, GetSandboxRequest, SandboxState,
        get_sandbox_request::Selector,
    },
};
use tonic::Code;

/// A server whose Redis is behind a gate the test opens and closes. A long readiness interval
/// keeps the server taking requests while Redis is away, so calls really fail midway instead of
/// being refused up front.
async fn app_behind_gate() -> (TestApp, Gate) {
    let redis = Gate::closed(redis_socket_addr(&common::redis_url())).await;
    redis.open();
    let redis_url = format!("redis://{}", redis.addr);
    let app = TestApp::spawn_with(|config| {
        config.redis.url = SecretUrl::new(redis_url);
        config.redis.timeout = Duration::from_millis(500);
        config.server.readiness_interval = Duration::from_secs(3600);
    })
    .await;
    (app, redis)
}

/// Waits until a sandbox is DESTROYED (the background cleanup's work); its id and last error.
async fn wait_for_destroyed(pg: &sqlx::PgPool) -> (uuid::Uuid, Option<String>) {
    let id = common::wait_for_state(pg, "DESTROYED").await;
    let last_error = sqlx::query_scalar("SELECT last_error FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_one(pg)
        .await
        .unwrap();
    (id, last_error)
}

#[tokio::test]
async fn redis_going_down_midway_leaves_nothing_and_the_sandbox_ends_destroyed_with_the_error() {
    let (app, redis) = app_behind_gate().await;
    redis.close();

    let status = app.owner().create_sandbox(create_request("doomed")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis.open();

    let pg = app.pg().await;
    let (id, last_error) = wait_for_destroyed(&pg).await;
    assert!(last_error.unwrap_or_default().contains("redis"), "last_error names the cause");
    assert!(!common::schema_exists(&pg, id).await, "no schema left behind");
    assert_eq!(common::audited_states(&pg, id).await, ["FAILED", "DESTROYING", "DESTROYED"]);
}

/// On a single Redis a destroy does not need Redis (its keys are left to the keyspace pass), so
/// an outage does not hold it up; the keys go once Redis is back.
#[tokio::test]
async fn a_destroy_while_redis_is_down_ends_destroyed_and_the_keys_go_once_redis_is_back() {
    let (app, redis) = app_behind_gate().await;
    let sandbox = app.owner().create_sandbox(create_request("outage")).await.unwrap().into_inner();
    let id = uuid::Uuid::parse_str(&sandbox.sandbox_id).unwrap();
    let prefix = sandbox.resources.unwrap().redis_prefix;
    let mut direct = app.redis().await;
    let () = direct.set(format!("{prefix}user:1"), "data").await.unwrap();
    let destroy = DestroySandboxRequest {
        sandbox_id: sandbox.sandbox_id.clone(),
        reason: "done".into(),
        ..Default::default()
    };

    redis.close();
    // Redis really is away for the server: a call that needs it fails.
    let status = app.owner().create_sandbox(create_request("refused")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let destroyed = app.owner().destroy_sandbox(destroy).await.unwrap().into_inner();
    assert_eq!(destroyed.state(), SandboxState::Destroyed);
    assert_eq!(destroyed.destroy_reason, "done");
    let pg = app.pg().await;
    assert!(!common::schema_exists(&pg, id).await, "the schema went with DESTROYED");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut direct).await.unwrap();
    assert!(keys.contains(&format!("{prefix}user:1")), "the pass cannot reach Redis: {keys:?}");
    assert!(!common::keys_purged(&pg, id).await, "not recorded as removed while they exist");

    redis.open();
    common::wait_for_keys_purged(&pg, id).await;
    assert_eq!(common::audited_states(&pg, id).await, ["RUNNING", "DESTROYING", "DESTROYED"]);
    let by_id = GetSandboxRequest { selector: Some(Selector::SandboxId(sandbox.sandbox_id)) };
    let got = app.owner().get_sandbox(by_id).await.unwrap().into_inner();
    assert_eq!(got.state(), SandboxState::Destroyed);
}

#[tokio::test]
async fn a_create_that_failed_does_not_hold_its_request_id() {
    let (app, redis) = app_behind_gate().await;
    let request =
        CreateSandboxRequest { request_id: "retry-me".into(), ..create_request("retried") };

    redis.close();
    let status = app.owner().create_sandbox(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis.open();

    let created = app.owner().create_sandbox(request.clone()).await.unwrap().into_inner();
    assert_eq!(created.state(), SandboxState::Running, "the retry creates it");
    let again = app.owner().create_sandbox(request).await.unwrap().into_inner();
    assert_eq!(again.sandbox_id, created.sandbox_id, "and from then on the id is taken");

    let pg = app.pg().await;
    let (failed_id, last_error) = wait_for_destroyed(&pg).await;
    assert_ne!(failed_id.to_string(), created.sandbox_id);
    assert!(last_error.unwrap_or_default().contains("redis"));
    let request_ids: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, request_id FROM sandboxes ORDER BY created_at")
            .fetch_all(&pg)
            .await
            .unwrap();
    assert_eq!(
        request_ids,
        [("DESTROYED".into(), None), ("RUNNING".into(), Some("retry-me".into()))]
    );
}

#[tokio::test]
async fn locks_answer_unavailable_while_redis_is_away_and_work_when_it_is_back() {
    let (app, redis) = app_behind_gate().await;
    let sync = || app.sync(Some(&app.owner_key));
    let acquire = sandboxd::proto::AcquireLockRequest {
        resource: "outage".into(),
        wait: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        ..Default::default()
    };
    let lease = sync().acquire_lock(acquire.clone()).await.unwrap().into_inner();
    redis.close();
    let status = sync().acquire_lock(acquire.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "never a silent success: {status:?}");
    let release = sandboxd::proto::ReleaseLockRequest {
        resource: lease.resource.clone(),
        owner_token: lease.owner_token.clone(),
    };
    let status = sync().release_lock(release.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis.open();
    // The lease survived the outage: still held, and its owner can release it.
    assert_eq!(sync().acquire_lock(acquire).await.unwrap_err().code(), Code::Aborted);
    assert!(sync().release_lock(release).await.unwrap().into_inner().released);
}
