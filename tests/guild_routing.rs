//! GuildRouting: registration rules, tenancy, resolve (also in bulk), routes removed with the
//! sandbox, propagation between two replicas (also after a lost LISTEN connection), listing and
//! watch with resume.

mod common;

use std::time::{Duration, Instant};

use common::{Routing, TestApp, create_request, destroy_request, error_reason, violated_fields};
use sandboxd::{
    auth::Role,
    proto::{
        ListGuildRoutesRequest, RegisterGuildRequest, ResolveGuildRequest, ResolveGuildsRequest,
        Route, RouteTarget, SandboxState, UnregisterGuildRequest, WatchGuildRoutesRequest,
        WatchGuildRoutesResponse, guild_routing_client::GuildRoutingClient,
        watch_guild_routes_response::Event,
    },
};
use tonic::{Code, Streaming};

fn register(guild: &str, sandbox_id: &str) -> RegisterGuildRequest {
    RegisterGuildRequest { guild_id: guild.into(), sandbox_id: sandbox_id.into() }
}

async fn resolve(client: &mut Routing, guild: &str) -> Route {
    client
        .resolve_guild(ResolveGuildRequest { guild_id: guild.into() })
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap()
}

async fn running_sandbox(app: &TestApp, name: &str) -> String {
    app.owner().create_sandbox(create_request(name)).await.unwrap().into_inner().sandbox_id
}

#[tokio::test]
async fn registration_rules() {
    let app = TestApp::spawn_with(|config| config.routing.max_guilds_per_sandbox = 2).await;
    let mut routing = app.routing(Some(&app.owner_key));
    let first = running_sandbox(&app, "r1").await;
    let second = running_sandbox(&app, "r2").await;

    let route =
        routing.register_guild(register("81384788765712384", &first)).await.unwrap().into_inner();
    assert_eq!(
        (route.guild_id.as_str(), route.sandbox_id.as_str()),
        ("81384788765712384", first.as_str())
    );
    assert_eq!(route.registered_by, "owner:alice");
    // The same pair again is a no-op success.
    let again =
        routing.register_guild(register("81384788765712384", &first)).await.unwrap().into_inner();
    assert_eq!(again.create_time, route.create_time);
    // Another sandbox for the same guild is refused.
    let taken = routing.register_guild(register("81384788765712384", &second)).await.unwrap_err();
    assert_eq!(
        (taken.code(), error_reason(&taken).as_str()),
        (Code::AlreadyExists, "GUILD_ALREADY_REGISTERED")
    );

    routing.register_guild(register("2", &first)).await.unwrap();
    let full = routing.register_guild(register("3", &first)).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "at most 2 guilds per sandbox here");

    for bad in ["", "0", "007", "-5", "18446744073709551616", "12x"] {
        let status = routing.register_guild(register(bad, &first)).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["guild_id"], "{bad:?}");
    }
    let both_bad = routing.register_guild(register("x", "y")).await.unwrap_err();
    assert_eq!(violated_fields(&both_bad), ["guild_id", "sandbox_id"]);

    app.owner().destroy_sandbox(destroy_request(&second)).await.unwrap();
    let destroyed = routing.register_guild(register("4", &second)).await.unwrap_err();
    assert_eq!(
        (destroyed.code(), error_reason(&destroyed).as_str()),
        (Code::FailedPrecondition, "SANDBOX_NOT_RUNNING")
    );

    assert!(
        routing
            .unregister_guild(UnregisterGuildRequest { guild_id: "2".into() })
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    assert!(
        !routing
            .unregister_guild(UnregisterGuildRequest { guild_id: "2".into() })
            .await
            .unwrap()
            .into_inner()
            .removed
    );

    let audit: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM audit_events WHERE event_type LIKE 'guild_%' ORDER BY id",
    )
    .fetch_all(&app.pg().await)
    .await
    .unwrap();
    assert_eq!(audit, ["guild_registered", "guild_registered", "guild_unregistered"]);
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_routes_but_routers_resolve_all() {
    let app = TestApp::spawn().await;
    let ours = running_sandbox(&app, "ours").await;
    app.routing(Some(&app.owner_key)).register_guild(register("1001", &ours)).await.unwrap();

    let globex = app.key_for("globex", "gina", Role::Owner).await;
    let mut theirs = app.routing(Some(&globex));
    let status = theirs.register_guild(register("1002", &ours)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "another tenant's sandbox does not exist for them");
    let their_sandbox = app
        .control(Some(&globex))
        .create_sandbox(create_request("theirs"))
        .await
        .unwrap()
        .into_inner();
    let status =
        theirs.register_guild(register("1001", &their_sandbox.sandbox_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(!status.message().contains(&ours), "the other tenant's sandbox id is not revealed");
    assert_eq!(resolve(&mut theirs, "1001").await.target(), RouteTarget::Default);
    let removed =
        theirs.unregister_guild(UnregisterGuildRequest { guild_id: "1001".into() }).await.unwrap();
    assert!(!removed.into_inner().removed);

    let router_key = app.key_for("edge", "router-1", Role::Router).await;
    let mut router = app.routing(Some(&router_key));
    let route = resolve(&mut router, "1001").await;
    assert_eq!(route.target(), RouteTarget::Sandbox);
    assert_eq!(route.sandbox_id, ours);
    assert_eq!(route.sandbox_state(), SandboxState::Running);
    assert_eq!(route.schema, format!("sandbox_{}", ours.replace('-', "")));
    assert_eq!(route.redis_prefix, format!("sandbox:{{{ours}}}:"));
    assert_eq!(route.subject_prefix, format!("sandbox.{ours}."));
    let status = router.register_guild(register("1003", &ours)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "routers manage nothing");
}

#[tokio::test]
async fn resolve_many_and_resolve_after_destroy_is_default() {
    let app = TestApp::spawn().await;
    let sandbox = running_sandbox(&app, "many").await;
    let mut routing = app.routing(Some(&app.owner_key));
    routing.register_guild(register("500", &sandbox)).await.unwrap();

    let ids: Vec<String> = (499..=501).map(|id| id.to_string()).collect();
    let routes = routing
        .resolve_guilds(ResolveGuildsRequest { guild_ids: ids.clone() })
        .await
        .unwrap()
        .into_inner()
        .routes;
    let targets: Vec<(String, RouteTarget)> =
        routes.iter().map(|r| (r.guild_id.clone(), r.target())).collect();
    assert_eq!(
        targets,
        [
            ("499".into(), RouteTarget::Default),
            ("500".into(), RouteTarget::Sandbox),
            ("501".into(), RouteTarget::Default)
        ]
    );
    let too_many =
        ResolveGuildsRequest { guild_ids: (1..=1001).map(|id| id.to_string()).collect() };
    assert_eq!(routing.resolve_guilds(too_many).await.unwrap_err().code(), Code::InvalidArgument);
    let thousand =
        ResolveGuildsRequest { guild_ids: (1..=1000).map(|id| id.to_string()).collect() };
    assert_eq!(routing.resolve_guilds(thousand).await.unwrap().into_inner().routes.len(), 1000);
    let bad = ResolveGuildsRequest { guild_ids: vec!["1".into(), "zz".into()] };
    assert_eq!(violated_fields(&routing.resolve_guilds(bad).await.unwrap_err()), ["guild_ids[1]"]);

    app.owner().destroy_sandbox(destroy_request(&sandbox)).await.unwrap();
    assert_eq!(
        resolve(&mut routing, "500").await.target(),
        RouteTarget::Default,
        "immediately on this replica"
    );
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM guild_routes")
        .fetch_one(&app.pg().await)
        .await
        .unwrap();
    assert_eq!(left, 0, "the route went with the state change");
}

/// Polls `guild` on `client` until it resolves to `want`; fails after `limit`.
async fn resolves_within(
    client: &mut Routing,
    guild: &str,
    want: RouteTarget,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if resolve(client, guild).await.target() == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{guild} did not resolve to {want:?} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn changes_propagate_between_replicas_within_a_second() {
    // A long safety-net interval proves propagation comes from NOTIFY, not from polling.
    let app =
        TestApp::spawn_with(|config| config.routing.sync_interval = Duration::from_secs(3600))
            .await;
    let (replica, _) = app.replica().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", replica.local_addr))
        .unwrap()
        .connect_lazy();
    let mut on_replica: Routing =
        GuildRoutingClient::with_interceptor(channel, common::Bearer(Some(app.owner_key.clone())));
    let mut on_first = app.routing(Some(&app.owner_key));

    let sandbox = running_sandbox(&app, "shared").await;
    on_first.register_guild(register("77", &sandbox)).await.unwrap();
    resolves_within(&mut on_replica, "77", RouteTarget::Sandbox, Duration::from_secs(1)).await;

    // Lose the replica's LISTEN connection, change a route meanwhile: the replica rebuilds.
    let pg = app.pg().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "found the LISTEN connections");
    on_first.register_guild(register("78", &sandbox)).await.unwrap();
    resolves_within(&mut on_replica, "78", RouteTarget::Sandbox, Duration::from_secs(3)).await;

    app.owner().destroy_sandbox(destroy_request(&sandbox)).await.unwrap();
    resolves_within(&mut on_replica, "77", RouteTarget::Default, Duration::from_secs(1)).await;
    replica.shutdown().await.unwrap();
}

async fn next(stream: &mut Streaming<WatchGuildRoutesResponse>) -> WatchGuildRoutesResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap()
}

fn change_of(response: &WatchGuildRoutesResponse) -> (i32, String) {
    match &response.event {
        Some(Event::Change(change)) => {
            (change.kind, change.route.as_ref().unwrap().guild_id.clone())
        }
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_changes_and_resumes_without_loss() {
    let app = TestApp::spawn().await;
    let sandbox = running_sandbox(&app, "watched").await;
    let mut routing = app.routing(Some(&app.owner_key));
    routing.register_guild(register("10", &sandbox)).await.unwrap();
    let router_key = app.key_for("edge", "router-1", Role::Router).await;
    let mut router = app.routing(Some(&router_key));

    let mut stream =
        router.watch_guild_routes(WatchGuildRoutesRequest::default()).await.unwrap().into_inner();
    let snapshot = next(&mut stream).await;
    let Some(Event::Snapshot(batch)) = &snapshot.event else { panic!("snapshot first") };
    assert!(batch.last_batch);
    assert_eq!(batch.routes.iter().map(|r| r.guild_id.as_str()).collect::<Vec<_>>(), ["10"]);
    assert!(!snapshot.resume_token.is_empty());

    routing.register_guild(register("11", &sandbox)).await.unwrap();
    let added = next(&mut stream).await;
    assert_eq!(change_of(&added), (1, "11".into()));
    drop(stream);

    // While the router is away: one unregister, then the sandbox goes (removing the rest).
    routing.unregister_guild(UnregisterGuildRequest { guild_id: "11".into() }).await.unwrap();
    app.owner().destroy_sandbox(destroy_request(&sandbox)).await.unwrap();

    let resumed = WatchGuildRoutesRequest { resume_token: added.resume_token.clone() };
    let mut stream = router.watch_guild_routes(resumed).await.unwrap().into_inner();
    let mut missed = vec![change_of(&next(&mut stream).await), change_of(&next(&mut stream).await)];
    missed.sort();
    assert_eq!(
        missed,
        [(2, "10".to_string()), (2, "11".to_string())],
        "both removals, nothing lost"
    );

    let bad = WatchGuildRoutesRequest { resume_token: "bogus".into() };
    assert_eq!(router.watch_guild_routes(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn list_routes_pages_and_filters_by_sandbox() {
    let app = TestApp::spawn_with(|config| config.routing.max_guilds_per_sandbox = 100).await;
    let first = running_sandbox(&app, "l1").await;
    let second = running_sandbox(&app, "l2").await;
    let mut routing = app.routing(Some(&app.owner_key));
    for guild in 1..=5 {
        routing.register_guild(register(&guild.to_string(), &first)).await.unwrap();
    }
    routing.register_guild(register("9", &second)).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request =
            ListGuildRoutesRequest { sandbox_id: first.clone(), page_size: 2, page_token: token };
        let page = routing.list_guild_routes(request).await.unwrap().into_inner();
        seen.extend(page.guild_routes.into_iter().map(|r| r.guild_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["1", "2", "3", "4", "5"]);
    let all =
        routing.list_guild_routes(ListGuildRoutesRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.guild_routes.len(), 6);

    let health = app
        .owner()
        .get_sandbox_health(sandboxd::proto::GetSandboxHealthRequest { sandbox_id: first })
        .await
        .unwrap()
        .into_inner();
    let routing_check = health.checks.iter().find(|c| c.name == "routing").unwrap();
    assert!(routing_check.detail.starts_with("5 guild routes"), "{routing_check:?}");
}
