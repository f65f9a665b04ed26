//! Who may do what: every RPC called by each role (owner, admin, member, router), checked
//! against the table in the README ("Access control"), row by row. Then key revocation on two
//! replicas, key expiry and keys scoped to a role.

mod common;

use std::time::{Duration, Instant};

use common::{Bearer, TestApp};
use futures::{FutureExt, future::BoxFuture};
use sandboxd::{
    auth::{self, Principal, Role},
    proto::{
        self, guild_routing_client::GuildRoutingClient,
        sandbox_control_client::SandboxControlClient, sync_service_client::SyncServiceClient,
    },
};
use tonic::{Code, Status};

/// What a role gets from an RPC on a sandbox of the tenant that is not its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Authorized: the call ran (OK, or a domain answer such as FAILED_PRECONDITION for a
    /// sandbox without a runtime).
    Yes,
    /// PERMISSION_DENIED: the role may not call this RPC.
    Denied,
    /// NOT_FOUND: a member calling about another subject's sandbox (no existence leak).
    Hidden,
}
use Access::{Denied, Hidden, Yes};

fn access_of(result: &Result<(), Status>) -> Result<Access, String> {
    match result {
        Ok(()) => Ok(Yes),
        Err(status) => match status.code() {
            Code::PermissionDenied => Ok(Denied),
            Code::NotFound => Ok(Hidden),
            Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => Ok(Yes),
            _ => Err(format!("{:?}: {}", status.code(), status.message())),
        },
    }
}

struct Clients {
    control: SandboxControlClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
    routing: GuildRoutingClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
    sync: SyncServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
}

type Call = Box<dyn Fn(Clients, String) -> BoxFuture<'static, Result<(), Status>>>;

/// The table: RPC, then what owner, admin, member and router get, calling about sandbox
/// `target` (the owner's; members are other subjects).
fn table() -> Vec<(&'static str, [Access; 4], Call)> {
    let mut rows: Vec<(&'static str, [Access; 4], Call)> = Vec::new();
    macro_rules! row {
        ($rpc:literal, $access:expr, |$c:ident, $target:ident| $call:expr) => {
            rows.push((
                $rpc,
                $access,
                Box::new(|mut $c: Clients, $target: String| {
                    async move { $call.await.map(|_| ()) }.boxed()
                }),
            ))
        };
    }
    let sandbox_rpc = [Yes, Yes, Hidden, Denied];
    row!("CreateSandbox", [Yes, Yes, Yes, Denied], |c, _t| c.control.create_sandbox(
        proto::CreateSandboxRequest { template: "discord-guild".into(), ..Default::default() }
    ));
    row!("EnsureSandbox", [Yes, Yes, Yes, Denied], |c, _t| c.control.ensure_sandbox(
        proto::EnsureSandboxRequest {
            template: "discord-guild".into(),
            name: format!("ensured-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        }
    ));
    row!("GetSandbox", sandbox_rpc, |c, t| c.control.get_sandbox(common::by_id(&t)));
    row!("ListSandboxes", [Yes, Yes, Yes, Denied], |c, _t| c
        .control
        .list_sandboxes(proto::ListSandboxesRequest::default()));
    row!("ExtendSandbox", sandbox_rpc, |c, t| c.control.extend_sandbox(
        proto::ExtendSandboxRequest {
            sandbox_id: t,
            extension: Some(proto::extend_sandbox_request::Extension::TtlExtension(
                prost_types::Duration { seconds: 60, nanos: 0 },
            )),
            ..Default::default()
        }
    ));
    row!("ReleaseSandbox", sandbox_rpc, |c, t| c
        .control
        .release_sandbox(proto::ReleaseSandboxRequest { sandbox_id: t, ..Default::default() }));
    row!("GetSandboxHealth", sandbox_rpc, |c, t| c
        .control
        .get_sandbox_health(proto::GetSandboxHealthRequest { sandbox_id: t }));
    row!("GetConnectionDetails", sandbox_rpc, |c, t| c
        .control
        .get_connection_details(proto::GetConnectionDetailsRequest { sandbox_id: t }));
    row!("GetSchemaStats", sandbox_rpc, |c, t| c
        .control
        .get_schema_stats(proto::GetSchemaStatsRequest { sandbox_id: t }));
    row!("ListAuditEvents", sandbox_rpc, |c, t| c
        .control
        .list_audit_events(proto::ListAuditEventsRequest { sandbox_id: t, ..Default::default() }));
    row!("WatchSandboxes", sandbox_rpc, |c, t| c
        .control
        .watch_sandboxes(proto::WatchSandboxesRequest { sandbox_id: t, ..Default::default() }));
    row!("Exec", sandbox_rpc, |c, t| c.control.exec(proto::ExecRequest {
        sandbox_id: t,
        command: vec!["true".into()],
        ..Default::default()
    }));
    row!("RunHook", sandbox_rpc, |c, t| c.control.run_hook(proto::RunHookRequest {
        sandbox_id: t,
        hook: "message".into(),
        ..Default::default()
    }));
    row!("ListTemplates", [Yes, Yes, Yes, Yes], |c, _t| c
        .control
        .list_templates(proto::ListTemplatesRequest {}));
    row!("GetPoolStatus", [Yes, Yes, Yes, Denied], |c, _t| c
        .control
        .get_pool_status(proto::GetPoolStatusRequest::default()));
    row!("RegisterGuild", sandbox_rpc, |c, t| c.routing.register_guild(
        proto::RegisterGuildRequest { guild_id: "111111111111111111".into(), sandbox_id: t }
    ));
    row!("ResolveGuild", [Yes, Yes, Yes, Yes], |c, _t| c
        .routing
        .resolve_guild(proto::ResolveGuildRequest { guild_id: "111111111111111111".into() }));
    row!("ResolveGuilds", [Yes, Yes, Yes, Yes], |c, _t| c.routing.resolve_guilds(
        proto::ResolveGuildsRequest { guild_ids: vec!["111111111111111111".into()] }
    ));
    row!("ListGuildRoutes", sandbox_rpc_routes(), |c, t| c
        .routing
        .list_guild_routes(proto::ListGuildRoutesRequest { sandbox_id: t, ..Default::default() }));
    row!("WatchGuildRoutes", [Yes, Yes, Denied, Yes], |c, _t| c
        .routing
        .watch_guild_routes(proto::WatchGuildRoutesRequest::default()));
    // Idempotent: a member's call about another subject's route answers `removed = false`
    // (as for a guild routed nowhere) and removes nothing; checked below.
    row!("UnregisterGuild", [Yes, Yes, Yes, Denied], |c, _t| c
        .routing
        .unregister_guild(proto::UnregisterGuildRequest { guild_id: "222222222222222222".into() }));
    row!("PushWorkspace", sandbox_rpc, |c, t| c
        .sync
        .push_workspace(proto::PushWorkspaceRequest { sandbox_id: t, ..Default::default() }));
    row!("PullWorkspace", sandbox_rpc, |c, t| c
        .sync
        .pull_workspace(proto::PullWorkspaceRequest { sandbox_id: t, ..Default::default() }));
    row!("GetSyncStatus", sandbox_rpc, |c, t| c
        .sync
        .get_sync_status(proto::GetSyncStatusRequest { sandbox_id: t }));
    row!("ListFiles", sandbox_rpc, |c, t| c
        .sync
        .list_files(proto::ListFilesRequest { sandbox_id: t, ..Default::default() }));
    row!("ReadFile", sandbox_rpc, |c, t| c.sync.read_file(proto::ReadFileRequest {
        sandbox_id: t,
        path: "a.txt".into(),
        ..Default::default()
    }));
    row!("WriteFile", sandbox_rpc, |c, t| c.sync.write_file(futures::stream::iter([
        proto::WriteFileRequest {
            content: Some(proto::write_file_request::Content::Header(proto::WriteFileHeader {
                sandbox_id: t,
                path: "a.txt".into(),
            })),
        }
    ])));
    row!("GitStatus", sandbox_rpc, |c, t| c
        .sync
        .git_status(proto::GitStatusRequest { sandbox_id: t }));
    row!("GitDiff", sandbox_rpc, |c, t| c
        .sync
        .git_diff(proto::GitDiffRequest { sandbox_id: t, ..Default::default() }));
    row!("GitPush", sandbox_rpc, |c, t| c
        .sync
        .git_push(proto::GitPushRequest { sandbox_id: t, ..Default::default() }));
    row!("GitPull", sandbox_rpc, |c, t| c
        .sync
        .git_pull(proto::GitPullRequest { sandbox_id: t, ..Default::default() }));
    row!("AcquireLock", [Yes, Yes, Yes, Denied], |c, _t| c.sync.acquire_lock(
        proto::AcquireLockRequest {
            resource: format!("matrix-{}", uuid::Uuid::new_v4()),
            ..Default::default()
        }
    ));
    row!("RenewLock", [Yes, Yes, Yes, Denied], |c, _t| c.sync.renew_lock(
        proto::RenewLockRequest {
            resource: "matrix".into(),
            owner_token: "0".repeat(32),
            ..Default::default()
        }
    ));
    row!("ReleaseLock", [Yes, Yes, Yes, Denied], |c, _t| c.sync.release_lock(
        proto::ReleaseLockRequest { resource: "matrix".into(), owner_token: "0".repeat(32) }
    ));
    row!("DestroySandbox", sandbox_rpc, |c, t| c
        .control
        .destroy_sandbox(common::destroy_request(&t)));
    rows
}

/// ListGuildRoutes filtered by another subject's sandbox: members get NOT_FOUND, the router
/// role lists routes of every tenant.
fn sandbox_rpc_routes() -> [Access; 4] {
    [Yes, Yes, Hidden, Yes]
}

const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Router];

#[tokio::test]
async fn every_rpc_allows_exactly_the_roles_of_the_table() {
    let app = TestApp::spawn_with(|config| config.sandbox.max_live_per_owner = 50).await;
    let keys = [
        app.owner_key.clone(),
        app.key_for("acme", "adam", Role::Admin).await,
        app.key_for("acme", "mia", Role::Member).await,
        app.key_for("routers", "rita", Role::Router).await,
    ];
    let clients = |key: &str| Clients {
        control: app.control(Some(key)),
        routing: app.routing(Some(key)),
        sync: app.sync(Some(key)),
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (rpc, expected, call) in table() {
        for (index, role) in ROLES.iter().enumerate() {
            // A fresh sandbox of the owner for each call, so a destroy or extend by one role
            // does not change what the next role sees.
            let target = app
                .owner()
                .create_sandbox(common::create_request(&format!(
                    "t-{}",
                    uuid::Uuid::new_v4().simple()
                )))
                .await
                .unwrap()
                .into_inner()
                .sandbox_id;
            if rpc == "UnregisterGuild" {
                let register = proto::RegisterGuildRequest {
                    guild_id: "222222222222222222".into(),
                    sandbox_id: target.clone(),
                };
                app.routing(Some(&app.owner_key)).register_guild(register).await.unwrap();
            }
            let result = call(clients(&keys[index]), target.clone()).await;
            checked += 1;
            if rpc == "UnregisterGuild" && *role == Role::Member {
                let resolve = proto::ResolveGuildRequest { guild_id: "222222222222222222".into() };
                let route = app.routing(Some(&app.owner_key)).resolve_guild(resolve).await.unwrap();
                let routed_to = route.into_inner().route.map(|route| route.sandbox_id);
                assert_eq!(routed_to, Some(target.clone()), "a member removed another's route");
            }
            match access_of(&result) {
                Ok(got) if got == expected[index] => {}
                Ok(got) => failures.push(format!(
                    "{rpc} as {}: expected {:?}, got {got:?} ({result:?})",
                    role.as_str(),
                    expected[index]
                )),
                Err(other) => failures.push(format!("{rpc} as {}: {other}", role.as_str())),
            }
            // A released sandbox went back to its pool and is no longer the owner's.
            match app.owner().destroy_sandbox(common::destroy_request(&target)).await {
                Err(status) if status.code() != Code::NotFound || rpc != "ReleaseSandbox" => {
                    panic!("cleaning up after {rpc} as {}: {status:?}", role.as_str())
                }
                _ => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 4 * 30, "the whole table ran ({checked} cells)");
}

#[tokio::test]
async fn a_member_works_on_its_own_sandboxes_and_sees_no_others() {
    let app = TestApp::spawn().await;
    let mia = app.key_for("acme", "mia", Role::Member).await;
    let mut member = app.control(Some(&mia));
    let own = member.create_sandbox(common::create_request("mine")).await.unwrap().into_inner();
    let theirs =
        app.owner().create_sandbox(common::create_request("theirs")).await.unwrap().into_inner();
    member.get_sandbox(common::by_id(&own.sandbox_id)).await.expect("its own sandbox");
    let listed =
        member.list_sandboxes(proto::ListSandboxesRequest::default()).await.unwrap().into_inner();
    let ids: Vec<_> = listed.sandboxes.iter().map(|s| s.sandbox_id.clone()).collect();
    assert_eq!(ids, std::slice::from_ref(&own.sandbox_id), "only its own sandbox is listed");
    let status = member.get_sandbox(common::by_id(&theirs.sandbox_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The owner sees both.
    let all = app
        .owner()
        .list_sandboxes(proto::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sandboxes.len(), 2);
    member
        .destroy_sandbox(common::destroy_request(&own.sandbox_id))
        .await
        .expect("its own destroy");
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_replica_within_a_second() {
    // A long cache TTL: only the revocation notice can make the key stop working in time.
    let app =
        TestApp::spawn_with(|config| config.auth.key_cache_ttl = Duration::from_secs(300)).await;
    let store = app.server().app.store.clone();
    let principal = Principal { tenant: "acme".into(), subject: "rev".into(), role: Role::Admin };
    let key = auth::create_key(&store, &principal, "to revoke", None).await.unwrap();
    let (replica, _) = app.replica().await;
    let on_replica = SandboxControlClient::with_interceptor(
        tonic::transport::Channel::from_shared(format!("http://{}", replica.local_addr))
            .unwrap()
            .connect_lazy(),
        Bearer(Some(key.key.clone())),
    );
    let mut replicas = [app.control(Some(&key.key)), on_replica];
    for client in &mut replicas {
        client.list_templates(proto::ListTemplatesRequest {}).await.expect("the key works");
    }
    // Revoked behind the servers' back (no notice): both replicas keep trusting their cache,
    // which shows the cache is in play.
    let pool = app.pg().await;
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(key.id)
        .execute(&pool)
        .await
        .unwrap();
    for client in &mut replicas {
        client.list_templates(proto::ListTemplatesRequest {}).await.expect("cached");
    }
    // Revoked as `sandboxd keys revoke` does it.
    let revoked_at = Instant::now();
    assert!(store.revoke_api_key(key.id).await.unwrap());
    for client in &mut replicas {
        common::eventually("the revoked key is refused", Duration::from_secs(1), || {
            let mut client = client.clone();
            async move {
                let result = client.list_templates(proto::ListTemplatesRequest {}).await;
                matches!(result, Err(status) if status.code() == Code::Unauthenticated)
            }
        })
        .await;
    }
    eprintln!("refused on both replicas {:?} after the revocation", revoked_at.elapsed());
    replica.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expiring_key_works_until_its_expiry_and_not_after() {
    let app =
        TestApp::spawn_with(|config| config.auth.key_cache_ttl = Duration::from_secs(300)).await;
    let store = app.server().app.store.clone();
    let principal = Principal { tenant: "acme".into(), subject: "temp".into(), role: Role::Member };
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let key = auth::create_key_expiring(&store, &principal, "short-lived", None, Some(expires_at))
        .await
        .unwrap();
    let mut client = app.control(Some(&key.key));
    client.list_templates(proto::ListTemplatesRequest {}).await.expect("valid before expiry");
    // The expiry is the behaviour under test: wait for the refusal and check when it came.
    common::eventually("the expired key is refused", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { client.list_templates(proto::ListTemplatesRequest {}).await.is_err() }
    })
    .await;
    assert!(chrono::Utc::now() >= expires_at, "refused only after the expiry");
    let status = client.list_templates(proto::ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A key that expires in the past cannot be made.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(auth::create_key_expiring(&store, &principal, "past", None, Some(past)).await.is_err());
}
