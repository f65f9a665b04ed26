//! AcquireLock, RenewLock and ReleaseLock against real Redis: exclusion, fencing tokens that
//! only grow, expiry and renewal, owner checks, tenant scoping, and many callers at once.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, error_reason};
use sandboxd::{
    auth::{Principal, Role},
    proto::{AcquireLockRequest, Lease, ReleaseLockRequest, RenewLockRequest},
};
use tonic::Code;

fn duration(millis: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    })
}

fn acquire(resource: &str, ttl_ms: u64, wait_ms: u64) -> AcquireLockRequest {
    AcquireLockRequest {
        resource: resource.into(),
        ttl: duration(ttl_ms),
        wait: duration(wait_ms),
        owner: "test".into(),
    }
}

fn release(lease: &Lease) -> ReleaseLockRequest {
    ReleaseLockRequest { resource: lease.resource.clone(), owner_token: lease.owner_token.clone() }
}

#[tokio::test]
async fn a_held_lock_excludes_others_until_released_and_tokens_only_grow() {
    let app = TestApp::spawn().await;
    let sync = || app.sync(Some(&app.owner_key));
    let first =
        sync().acquire_lock(acquire("git:repo:main", 30_000, 0)).await.unwrap().into_inner();
    let status = sync().acquire_lock(acquire("git:repo:main", 30_000, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(error_reason(&status), "LOCK_NOT_ACQUIRED");
    assert!(status.message().contains("held by another owner until"), "{}", status.message());

    // Neither a stranger's token nor a made-up one releases or renews it.
    let forged = Lease { owner_token: "0".repeat(32), ..first.clone() };
    assert!(!sync().release_lock(release(&forged)).await.unwrap().into_inner().released);
    let renew = RenewLockRequest {
        resource: first.resource.clone(),
        owner_token: forged.owner_token.clone(),
        ttl: duration(30_000),
    };
    let status = sync().renew_lock(renew).await.unwrap_err();
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (Code::FailedPrecondition, "LOCK_NOT_HELD")
    );
    assert!(sync().acquire_lock(acquire("git:repo:main", 30_000, 0)).await.is_err(), "still held");

    assert!(sync().release_lock(release(&first)).await.unwrap().into_inner().released);
    assert!(
        !sync().release_lock(release(&first)).await.unwrap().into_inner().released,
        "idempotent"
    );
    let second =
        sync().acquire_lock(acquire("git:repo:main", 30_000, 0)).await.unwrap().into_inner();
    assert!(second.fencing_token > first.fencing_token);
    assert_ne!(second.owner_token, first.owner_token);

    // Another tenant's lock of the same name is another lock.
    let bob = app
        .create_key(&Principal {
            tenant: "globex".into(),
            subject: "bob".into(),
            role: Role::Owner,
        })
        .await;
    app.sync(Some(&bob)).acquire_lock(acquire("git:repo:main", 30_000, 0)).await.unwrap();

    // Acquisitions and releases are audited (written in batches, so they appear shortly after).
    let pool = app.pg().await;
    let audited = || async {
        let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT tenant, event_type, details FROM audit_events
             WHERE event_type LIKE 'lock_%' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    common::eventually("the lock events are audited", Duration::from_secs(5), || async {
        audited().await.len() == 4
    })
    .await;
    let events: Vec<(String, String, Option<u64>)> = audited()
        .await
        .into_iter()
        .map(|(tenant, kind, details)| (tenant, kind, details["fencing_token"].as_u64()))
        .collect();
    assert_eq!(
        events,
        [
            ("acme".to_string(), "lock_acquired".to_string(), Some(first.fencing_token)),
            ("acme".to_string(), "lock_released".to_string(), None),
            ("acme".to_string(), "lock_acquired".to_string(), Some(second.fencing_token)),
            ("globex".to_string(), "lock_acquired".to_string(), Some(1)),
        ]
    );
}

#[tokio::test]
async fn leases_expire_unless_renewed_and_a_waiter_gets_the_lock_when_they_do() {
    let app = TestApp::spawn().await;
    let sync = || app.sync(Some(&app.owner_key));
    let held = sync().acquire_lock(acquire("renewed", 600, 0)).await.unwrap().into_inner();
    // Renewed before it runs out, twice: it stays held past its first TTL.
    let started = Instant::now();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let renew = RenewLockRequest {
            resource: held.resource.clone(),
            owner_token: held.owner_token.clone(),
            ttl: duration(600),
        };
        let renewed = sync().renew_lock(renew).await.unwrap().into_inner();
        assert_eq!(renewed.fencing_token, held.fencing_token, "renewing keeps the token");
    }
    assert!(started.elapsed() > Duration::from_millis(600));
    assert!(sync().acquire_lock(acquire("renewed", 600, 0)).await.is_err(), "renewal kept it held");
    // Not renewed again: a waiter gets it once the lease runs out, with a larger token.
    let waited = sync().acquire_lock(acquire("renewed", 30_000, 5_000)).await.unwrap().into_inner();
    assert!(waited.fencing_token > held.fencing_token);
    let renew = RenewLockRequest {
        resource: held.resource.clone(),
        owner_token: held.owner_token.clone(),
        ttl: duration(600),
    };
    let status = sync().renew_lock(renew).await.unwrap_err();
    assert_eq!(error_reason(&status), "LOCK_NOT_HELD", "the stale holder lost it");
}

#[tokio::test]
async fn many_callers_never_hold_one_lock_at_the_same_time() {
    let app = TestApp::spawn().await;
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let client = app.sync(Some(&app.owner_key));
            tokio::spawn(async move {
                let mut client = client;
                let lease =
                    client.acquire_lock(acquire("hot", 10_000, 25_000)).await.unwrap().into_inner();
                let held_from = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
                let held_until = Instant::now();
                assert!(client.release_lock(release(&lease)).await.unwrap().into_inner().released);
                (lease.fencing_token, held_from, held_until)
            })
        })
        .collect();
    let mut holds = Vec::new();
    for caller in callers {
        holds.push(caller.await.unwrap());
    }
    holds.sort_by_key(|(token, _, _)| *token);
    for pair in holds.windows(2) {
        let ((earlier, _, released), (later, acquired, _)) = (pair[0], pair[1]);
        assert!(later > earlier, "tokens are unique and grow");
        assert!(acquired >= released, "token {later} was held while {earlier} still was");
    }
}

#[tokio::test]
async fn bad_lock_requests_name_their_fields() {
    let app = TestApp::spawn().await;
    let bad = AcquireLockRequest {
        resource: String::new(),
        ttl: duration(7_200_000),
        wait: duration(120_000),
        owner: String::new(),
    };
    let status = app.sync(Some(&app.owner_key)).acquire_lock(bad).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["resource", "ttl", "wait"]);
}
