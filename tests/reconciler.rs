//! The reconciler against real PostgreSQL and Redis: expiry, idle and boot timeouts, work left
//! behind by a dead worker, orphans (after their grace period and not before), log retention,
//! and two replicas sharing the work without doing any of it twice.

mod common;

use std::time::Duration;

use common::{
    TestApp, create_request, eventually, sandbox_keys, schema_exists, state_of, templates_with,
    uuid_of,
};
use redis::AsyncCommands;
use sandboxd::{
    config::Config,
    proto::{RegisterGuildRequest, ResolveGuildRequest, RouteTarget, WatchSandboxesRequest},
};
use tonic::Code;

/// A reconciler that runs every 50 ms.
fn fast(config: &mut Config) {
    config.reconcile.interval = Duration::from_millis(50);
    config.sandbox.activity_flush_interval = Duration::from_millis(100);
}

/// Audited (event type, actor, reason) of a sandbox, in order.
async fn trail(pg: &sqlx::PgPool, id: uuid::Uuid) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type, actor, details->>'reason' FROM audit_events WHERE sandbox_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pg)
    .await
    .unwrap()
}

async fn destroy_reason(pg: &sqlx::PgPool, id: uuid::Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT destroy_reason FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_one(pg)
        .await
        .unwrap()
}

async fn wait_destroyed(pg: &sqlx::PgPool, id: uuid::Uuid) {
    eventually("the sandbox to be DESTROYED", Duration::from_secs(15), || async {
        state_of(pg, id).await == "DESTROYED"
    })
    .await;
}

#[tokio::test]
async fn an_expired_sandbox_is_destroyed_with_its_routes_schema_and_keys() {
    let app = TestApp::spawn_with(fast).await;
    let sandbox = app.owner().create_sandbox(create_request("short")).await.unwrap().into_inner();
    let id = uuid_of(&sandbox.sandbox_id);
    let mut redis = app.redis().await;
    let () = redis.set(format!("sandbox:{{{id}}}:user:1"), "data").await.unwrap();
    let guild = RegisterGuildRequest {
        guild_id: "81384788765712384".into(),
        sandbox_id: sandbox.sandbox_id.clone(),
    };
    app.routing(Some(&app.owner_key)).register_guild(guild).await.unwrap();
    let pg = app.pg().await;
    assert_eq!(state_of(&pg, id).await, "RUNNING");

    // Its TTL runs out (the shortest a caller may ask for is a minute, so the clock is moved).
    sqlx::query("UPDATE sandboxes SET expire_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pg)
        .await
        .unwrap();
    wait_destroyed(&pg, id).await;

    assert_eq!(destroy_reason(&pg, id).await.as_deref(), Some("expired"));
    assert!(!schema_exists(&pg, id).await);
    common::wait_for_keys_purged(&pg, id).await;
    let resolved = app
        .routing(Some(&app.owner_key))
        .resolve_guild(ResolveGuildRequest { guild_id: "81384788765712384".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.route.unwrap().target(), RouteTarget::Default);
    let states = common::audited_states(&pg, id).await;
    assert_eq!(states, ["RUNNING", "EXPIRED", "DESTROYING", "DESTROYED"]);
    let system_events: Vec<_> =
        trail(&pg, id).await.into_iter().filter(|(_, actor, _)| actor == "system").collect();
    assert!(
        system_events
            .iter()
            .any(|(kind, _, reason)| kind == "status_changed"
                && reason.as_deref() == Some("expired")),
        "{system_events:?}"
    );
}

#[tokio::test]
async fn a_sandbox_in_use_is_kept_and_an_idle_one_is_destroyed() {
    let templates = templates_with(|name, text| {
        if name == "discord-guild.toml" {
            text.replace("max_ttl = \"168h\"", "max_ttl = \"168h\"\nidle_timeout = \"1s\"")
        } else {
            text
        }
    });
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(|config| {
        fast(config);
        config.templates.dir = dir;
        // Touches wait this long in memory before they are written.
        config.sandbox.activity_flush_interval = Duration::from_millis(500);
    })
    .await;
    let mut owner = app.owner();
    let sandbox = owner.create_sandbox(create_request("busy")).await.unwrap().into_inner();
    let id = uuid_of(&sandbox.sandbox_id);
    let pg = app.pg().await;

    // Used every 300 ms for 4 s: four idle timeouts long, never idle for one.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        owner.get_sandbox(common::by_id(&sandbox.sandbox_id)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state_of(&pg, id).await, "RUNNING", "a sandbox in use was destroyed");
    }

    // Left alone, it goes.
    wait_destroyed(&pg, id).await;
    assert_eq!(destroy_reason(&pg, id).await.as_deref(), Some("idle_timeout"));
    assert!(!schema_exists(&pg, id).await);
}

#[tokio::test]
async fn provisioning_past_the_boot_timeout_is_failed_and_cleaned_up() {
    let app = TestApp::spawn_with(|config| {
        fast(config);
        config.sandbox.boot_timeout = Duration::from_secs(1);
    })
    .await;
    let pg = app.pg().await;
    // What a runtime that never finished booting leaves: a CREATING row with its schema (this
    // release has no runtime that boots, so the row is made by hand).
    let id = uuid::Uuid::now_v7();
    sqlx::query(&format!("CREATE SCHEMA sandbox_{}", id.simple())).execute(&pg).await.unwrap();
    sqlx::query(
        "INSERT INTO sandboxes (id, tenant, owner, template, state, created_at, updated_at,
             expire_at, max_expire_at, last_activity_at)
         VALUES ($1, 'acme', 'alice', 'git-agent', 'CREATING', now(), now(), now() + interval '1 hour',
             now() + interval '1 hour', now())",
    )
    .bind(id)
    .execute(&pg)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&pg, id).await, "CREATING", "not before the boot timeout");

    wait_destroyed(&pg, id).await;
    assert_eq!(destroy_reason(&pg, id).await.as_deref(), Some("boot_timeout"));
    assert!(!schema_exists(&pg, id).await);
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM sandboxes WHERE id = $1")
            .bind(id)
            .fetch_one(&pg)
            .await
            .unwrap();
    assert!(last_error.unwrap_or_default().contains("boot timeout"));
    assert_eq!(common::audited_states(&pg, id).await, ["FAILED", "DESTROYING", "DESTROYED"]);
}

#[tokio::test]
async fn a_destroy_left_behind_by_a_dead_worker_is_finished() {
    let app = TestApp::spawn_with(fast).await;
    let sandbox = app.owner().create_sandbox(create_request("left")).await.unwrap().into_inner();
    let id = uuid_of(&sandbox.sandbox_id);
    let mut redis = app.redis().await;
    let () = redis.set(format!("sandbox:{{{id}}}:user:1"), "data").await.unwrap();
    let pg = app.pg().await;
    // A replica (worker 999999, whose liveness lock nobody holds) committed DESTROYING and died.
    sqlx::query(
        "UPDATE sandboxes SET state = 'DESTROYING', worker = 999999, destroy_reason = 'done'
         WHERE id = $1",
    )
    .bind(id)
    .execute(&pg)
    .await
    .unwrap();

    wait_destroyed(&pg, id).await;
    assert!(!schema_exists(&pg, id).await);
    common::wait_for_keys_purged(&pg, id).await;
    assert_eq!(destroy_reason(&pg, id).await.as_deref(), Some("done"), "the caller's reason stays");
}

#[tokio::test]
async fn work_of_a_live_worker_is_left_to_it() {
    let app = TestApp::spawn_with(fast).await;
    let sandbox = app.owner().create_sandbox(create_request("busy")).await.unwrap().into_inner();
    let id = uuid_of(&sandbox.sandbox_id);
    let pg = app.pg().await;
    // Another replica, alive (it holds its liveness lock), is destroying this sandbox.
    let mut other = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    let worker: i32 =
        sqlx::query_scalar("INSERT INTO replicas (hostname) VALUES ('other') RETURNING id")
            .fetch_one(&mut other)
            .await
            .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(sandboxd::store::reconcile::REPLICA_LOCK_CLASS)
        .bind(worker)
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE sandboxes SET state = 'DESTROYING', worker = $2 WHERE id = $1")
        .bind(id)
        .bind(worker)
        .execute(&pg)
        .await
        .unwrap();
    // Many passes later it is still the other worker's.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state_of(&pg, id).await, "DESTROYING");

    // The other replica dies: its lock goes with its session, and the work is finished here.
    drop(other);
    wait_destroyed(&pg, id).await;
}

use sqlx::Connection;

#[tokio::test]
async fn orphaned_schemas_and_keys_go_after_the_grace_period_and_not_before() {
    let app = TestApp::spawn_with(|config| {
        fast(config);
        config.reconcile.orphan_grace = Duration::from_secs(2);
        config.reconcile.orphan_interval = Duration::from_millis(100);
    })
    .await;
    let pg = app.pg().await;
    let mut redis = app.redis().await;
    // What a crash between provisioning steps leaves: a schema and a namespace of this
    // deployment with no sandbox row; and a namespace of another deployment sharing the Redis.
    let ours = uuid::Uuid::now_v7();
    let theirs = uuid::Uuid::now_v7();
    sqlx::query(&format!("CREATE SCHEMA sandbox_{}", ours.simple())).execute(&pg).await.unwrap();
    let deployment = app.config.redis.key_prefix.clone();
    let () = redis
        .hset_multiple(format!("sandbox:{{{ours}}}:__sandboxd"), &[("deployment", &deployment)])
        .await
        .unwrap();
    let () = redis.set(format!("sandbox:{{{ours}}}:cache"), "x").await.unwrap();
    let () = redis
        .hset_multiple(format!("sandbox:{{{theirs}}}:__sandboxd"), &[("deployment", "elsewhere")])
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(schema_exists(&pg, ours).await, "removed before the grace period ended");
    assert_eq!(sandbox_keys(&mut redis, ours).await.len(), 2, "removed before the grace period");

    eventually("the orphans to be removed", Duration::from_secs(15), || async {
        !schema_exists(&pg, ours).await
            && sandbox_keys(&mut app.redis().await, ours).await.is_empty()
    })
    .await;
    assert_eq!(sandbox_keys(&mut redis, theirs).await.len(), 1, "another deployment's namespace");
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT details->>'resource' FROM audit_events
         WHERE sandbox_id = $1 AND event_type = 'orphan_removed' AND actor = 'system' ORDER BY id",
    )
    .bind(ours)
    .fetch_all(&pg)
    .await
    .unwrap();
    // The schema sweep and the keyspace pass run independently: either may come first.
    let mut audited = audited;
    audited.sort();
    assert_eq!(audited, ["redis", "schema"]);
    let _: u64 = redis.del(format!("sandbox:{{{theirs}}}:__sandboxd")).await.unwrap();
}

#[tokio::test]
async fn resuming_a_watch_from_pruned_events_answers_out_of_range() {
    let app = TestApp::spawn_with(|config| {
        fast(config);
        config.reconcile.retention_interval = Duration::from_millis(100);
    })
    .await;
    let mut owner = app.owner();
    let mut stream =
        owner.watch_sandboxes(WatchSandboxesRequest::default()).await.unwrap().into_inner();
    owner.create_sandbox(create_request("old")).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    drop(stream);
    let resumed =
        WatchSandboxesRequest { resume_token: first.resume_token.clone(), ..Default::default() };
    owner.watch_sandboxes(resumed.clone()).await.expect("resumable while the events are kept");
    owner.create_sandbox(create_request("older")).await.unwrap();

    // Both events age past the retention (7 days).
    let pg = app.pg().await;
    sqlx::query("UPDATE audit_events SET created_at = now() - interval '8 days'")
        .execute(&pg)
        .await
        .unwrap();
    eventually("old events to be pruned", Duration::from_secs(15), || async {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM audit_events").fetch_one(&pg).await.unwrap();
        left == 0
    })
    .await;

    let status = owner.watch_sandboxes(resumed).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(common::error_reason(&status), "RESUME_TOKEN_EXPIRED");
    owner.watch_sandboxes(WatchSandboxesRequest::default()).await.expect("a fresh watch works");
}

#[tokio::test]
async fn two_replicas_never_process_the_same_sandbox_twice() {
    let app = TestApp::spawn_with(|config| {
        fast(config);
        config.sandbox.max_live_per_owner = 50;
    })
    .await;
    let (replica, _client) = app.replica().await;
    let mut ids = Vec::new();
    for index in 0..30 {
        let request = create_request(&format!("expiring-{index}"));
        ids.push(uuid_of(
            &app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id,
        ));
    }
    let pg = app.pg().await;
    sqlx::query("UPDATE sandboxes SET expire_at = now()").execute(&pg).await.unwrap();
    eventually("every sandbox to be DESTROYED", Duration::from_secs(30), || async {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM sandboxes WHERE state <> 'DESTROYED'")
                .fetch_one(&pg)
                .await
                .unwrap();
        left == 0
    })
    .await;
    for id in ids {
        assert_eq!(
            common::audited_states(&pg, id).await,
            ["RUNNING", "EXPIRED", "DESTROYING", "DESTROYED"],
            "sandbox {id} was processed more than once"
        );
    }
    let workers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM replicas").fetch_one(&pg).await.unwrap();
    assert_eq!(workers, 2, "both replicas were registered workers");
    replica.shutdown().await.unwrap();
}

/// The keyspace pass runs in one replica at a time: while a live replica holds it, nobody else
/// runs it; once that replica dies (its liveness lock goes with its session, as on kill -9), the
/// pass is taken over at once and the destroyed sandbox's keys go.
#[tokio::test]
async fn a_keyspace_pass_held_by_a_replica_that_dies_is_taken_over() {
    let app = TestApp::spawn_with(fast).await;
    let pg = app.pg().await;
    // Another replica, alive (it holds its liveness lock), is in the middle of a pass.
    let mut other = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    let other_id = 424_242;
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(sandboxd::store::reconcile::REPLICA_LOCK_CLASS)
        .bind(other_id)
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE keyspace_passes SET running = true, holder = $1, next_at = now()")
        .bind(other_id)
        .execute(&pg)
        .await
        .unwrap();

    let sandbox = app.owner().create_sandbox(create_request("held")).await.unwrap().into_inner();
    let id = uuid_of(&sandbox.sandbox_id);
    let mut redis = app.redis().await;
    let () = redis.set(format!("sandbox:{{{id}}}:data"), "x").await.unwrap();
    app.owner().destroy_sandbox(common::destroy_request(&sandbox.sandbox_id)).await.unwrap();

    // Ten purge intervals: the pass belongs to the live replica, so the keys stay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!common::keys_purged(&pg, id).await, "the pass ran while another replica held it");
    assert_eq!(sandbox_keys(&mut redis, id).await.len(), 2, "marker and data still there");

    // The other replica dies: its session, and with it its liveness lock, ends.
    sqlx::Connection::close(other).await.unwrap();
    common::wait_for_keys_purged(&pg, id).await;
}
