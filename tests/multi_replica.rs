//! Three `sandboxd serve` processes on one database, as behind a load balancer: a client
//! spreads creates, destroys, resolves and watches over them, one replica is killed with
//! SIGKILL in the middle of the load, and afterwards nothing acknowledged is lost: every
//! acknowledged create exists, every acknowledged destroy ends DESTROYED, and the watchers
//! connected to the surviving replicas saw every one of those events.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Bearer, TestApp};
use sandboxd::proto::{self, sandbox_control_client::SandboxControlClient};
use tokio::process::{Child, Command};
use tonic::{Code, transport::Channel};

type Control =
    SandboxControlClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `sandboxd serve` process on this test's database and Redis prefix.
async fn replica(app: &TestApp, work: &std::path::Path, index: usize) -> (Child, Control) {
    let port = free_port();
    let dir = work.join(format!("replica-{index}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandboxd"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SANDBOXD_")) {
        command.env_remove(name);
    }
    let settings = BTreeMap::from([
        ("SANDBOXD_DATABASE__URL", app.database_url.clone()),
        ("SANDBOXD_REDIS__URL", app.config.redis.url.expose().to_string()),
        ("SANDBOXD_REDIS__KEY_PREFIX", app.config.redis.key_prefix.clone()),
        ("SANDBOXD_TEMPLATES__DIR", app.config.templates.dir.display().to_string()),
        ("SANDBOXD_RUNTIME__WORKSPACE_ROOT", dir.join("workspaces").display().to_string()),
        ("SANDBOXD_GIT__MIRROR_DIR", dir.join("git").display().to_string()),
        ("SANDBOXD_SANDBOX__MAX_LIVE_PER_OWNER", "1000".into()),
        ("SANDBOXD_SANDBOX__MAX_LIVE_PER_TENANT", "0".into()),
        ("SANDBOXD_SERVER__READINESS_INTERVAL", "100ms".into()),
        ("SANDBOXD_RECONCILE__POOL_REFILL", "false".into()),
    ]);
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .envs(settings)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("sandboxd serve starts");
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    common::eventually("the replica is SERVING", Duration::from_secs(60), || {
        let mut health = health.clone();
        async move {
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            matches!(health.check(request).await, Ok(r) if r.get_ref().status == 1)
        }
    })
    .await;
    let control =
        SandboxControlClient::with_interceptor(channel, Bearer(Some(app.owner_key.clone())));
    (child, control)
}

/// Ids a watcher saw, by event type.
#[derive(Default)]
struct Seen {
    created: HashSet<String>,
    destroyed: HashSet<String>,
}

fn watch(mut client: Control, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = client
            .watch_sandboxes(proto::WatchSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(response)) = stream.message().await {
            let Some(event) = response.event else { continue };
            let Some(sandbox) = event.sandbox else { continue };
            let mut seen = seen.lock().unwrap();
            match proto::SandboxEventType::try_from(event.event_type) {
                Ok(proto::SandboxEventType::Created) => seen.created.insert(sandbox.sandbox_id),
                Ok(proto::SandboxEventType::Destroyed) => seen.destroyed.insert(sandbox.sandbox_id),
                _ => false,
            };
        }
    })
}

/// Whether a failed call may be retried on another replica: the replica is gone or going.
fn retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted)
}

#[tokio::test]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    let app = TestApp::spawn().await;
    let work = tempfile::tempdir().unwrap();
    let (mut victim, victim_client) = replica(&app, work.path(), 0).await;
    let (_b, b) = replica(&app, work.path(), 1).await;
    let (_c, c) = replica(&app, work.path(), 2).await;
    let (seen_b, seen_c) =
        (Arc::new(Mutex::new(Seen::default())), Arc::new(Mutex::new(Seen::default())));
    let watchers = [watch(b.clone(), seen_b.clone()), watch(c.clone(), seen_c.clone())];
    let replicas = [victim_client, b.clone(), c.clone()];

    let mut created = Vec::new();
    let mut destroyed = Vec::new();
    let mut served_by_victim = 0;
    let mut refused_by_victim = 0;
    let rounds = 60;
    for round in 0..rounds {
        if round == rounds / 2 {
            victim.start_kill().expect("SIGKILL the replica");
            victim.wait().await.unwrap();
        }
        // Round robin, as a load balancer would; a call the dead replica cannot answer goes to
        // the next one, with the same request id (so a create that did land is not repeated).
        let request_id = uuid::Uuid::new_v4().to_string();
        let request = proto::CreateSandboxRequest {
            request_id,
            ..common::create_request(&format!("r-{round}"))
        };
        let mut sandbox = None;
        for attempt in 0..3 {
            let index = (round + attempt) % 3;
            match replicas[index].clone().create_sandbox(request.clone()).await {
                Ok(response) => {
                    served_by_victim += usize::from(index == 0);
                    sandbox = Some(response.into_inner());
                    break;
                }
                Err(status) if retryable(&status) => refused_by_victim += usize::from(index == 0),
                Err(status) => panic!("create failed: {status:?}"),
            }
        }
        let sandbox = sandbox.expect("some replica created it");
        created.push(sandbox.sandbox_id.clone());
        let guild = proto::ResolveGuildRequest {
            guild_id: format!("{}", 100_000_000_000_000_000u64 + round as u64),
        };
        let mut routing = app.routing(Some(&app.owner_key));
        routing.resolve_guild(guild).await.expect("resolves keep working");
        if round % 2 == 0 {
            for attempt in 0..3 {
                let index = (round + 1 + attempt) % 3;
                match replicas[index]
                    .clone()
                    .destroy_sandbox(common::destroy_request(&sandbox.sandbox_id))
                    .await
                {
                    Ok(_) => {
                        destroyed.push(sandbox.sandbox_id.clone());
                        break;
                    }
                    Err(status) if retryable(&status) => {
                        refused_by_victim += usize::from(index == 0)
                    }
                    Err(status) => panic!("destroy failed: {status:?}"),
                }
            }
        }
    }
    assert!(served_by_victim > 0, "the killed replica served part of the load before it died");
    assert!(
        refused_by_victim > 0,
        "calls reached the killed replica after it died and were retried"
    );

    // Nothing acknowledged is lost: read back through a survivor.
    let pool = app.pg().await;
    for id in &created {
        let state = common::state_of(&pool, common::uuid_of(id)).await;
        let want = if destroyed.contains(id) { "DESTROYED" } else { "RUNNING" };
        assert_eq!(state, want, "sandbox {id}");
    }
    // The watchers on the survivors saw every acknowledged create and destroy.
    for (name, seen) in [("B", &seen_b), ("C", &seen_c)] {
        common::eventually(
            &format!("watcher {name} sees every event"),
            Duration::from_secs(30),
            || {
                let seen = seen.clone();
                let (created, destroyed) = (created.clone(), destroyed.clone());
                async move {
                    let seen = seen.lock().unwrap();
                    created.iter().all(|id| seen.created.contains(id))
                        && destroyed.iter().all(|id| seen.destroyed.contains(id))
                }
            },
        )
        .await;
    }
    for watcher in watchers {
        watcher.abort();
    }
}
