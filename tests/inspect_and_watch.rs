//! GetSandboxHealth, GetConnectionDetails, GetSchemaStats, last-activity tracking, and
//! WatchSandboxes (ordering, resume without loss, events from another replica).

mod common;

use std::time::Duration;

use common::{TestApp, by_id, create_request, destroy_request};
use redis::AsyncCommands;
use sandboxd::{
    auth::Role,
    proto::{
        GetConnectionDetailsRequest, GetSandboxHealthRequest, GetSchemaStatsRequest, HealthLevel,
        SandboxEventType, SandboxState, WatchSandboxesRequest, WatchSandboxesResponse,
    },
};
use tonic::{Code, Streaming};

fn health(id: &str) -> GetSandboxHealthRequest {
    GetSandboxHealthRequest { sandbox_id: id.into() }
}

#[tokio::test]
async fn health_checks_the_real_schema_and_redis_namespace() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let sandbox = owner.create_sandbox(create_request("checked")).await.unwrap().into_inner();
    let report = owner.get_sandbox_health(health(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(report.level(), HealthLevel::Healthy, "{report:?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["schema", "redis", "routing"]);
    assert!(report.checks.iter().all(|c| c.latency.is_some()));

    let schema = sandbox.resources.as_ref().unwrap().schema.clone();
    let pg = app.pg().await;
    sqlx::query(&format!("DROP TABLE {schema}.badges")).execute(&pg).await.unwrap();
    let report = owner.get_sandbox_health(health(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(report.level(), HealthLevel::Degraded);
    assert!(report.checks[0].detail.contains("badges"), "{:?}", report.checks[0]);

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pg).await.unwrap();
    let report = owner.get_sandbox_health(health(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(report.level(), HealthLevel::Unhealthy);

    let mut redis = app.redis().await;
    let marker = format!("sandbox:{{{}}}:__sandboxd", sandbox.sandbox_id);
    let _: u64 = redis.del(&marker).await.unwrap();
    let report = owner.get_sandbox_health(health(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(
        report.checks[1].level(),
        HealthLevel::Degraded,
        "marker missing: {:?}",
        report.checks[1]
    );
}

#[tokio::test]
async fn connection_details_and_schema_stats_describe_the_real_resources() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let sandbox = owner.create_sandbox(create_request("conn")).await.unwrap().into_inner();
    let id = sandbox.sandbox_id.clone();
    let details = owner
        .get_connection_details(GetConnectionDetailsRequest { sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let schema = format!("sandbox_{}", id.replace('-', ""));
    assert_eq!(details.schema, schema);
    assert_eq!(details.search_path, schema);
    assert_eq!(details.env["SANDBOX_ID"], id);
    assert_eq!(details.env["PGOPTIONS"], format!("-c search_path={schema}"));
    assert_eq!(details.env["REDIS_PREFIX"], format!("sandbox:{{{id}}}:"));
    assert_eq!(details.env["SUBJECT_PREFIX"], format!("sandbox.{id}."));
    assert_eq!(details.env["OBJECT_PREFIX"], format!("s3://sandboxd/sandboxes/{id}/"));

    // The connection details really work: PGOPTIONS' search_path reaches the template tables.
    let pg = app.pg().await;
    let mut conn = pg.acquire().await.unwrap();
    sqlx::query(&format!("SET search_path TO {}", details.search_path))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO communities (guild_id, name) VALUES ('1', 'a'), ('2', 'b')")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO profiles (guild_id, user_id) VALUES ('1', 'u')")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let stats = owner
        .get_schema_stats(GetSchemaStatsRequest { sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(&str, i64)> =
        stats.tables.iter().map(|t| (t.table_name.as_str(), t.row_count)).collect();
    assert_eq!(counts, [("badges", 0), ("communities", 2), ("profiles", 1)]);

    let router = app.key_for("acme", "edge", Role::Router).await;
    let denied = app
        .control(Some(&router))
        .get_connection_details(GetConnectionDetailsRequest { sandbox_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    owner.destroy_sandbox(destroy_request(&id)).await.unwrap();
    let gone = owner.get_schema_stats(GetSchemaStatsRequest { sandbox_id: id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn activity_is_recorded_in_batches() {
    let app = TestApp::spawn_with(|config| {
        config.sandbox.activity_flush_interval = Duration::from_millis(100)
    })
    .await;
    let mut owner = app.owner();
    let sandbox = owner.create_sandbox(create_request("busy")).await.unwrap().into_inner();
    let created = sandbox.last_activity_time.unwrap();
    let seen = owner.get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert!(seen.last_activity_time.unwrap().seconds >= created.seconds);
    let pg = app.pg().await;
    let id = uuid::Uuid::parse_str(&sandbox.sandbox_id).unwrap();
    let mut flushed = false;
    for _ in 0..200 {
        let (moved,): (bool,) =
            sqlx::query_as("SELECT last_activity_at > created_at FROM sandboxes WHERE id = $1")
                .bind(id)
                .fetch_one(&pg)
                .await
                .unwrap();
        if moved {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(flushed, "last_activity_at was written by the batch flush");
}

async fn next_event(stream: &mut Streaming<WatchSandboxesResponse>) -> WatchSandboxesResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

fn summary(response: &WatchSandboxesResponse) -> (SandboxEventType, SandboxState) {
    let event = response.event.as_ref().unwrap();
    (event.event_type(), event.sandbox.as_ref().unwrap().state())
}

#[tokio::test]
async fn watch_streams_lifecycle_events_in_order_and_resumes_without_loss() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let mut stream =
        owner.watch_sandboxes(WatchSandboxesRequest::default()).await.unwrap().into_inner();
    let sandbox = owner.create_sandbox(create_request("watched")).await.unwrap().into_inner();

    let first = next_event(&mut stream).await;
    // Born RUNNING in one transaction: the stream claims no state it never held.
    assert_eq!(summary(&first), (SandboxEventType::Created, SandboxState::Running));
    assert_eq!(
        first.event.as_ref().unwrap().sandbox.as_ref().unwrap().sandbox_id,
        sandbox.sandbox_id
    );
    drop(stream);

    // While nobody watches, the sandbox finishes its lifecycle.
    owner.destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.unwrap();

    let resumed =
        WatchSandboxesRequest { resume_token: first.resume_token.clone(), ..Default::default() };
    let mut stream = owner.watch_sandboxes(resumed).await.unwrap().into_inner();
    let rest = [next_event(&mut stream).await, next_event(&mut stream).await];
    let got: Vec<_> = rest.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (SandboxEventType::StateChanged, SandboxState::Destroying),
            (SandboxEventType::Destroyed, SandboxState::Destroyed),
        ]
    );
    assert_eq!(rest[1].event.as_ref().unwrap().previous_state(), SandboxState::Destroying);

    let bad = WatchSandboxesRequest { resume_token: "not-a-token".into(), ..Default::default() };
    assert_eq!(owner.watch_sandboxes(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn watch_sees_changes_made_through_another_replica_and_only_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let (replica, mut replica_client) = app.replica().await;
    let mut stream =
        app.owner().watch_sandboxes(WatchSandboxesRequest::default()).await.unwrap().into_inner();

    let other_tenant = app.key_for("globex", "gina", Role::Owner).await;
    app.control(Some(&other_tenant)).create_sandbox(create_request("theirs")).await.unwrap();
    let ours =
        replica_client.create_sandbox(create_request("via-replica")).await.unwrap().into_inner();

    let event = next_event(&mut stream).await;
    let sandbox = event.event.as_ref().unwrap().sandbox.as_ref().unwrap();
    assert_eq!(sandbox.sandbox_id, ours.sandbox_id, "the other tenant's events are not shown");
    replica.shutdown().await.unwrap();
}

/// A stream that falls behind log retention (its client stopped reading while the events it had
/// not delivered yet were pruned) ends with OUT_OF_RANGE instead of jumping over them to the
/// next event.
#[tokio::test]
async fn a_watch_that_falls_behind_retention_ends_out_of_range_instead_of_skipping() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    // A watcher with a small HTTP/2 window, so flow control stops the server once about 16 KiB
    // are unread (plus the batch of 200 the stream holds).
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut watcher =
        sandboxd::proto::sandbox_control_client::SandboxControlClient::with_interceptor(
            channel,
            common::Bearer(Some(app.owner_key.clone())),
        );
    let mut stream =
        watcher.watch_sandboxes(WatchSandboxesRequest::default()).await.unwrap().into_inner();
    // More events than can be in flight while the client reads nothing.
    const SANDBOXES: usize = 200;
    for n in 0..SANDBOXES {
        let sandbox = owner
            .create_sandbox(create_request(&format!("lagging-{n}")))
            .await
            .unwrap()
            .into_inner();
        owner.destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.unwrap();
    }
    let total = SANDBOXES * 3; // created, destroying, destroyed
    next_event(&mut stream).await;

    // The retention pass's own statement prunes every event so far.
    let store = sandboxd::store::Store::connect_lazy(&app.config.database).unwrap();
    let before = chrono::Utc::now() + chrono::Duration::seconds(1);
    let pruned =
        store.prune_log(sandboxd::store::reconcile::PrunedLog::AuditEvents, before, 100_000).await;
    assert!(pruned.unwrap() >= total as u64);

    // A new event: the stream must not deliver it after the gap.
    owner.create_sandbox(create_request("after-the-gap")).await.unwrap();

    let mut delivered = 1;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => delivered += 1,
            Ok(Ok(None)) => panic!("the stream ended without an error"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream went quiet after {delivered} events instead of ending"),
        }
    };
    assert!(delivered < total, "the stream really lagged: {delivered} of {total} delivered");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(common::error_reason(&status), "RESUME_TOKEN_EXPIRED");
}
