//! Warm pools against real PostgreSQL and Redis: refill to `min_ready`, claims (atomic, never
//! twice, under the owner quota, idempotent by request id), release (reset and back, or
//! destroyed), and the persisted pool status.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{
    TestApp, create_request, error_reason, eventually, pooled_app, sandbox_keys, uuid_of,
};
use redis::AsyncCommands;
use sandboxd::{
    auth::Role,
    proto::{
        CreateSandboxRequest, GetPoolStatusRequest, PoolStatus, RegisterGuildRequest,
        ReleaseSandboxRequest, ResolveGuildRequest, RouteTarget, SandboxState,
    },
};
use tonic::Code;

async fn pool(app: &TestApp) -> PoolStatus {
    let request = GetPoolStatusRequest { template: "discord-guild".into() };
    app.owner().get_pool_status(request).await.unwrap().into_inner().pools.remove(0)
}

async fn wait_for_ready(app: &TestApp, ready: i32) {
    eventually(&format!("{ready} ready pool members"), Duration::from_secs(30), || async {
        pool(app).await.ready_count == ready
    })
    .await;
}

#[tokio::test]
async fn a_create_claims_a_ready_member_and_the_pool_refills() {
    let (app, _templates) = pooled_app(3, 10, |_| {}).await;
    wait_for_ready(&app, 3).await;
    let request = CreateSandboxRequest {
        labels: [("team".to_string(), "docs".to_string())].into(),
        ..create_request("warm")
    };
    let sandbox = app.owner().create_sandbox(request).await.unwrap().into_inner();
    assert!(sandbox.from_pool, "claimed from the pool");
    assert_eq!(sandbox.state(), SandboxState::Running);
    assert_eq!((sandbox.name.as_str(), sandbox.owner.as_str()), ("warm", "alice"));
    assert_eq!(sandbox.labels["team"], "docs");
    // The claimed member is a real, provisioned sandbox: its tables are there.
    let stats = app
        .owner()
        .get_schema_stats(sandboxd::proto::GetSchemaStatsRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.tables.len(), 3);

    wait_for_ready(&app, 3).await;
    let status = pool(&app).await;
    assert_eq!((status.in_use_count, status.hits, status.misses), (1, 1, 0));
    assert_eq!(status.reuse_rate, 1.0);
    // The tenant's trail says the sandbox came from the pool, born RUNNING for it.
    let pg = app.pg().await;
    let created: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE sandbox_id = $1 AND tenant = 'acme' ORDER BY id LIMIT 1",
    )
    .bind(uuid_of(&sandbox.sandbox_id))
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(
        (created["from_pool"].as_bool(), created["to"].as_str()),
        (Some(true), Some("RUNNING"))
    );
    // A cold create beside it (a template without a pool) says so.
    let cold = CreateSandboxRequest { template: "git-agent".into(), ..create_request("cold") };
    assert!(!app.owner().create_sandbox(cold).await.unwrap().into_inner().from_pool);
}

#[tokio::test]
async fn a_hundred_concurrent_claims_never_take_one_member_twice() {
    let (app, _templates) = pooled_app(100, 120, |config| {
        config.sandbox.max_live_per_owner = 200;
        config.sandbox.max_live_per_tenant = 0;
    })
    .await;
    wait_for_ready(&app, 100).await;
    let claims = (0..100).map(|index| {
        let mut client = app.owner();
        async move { client.create_sandbox(create_request(&format!("claim-{index}"))).await }
    });
    let claimed: Vec<_> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(|result| result.expect("every claim succeeds").into_inner())
        .collect();
    let ids: HashSet<&str> = claimed.iter().map(|s| s.sandbox_id.as_str()).collect();
    assert_eq!(ids.len(), 100, "no member was handed out twice");
    assert!(claimed.iter().all(|s| s.from_pool), "all 100 came from the pool");
    let pg = app.pg().await;
    let (running,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT id) FROM sandboxes WHERE state = 'RUNNING' AND tenant = 'acme' AND from_pool",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(running, 100);
}

#[tokio::test]
async fn claims_and_cold_creates_racing_under_the_owner_quota_yield_exactly_the_quota() {
    let (app, _templates) = pooled_app(5, 10, |_| {}).await;
    wait_for_ready(&app, 5).await;
    let creates = (0..12).map(|index| {
        let mut client = app.owner();
        let template = if index % 2 == 0 { "discord-guild" } else { "git-agent" };
        let request = CreateSandboxRequest {
            template: template.into(),
            ..create_request(&format!("racer-{index}"))
        };
        async move { client.create_sandbox(request).await }
    });
    let results = futures::future::join_all(creates).await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 5, "exactly the quota of 5");
    assert!(created.iter().any(|s| s.get_ref().from_pool), "claims took part");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    let pg = app.pg().await;
    let (live,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM sandboxes WHERE tenant = 'acme' AND owner = 'alice'
           AND state IN ('PENDING', 'CREATING', 'READY', 'RUNNING')",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(live, 5);
}

#[tokio::test]
async fn a_repeated_claim_with_one_request_id_returns_the_same_sandbox() {
    let (app, _templates) = pooled_app(3, 10, |_| {}).await;
    wait_for_ready(&app, 3).await;
    let request =
        CreateSandboxRequest { request_id: "claim-once".into(), ..create_request("once") };
    let (mut one, mut two) = (app.owner(), app.owner());
    let (first, second) =
        tokio::join!(one.create_sandbox(request.clone()), two.create_sandbox(request.clone()));
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert_eq!(first.sandbox_id, second.sandbox_id);
    assert!(first.from_pool);
    let again = app.owner().create_sandbox(request).await.unwrap().into_inner();
    assert_eq!(again.sandbox_id, first.sandbox_id);
    assert_eq!(pool(&app).await.in_use_count, 1);
}

#[tokio::test]
async fn a_released_member_is_reset_and_returned_to_the_pool() {
    let (app, _templates) = pooled_app(1, 10, |_| {}).await;
    wait_for_ready(&app, 1).await;
    let sandbox = app.owner().create_sandbox(create_request("used")).await.unwrap().into_inner();
    assert!(sandbox.from_pool);
    let id = uuid_of(&sandbox.sandbox_id);
    let schema = format!("sandbox_{}", id.simple());
    // The caller uses it: rows, Redis keys, a guild route.
    let pg = app.pg().await;
    sqlx::query(&format!("INSERT INTO {schema}.communities (guild_id, name) VALUES ('1', 'x')"))
        .execute(&pg)
        .await
        .unwrap();
    let mut redis = app.redis().await;
    let () = redis.set(format!("sandbox:{{{id}}}:user:1"), "data").await.unwrap();
    let guild =
        RegisterGuildRequest { guild_id: "42".into(), sandbox_id: sandbox.sandbox_id.clone() };
    app.routing(Some(&app.owner_key)).register_guild(guild).await.unwrap();

    // A member of the tenant who does not own it cannot release it.
    let bob = app.key_for("acme", "bob", Role::Member).await;
    let release =
        ReleaseSandboxRequest { sandbox_id: sandbox.sandbox_id.clone(), ..Default::default() };
    let status = app.control(Some(&bob)).release_sandbox(release.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let released = app.owner().release_sandbox(release.clone()).await.unwrap().into_inner();
    assert_eq!(released.state(), SandboxState::Ready);
    assert!(released.name.is_empty() && released.labels.is_empty());

    let (rows,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {schema}.communities"))
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(rows, 0, "tables emptied");
    let keys = sandbox_keys(&mut redis, id).await;
    assert_eq!(keys, [format!("sandbox:{{{id}}}:__sandboxd")], "only the marker is left");
    let route = app
        .routing(Some(&app.owner_key))
        .resolve_guild(ResolveGuildRequest { guild_id: "42".into() })
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    assert_eq!(route.target(), RouteTarget::Default, "route removed");
    let owner_row: (String, String) =
        sqlx::query_as("SELECT state, tenant FROM sandboxes WHERE id = $1")
            .bind(id)
            .fetch_one(&pg)
            .await
            .unwrap();
    assert_eq!(owner_row, ("READY".into(), String::new()), "back in the pool, no tenant's");
    let gone = app.owner().get_sandbox(common::by_id(&sandbox.sandbox_id)).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "the former owner no longer sees it");
    // Releasing again: it is not the caller's any more.
    assert_eq!(app.owner().release_sandbox(release).await.unwrap_err().code(), Code::NotFound);
    // It can be claimed again.
    wait_for_ready(&app, 2).await;
    let status = pool(&app).await;
    assert_eq!(status.in_use_count, 0);
}

#[tokio::test]
async fn release_refuses_a_template_without_a_pool_and_destroys_when_the_pool_is_full() {
    let (app, _templates) = pooled_app(1, 1, |_| {}).await;
    let cold = CreateSandboxRequest { template: "git-agent".into(), ..create_request("cold") };
    let cold = app.owner().create_sandbox(cold).await.unwrap().into_inner();
    let release = |id: &str| ReleaseSandboxRequest { sandbox_id: id.into(), ..Default::default() };
    let status = app.owner().release_sandbox(release(&cold.sandbox_id)).await.unwrap_err();
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (Code::FailedPrecondition, "TEMPLATE_HAS_NO_POOL")
    );

    // The pool holds one member; a cold sandbox of the pooled template cannot join it.
    wait_for_ready(&app, 1).await;
    let claimed = app.owner().create_sandbox(create_request("a")).await.unwrap().into_inner();
    assert!(claimed.from_pool);
    let extra = app.owner().create_sandbox(create_request("b")).await.unwrap().into_inner();
    assert!(!extra.from_pool, "the pool was empty: cold create (a miss)");
    let destroyed =
        app.owner().release_sandbox(release(&extra.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(destroyed.state(), SandboxState::Destroyed, "pool full: destroyed instead");
    let status = pool(&app).await;
    assert_eq!((status.hits, status.misses), (1, 1));
    assert_eq!(status.reuse_rate, 0.5);
}

#[tokio::test]
async fn pool_status_is_the_same_on_every_replica_and_survives_a_restart() {
    let (mut app, _templates) = pooled_app(2, 10, |_| {}).await;
    wait_for_ready(&app, 2).await;
    app.owner().create_sandbox(create_request("one")).await.unwrap();
    let (replica, mut client) = app.replica().await;
    let request = GetPoolStatusRequest { template: "discord-guild".into() };
    let seen_there =
        client.get_pool_status(request.clone()).await.unwrap().into_inner().pools.remove(0);
    assert_eq!(seen_there.hits, 1);
    app.shutdown().await.unwrap();
    let seen_later = client.get_pool_status(request).await.unwrap().into_inner().pools.remove(0);
    assert_eq!(seen_later.hits, 1);
    let unknown = GetPoolStatusRequest { template: "nope".into() };
    assert_eq!(client.get_pool_status(unknown).await.unwrap_err().code(), Code::NotFound);
    replica.shutdown().await.unwrap();
}

#[tokio::test]
async fn ready_members_of_a_pool_that_was_disabled_are_destroyed() {
    let (mut app, templates) = pooled_app(2, 10, |_| {}).await;
    wait_for_ready(&app, 2).await;
    app.shutdown().await.unwrap();
    // The operator turns the pool off and restarts.
    let file = templates.path().join("discord-guild.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace("enabled = true", "enabled = false");
    std::fs::write(&file, text).unwrap();
    let (replica, _client) = app.replica().await;
    let pg = app.pg().await;
    eventually("the ready members to be destroyed", Duration::from_secs(15), || async {
        let reasons: Vec<Option<String>> =
            sqlx::query_scalar("SELECT destroy_reason FROM sandboxes WHERE state = 'DESTROYED'")
                .fetch_all(&pg)
                .await
                .unwrap();
        reasons.len() == 2 && reasons.iter().all(|r| r.as_deref() == Some("pool_disabled"))
    })
    .await;
    let (ready,): (i64,) = sqlx::query_as("SELECT count(*) FROM sandboxes WHERE state = 'READY'")
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(ready, 0);
    replica.shutdown().await.unwrap();
}
