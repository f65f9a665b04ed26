//! The per-tenant quota of live sandboxes beside the per-owner one: both hold exactly under
//! concurrent cold creates and concurrent warm-pool claims by several owners of one tenant, and
//! a refusal names the quota that refused.

mod common;

use std::time::Duration;

use common::{TestApp, create_request, eventually};
use sandboxd::auth::Role;
use tonic::Code;
use tonic_types::StatusExt;

/// Fires `per_owner` concurrent creates for each of `owners` members of tenant acme; returns how
/// many succeeded and the QuotaFailure subjects of the refusals.
async fn concurrent_creates(
    app: &TestApp,
    owners: &[String],
    per_owner: usize,
) -> (usize, Vec<String>) {
    let mut calls = Vec::new();
    for (owner_index, key) in owners.iter().enumerate() {
        for index in 0..per_owner {
            let mut client = app.control(Some(key));
            calls.push(async move {
                client.create_sandbox(create_request(&format!("q-{owner_index}-{index}"))).await
            });
        }
    }
    let mut subjects = Vec::new();
    let mut created = 0;
    for outcome in futures::future::join_all(calls).await {
        match outcome {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let quota = status.get_details_quota_failure().expect("QuotaFailure details");
                subjects.push(quota.violations[0].subject.clone());
            }
        }
    }
    (created, subjects)
}

async fn members(app: &TestApp, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for index in 0..count {
        keys.push(app.key_for("acme", &format!("member-{index}"), Role::Member).await);
    }
    keys
}

async fn live_in_tenant(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes WHERE tenant = $1
         AND state IN ('PENDING', 'CREATING', 'READY', 'RUNNING')",
    )
    .bind(tenant)
    .fetch_one(&app.pg().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn concurrent_cold_creates_of_many_owners_stop_exactly_at_the_tenant_limit() {
    let app = TestApp::spawn_with(|config| {
        config.sandbox.max_live_per_owner = 4;
        config.sandbox.max_live_per_tenant = 7;
        config.sandbox.tenant_live_limits.insert("globex".into(), 1);
    })
    .await;
    let owners = members(&app, 4).await;
    // 16 creates, at most 4 per owner: 16 would fit the owner quotas, only 7 the tenant's.
    let (created, subjects) = concurrent_creates(&app, &owners, 4).await;
    assert_eq!(created, 7, "refusals: {subjects:?}");
    assert_eq!(live_in_tenant(&app, "acme").await, 7);
    assert_eq!(subjects.len(), 9);
    assert!(subjects.iter().all(|s| s == "tenant:acme"), "{subjects:?}");
    let status = app.owner().create_sandbox(create_request("one-more")).await.unwrap_err();
    assert!(status.message().contains("max_live_per_tenant"), "{}", status.message());

    // The owner's quota still holds beside it, and still says so.
    let app_small = TestApp::spawn_with(|config| {
        config.sandbox.max_live_per_owner = 2;
        config.sandbox.max_live_per_tenant = 100;
    })
    .await;
    let owners = members(&app_small, 2).await;
    let (created, subjects) = concurrent_creates(&app_small, &owners, 5).await;
    assert_eq!(created, 4);
    assert!(subjects.iter().all(|s| s.starts_with("owner:member-")), "{subjects:?}");

    // A per-tenant override: globex may hold only one.
    let globex = app.key_for("globex", "gina", Role::Owner).await;
    app.control(Some(&globex)).create_sandbox(create_request("g1")).await.unwrap();
    let status = app.control(Some(&globex)).create_sandbox(create_request("g2")).await.unwrap_err();
    let quota = status.get_details_quota_failure().expect("QuotaFailure details");
    assert_eq!(quota.violations[0].subject, "tenant:globex");
}

#[tokio::test]
async fn concurrent_warm_claims_stop_exactly_at_the_tenant_limit() {
    let (app, _templates) = common::pooled_app(12, 12, |config| {
        config.sandbox.max_live_per_owner = 10;
        config.sandbox.max_live_per_tenant = 5;
    })
    .await;
    let pg = app.pg().await;
    eventually("12 ready pool members", Duration::from_secs(60), || {
        let pg = pg.clone();
        async move {
            let ready: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sandboxes WHERE state = 'READY' AND tenant = ''",
            )
            .fetch_one(&pg)
            .await
            .unwrap();
            ready == 12
        }
    })
    .await;
    // Every create can be served from the pool; the tenant limit alone stops them.
    let owners = members(&app, 3).await;
    let (created, subjects) = concurrent_creates(&app, &owners, 4).await;
    assert_eq!(created, 5, "refusals: {subjects:?}");
    assert!(subjects.iter().all(|s| s == "tenant:acme"), "{subjects:?}");
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes WHERE tenant = 'acme' AND state = 'RUNNING' AND from_pool",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(claimed, 5, "all five came from the pool");
    assert_eq!(live_in_tenant(&app, "acme").await, 5);
}
