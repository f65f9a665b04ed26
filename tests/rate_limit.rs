//! Rate limits per principal: a burst, then RESOURCE_EXHAUSTED with RetryInfo; other
//! principals unaffected; the advertised delay is enough; unlimited roles and health are never
//! limited.

mod common;

use std::time::Duration;

use common::{TestApp, error_reason};
use sandboxd::{
    auth::Role,
    proto::{ListTemplatesRequest, ResolveGuildRequest},
    rate_limit::RoleLimit,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_types::StatusExt;

const BURST: u32 = 5;

async fn limited_app() -> TestApp {
    TestApp::spawn_with(|config| {
        // Two tokens a second: the advertised wait is up to 500 ms.
        config.rate_limit.member = Some(RoleLimit { per_second: 2.0, burst: Some(BURST) });
        config.rate_limit.router = Some(RoleLimit { per_second: 2.0, burst: Some(BURST) });
    })
    .await
}

#[tokio::test]
async fn a_principal_gets_its_burst_then_resource_exhausted_with_retry_info() {
    let app = limited_app().await;
    let alice = app.key_for("acme", "alice-member", Role::Member).await;
    let bob = app.key_for("acme", "bob-member", Role::Member).await;
    let mut alice_client = app.control(Some(&alice));

    for call in 0..BURST {
        alice_client
            .list_templates(ListTemplatesRequest {})
            .await
            .unwrap_or_else(|status| panic!("call {call} within the burst: {status:?}"));
    }
    let limited = alice_client.list_templates(ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(error_reason(&limited), "RATE_LIMITED");
    let retry_delay = limited
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry_delay > Duration::ZERO && retry_delay <= Duration::from_millis(500),
        "at 2 tokens/s the next token is at most 500 ms away: {retry_delay:?}"
    );

    // Another principal of the same role, at the same moment, has its own bucket.
    let mut bob_client = app.control(Some(&bob));
    for _ in 0..BURST {
        bob_client.list_templates(ListTemplatesRequest {}).await.expect("bob is not limited");
    }
    // Health is never limited, nor does it need a key.
    let health = app.health().check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(health.unwrap().into_inner().status(), ServingStatus::Serving);

    // Waiting what RetryInfo says is enough for one more call.
    tokio::time::sleep(retry_delay).await;
    alice_client
        .list_templates(ListTemplatesRequest {})
        .await
        .expect("a call after the advertised delay succeeds");
}

#[tokio::test]
async fn routing_calls_are_limited_too_and_unlimited_roles_never_are() {
    let app = limited_app().await;
    let router = app.key_for("acme", "router-1", Role::Router).await;
    let mut routing = app.routing(Some(&router));
    let resolve = || ResolveGuildRequest { guild_id: "123456789012345678".into() };
    for _ in 0..BURST {
        routing.resolve_guild(resolve()).await.expect("within the burst");
    }
    let limited = routing.resolve_guild(resolve()).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(error_reason(&limited), "RATE_LIMITED");

    // The owner role has no [rate_limit.owner]: many times the others' burst all succeed.
    let mut owner = app.owner();
    for call in 0..(BURST * 8) {
        owner
            .list_templates(ListTemplatesRequest {})
            .await
            .unwrap_or_else(|status| panic!("unlimited owner call {call}: {status:?}"));
    }
    assert_eq!(app.server().app.rate_limits.tracked(), 1, "only the router's bucket is kept");
}
