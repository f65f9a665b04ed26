//! Two requests meeting in the database, and PostgreSQL conditions a caller can act on: no
//! deadlock between transitions and route changes (one lock order), and deadlocks, statement
//! timeouts and killed connections reaching the caller with a retryable code, never INTERNAL.

mod common;

use std::time::Duration;

use common::{TestApp, create_request, destroy_request, error_reason};
use sandboxd::proto::{RegisterGuildRequest, UnregisterGuildRequest};
use tonic::Code;

async fn deadlocks(pg: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn destroys_and_route_changes_of_one_tenant_never_deadlock() {
    let app = TestApp::spawn_with(|config| {
        config.sandbox.max_live_per_owner = 100;
        config.sandbox.max_live_per_tenant = 0;
    })
    .await;
    let pg = app.pg().await;
    let before = deadlocks(&pg).await;
    // 50 routed sandboxes, and a second guild per sandbox to register and unregister meanwhile.
    let mut sandboxes = Vec::new();
    let mut routing = app.routing(Some(&app.owner_key));
    for index in 0..50 {
        let id = app
            .owner()
            .create_sandbox(create_request(&format!("routed-{index}")))
            .await
            .unwrap()
            .into_inner()
            .sandbox_id;
        let guild = RegisterGuildRequest {
            guild_id: format!("{}", 10_000 + index),
            sandbox_id: id.clone(),
        };
        routing.register_guild(guild).await.unwrap();
        sandboxes.push(id);
    }
    let destroys = sandboxes.iter().map(|id| {
        let mut control = app.owner();
        let request = destroy_request(id);
        async move { control.destroy_sandbox(request).await.map(|_| ()) }
    });
    let registers = sandboxes.iter().enumerate().map(|(index, id)| {
        let mut routing = app.routing(Some(&app.owner_key));
        let request = RegisterGuildRequest {
            guild_id: format!("{}", 20_000 + index),
            sandbox_id: id.clone(),
        };
        async move { routing.register_guild(request).await.map(|_| ()) }
    });
    let unregisters = (0..50).map(|index| {
        let mut routing = app.routing(Some(&app.owner_key));
        let request = UnregisterGuildRequest { guild_id: format!("{}", 10_000 + index) };
        async move { routing.unregister_guild(request).await.map(|_| ()) }
    });
    let (destroyed, registered, unregistered) = tokio::join!(
        futures::future::join_all(destroys),
        futures::future::join_all(registers),
        futures::future::join_all(unregisters)
    );
    let all: Vec<_> = destroyed.iter().chain(&registered).chain(&unregistered).collect();
    let internal: Vec<_> = all
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::Internal)
        .collect();
    assert!(internal.is_empty(), "INTERNAL answers: {internal:?}");
    assert!(destroyed.iter().all(Result::is_ok), "every destroy succeeds: {destroyed:?}");
    // A registration that lost the race to its sandbox's destroy is refused for the state.
    for refused in registered.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    assert_eq!(deadlocks(&pg).await - before, 0, "PostgreSQL detected deadlocks");
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM guild_routes").fetch_one(&pg).await.unwrap();
    assert_eq!(left, 0, "no route outlives its sandbox");
}

#[tokio::test]
async fn a_statement_timeout_is_deadline_exceeded() {
    let app = TestApp::spawn_with(|config| {
        config.database.statement_timeout = Duration::from_millis(200);
    })
    .await;
    let sandbox = app.owner().create_sandbox(create_request("held")).await.unwrap().into_inner();
    // Another session holds the sandbox row, so the destroy's lock waits past the timeout.
    let mut holder = common::hold_row_lock(&app.database_url, &sandbox.sandbox_id).await;
    let status =
        app.owner().destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_reason(&status), "DEPENDENCY_TIMEOUT");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    // Nothing was lost: the sandbox is still running and a retry destroys it.
    let got =
        app.owner().get_sandbox(common::by_id(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(got.state(), sandboxd::proto::SandboxState::Running);
    app.owner().destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.unwrap();
}

#[tokio::test]
async fn a_killed_database_connection_is_unavailable_and_the_next_call_works() {
    let app = TestApp::spawn_with(|config| {
        config.database.statement_timeout = Duration::from_secs(30);
    })
    .await;
    let sandbox = app.owner().create_sandbox(create_request("killed")).await.unwrap().into_inner();
    let mut holder = common::hold_row_lock(&app.database_url, &sandbox.sandbox_id).await;
    let mut control = app.owner();
    let request = destroy_request(&sandbox.sandbox_id);
    let destroy = tokio::spawn(async move { control.destroy_sandbox(request).await });
    // The destroy's backend waits on the row lock; an administrator terminates it.
    let pg = app.pg().await;
    common::eventually("the destroy to wait on the row lock", Duration::from_secs(10), || async {
        common::backends_waiting(&pg, "%FOR UPDATE%").await.len() == 1
    })
    .await;
    for pid in common::backends_waiting(&pg, "%FOR UPDATE%").await {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&pg).await.unwrap();
    }
    let status = destroy.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_reason(&status), "DEPENDENCY_UNAVAILABLE");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    app.owner().destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.expect("a retry works");
}
