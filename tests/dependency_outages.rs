//! Readiness per dependency: guild routing, served from memory, keeps answering while Redis is
//! down, and while PostgreSQL is down for at most `routing.max_staleness`; what needs a missing
//! dependency answers UNAVAILABLE, and everything is SERVING again once it is back.

mod common;

use std::time::Duration;

use common::{
    TestApp, create_request, eventually,
    gate::{Gate, redis_socket_addr},
};
use sandboxd::{
    config::SecretUrl,
    proto::{RegisterGuildRequest, ResolveGuildRequest, RouteTarget},
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const GUILD: &str = "81384788765712384";

async fn health_of(app: &TestApp, service: &str) -> ServingStatus {
    let request = HealthCheckRequest { service: service.into() };
    app.health().check(request).await.unwrap().into_inner().status()
}

async fn resolve(app: &TestApp) -> Result<RouteTarget, tonic::Status> {
    let request = ResolveGuildRequest { guild_id: GUILD.into() };
    let response = app.routing(Some(&app.owner_key)).resolve_guild(request).await?;
    Ok(response.into_inner().route.unwrap().target())
}

/// A routed sandbox, so resolves answer SANDBOX (not the default) while things are well.
async fn route_a_guild(app: &TestApp) {
    let sandbox = app.owner().create_sandbox(create_request("routed")).await.unwrap().into_inner();
    let request = RegisterGuildRequest { guild_id: GUILD.into(), sandbox_id: sandbox.sandbox_id };
    app.routing(Some(&app.owner_key)).register_guild(request).await.unwrap();
    assert_eq!(resolve(app).await.unwrap(), RouteTarget::Sandbox);
}

#[tokio::test]
async fn routing_keeps_answering_while_redis_is_down() {
    let redis = Gate::closed(redis_socket_addr(&common::redis_url())).await;
    redis.open();
    let redis_url = format!("redis://{}", redis.addr);
    let app = TestApp::spawn_with(|config| {
        config.redis.url = SecretUrl::new(redis_url);
        config.redis.timeout = Duration::from_millis(300);
        config.server.readiness_interval = Duration::from_millis(100);
    })
    .await;
    route_a_guild(&app).await;

    redis.close();
    eventually("SandboxControl to report NOT_SERVING", Duration::from_secs(10), || async {
        health_of(&app, "sandboxd.v1.SandboxControl").await == ServingStatus::NotServing
    })
    .await;
    assert_eq!(health_of(&app, "sandboxd.v1.GuildRouting").await, ServingStatus::Serving);
    assert_eq!(resolve(&app).await.unwrap(), RouteTarget::Sandbox, "still routed to the sandbox");
    let status = app.owner().create_sandbox(create_request("later")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    redis.open();
    app.wait_for_health("", ServingStatus::Serving).await;
    app.owner().create_sandbox(create_request("later")).await.expect("works again");
}

#[tokio::test]
async fn routing_answers_from_the_last_table_while_postgres_is_down_then_refuses_past_the_bound() {
    let admin = common::admin_database_url();
    let host_port = admin.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&host_port).unwrap().next().unwrap();
    let postgres = Gate::closed(upstream).await;
    postgres.open();
    let gate_addr = postgres.addr;
    let app = TestApp::spawn_with(|config| {
        let direct = config.database.url.expose().to_string();
        let database = direct.rsplit('/').next().unwrap().to_string();
        config.database.url = SecretUrl::new(format!("postgres://postgres@{gate_addr}/{database}"));
        config.database.acquire_timeout = Duration::from_millis(500);
        config.server.readiness_interval = Duration::from_millis(100);
        config.routing.sync_interval = Duration::from_millis(200);
        config.routing.max_staleness = Duration::from_secs(2);
    })
    .await;
    route_a_guild(&app).await;

    postgres.close();
    let cut_at = tokio::time::Instant::now();
    eventually("SandboxControl to report NOT_SERVING", Duration::from_secs(10), || async {
        health_of(&app, "sandboxd.v1.SandboxControl").await == ServingStatus::NotServing
    })
    .await;
    // Within the bound: the last table answers (the key is cached, so auth needs no database).
    assert!(cut_at.elapsed() < Duration::from_millis(1500), "the outage was seen within the bound");
    assert_eq!(resolve(&app).await.unwrap(), RouteTarget::Sandbox);
    // Past it: UNAVAILABLE, never a route that may be wrong.
    eventually(
        "resolves to be refused past routing.max_staleness",
        Duration::from_secs(10),
        || async {
            matches!(resolve(&app).await, Err(status) if status.code() == Code::Unavailable)
        },
    )
    .await;
    // The bound counts from the table's last catch-up, at most one sync interval (200 ms)
    // before the cut.
    let refused_after = cut_at.elapsed();
    let refusal = resolve(&app).await.unwrap_err();
    assert!(
        refused_after >= Duration::from_millis(1800),
        "refused after {refused_after:?}: {refusal:?}"
    );
    app.wait_for_health("sandboxd.v1.GuildRouting", ServingStatus::NotServing).await;

    postgres.open();
    app.wait_for_health("sandboxd.v1.GuildRouting", ServingStatus::Serving).await;
    app.wait_for_health("", ServingStatus::Serving).await;
    assert_eq!(resolve(&app).await.unwrap(), RouteTarget::Sandbox);
}
