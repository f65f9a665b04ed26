//! Three `sandboxd serve` processes on one database, as behind a load balancer: a client
//! spreads creates, destroys, resolves and watches over them from six concurrent clients, one
//! replica is killed with SIGKILL while calls to it are in flight, and afterwards nothing
//! acknowledged is lost: every
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

/// What the clients were told, and how the victim's calls went.
#[derive(Default)]
struct Ledger {
    /// Acknowledged creates.
    created: Vec<String>,
    /// Acknowledged destroys.
    destroyed: Vec<String>,
    served_by_victim: usize,
    /// Calls sent to the victim while it was alive that never got an answer: cut by the kill.
    interrupted: usize,
    /// Calls that reached the dead victim and were retried elsewhere.
    refused_by_victim: usize,
}

/// The replicas behind the "load balancer", and the victim's liveness.
struct Cluster {
    replicas: [Control; 3],
    ledger: Mutex<Ledger>,
    killed: std::sync::atomic::AtomicBool,
    /// Calls in flight to the victim (index 0).
    victim_in_flight: tokio::sync::watch::Sender<usize>,
}

impl Cluster {
    /// Sends `call` to replica `first`, then to the next ones while a replica cannot answer
    /// (with the same request, so a create that did land is not repeated).
    async fn call<T, F, Fut>(&self, first: usize, what: &str, call: F) -> T
    where
        F: Fn(Control) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        for attempt in 0..3 {
            let index = (first + attempt) % 3;
            let to_victim = index == 0;
            let alive_when_sent = !self.killed.load(std::sync::atomic::Ordering::SeqCst);
            if to_victim {
                self.victim_in_flight.send_modify(|n| *n += 1);
            }
            let result = call(self.replicas[index].clone()).await;
            if to_victim {
                self.victim_in_flight.send_modify(|n| *n -= 1);
            }
            let mut ledger = self.ledger.lock().unwrap();
            match result {
                Ok(response) => {
                    ledger.served_by_victim += usize::from(to_victim);
                    return response.into_inner();
                }
                Err(status) if retryable(&status) && to_victim && alive_when_sent => {
                    ledger.interrupted += 1
                }
                Err(status) if retryable(&status) => {
                    ledger.refused_by_victim += usize::from(to_victim)
                }
                Err(status) => panic!("{what} failed: {status:?}"),
            }
        }
        panic!("no replica answered {what}")
    }
}

/// One client of the load: creates, resolves and (every other round) destroys.
async fn client(app: Arc<TestApp>, cluster: Arc<Cluster>, worker: usize, rounds: usize) {
    for round in 0..rounds {
        let request = proto::CreateSandboxRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            ..common::create_request(&format!("w{worker}-r{round}"))
        };
        let sandbox = cluster
            .call(worker + round, "create", |mut replica| {
                let request = request.clone();
                async move { replica.create_sandbox(request).await }
            })
            .await;
        cluster.ledger.lock().unwrap().created.push(sandbox.sandbox_id.clone());
        let guild = proto::ResolveGuildRequest {
            guild_id: format!("{}", 100_000_000_000_000_000u64 + (worker * rounds + round) as u64),
        };
        let mut routing = app.routing(Some(&app.owner_key));
        routing.resolve_guild(guild).await.expect("resolves keep working");
        if round % 2 == 0 {
            let id = sandbox.sandbox_id;
            cluster
                .call(worker + round + 1, "destroy", |mut replica| {
                    let request = common::destroy_request(&id);
                    async move { replica.destroy_sandbox(request).await }
                })
                .await;
            cluster.ledger.lock().unwrap().destroyed.push(id);
        }
    }
}

#[tokio::test]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    let app = Arc::new(TestApp::spawn().await);
    let work = tempfile::tempdir().unwrap();
    let (mut victim, victim_client) = replica(&app, work.path(), 0).await;
    let (_b, b) = replica(&app, work.path(), 1).await;
    let (_c, c) = replica(&app, work.path(), 2).await;
    let (seen_b, seen_c) =
        (Arc::new(Mutex::new(Seen::default())), Arc::new(Mutex::new(Seen::default())));
    let watchers = [watch(b.clone(), seen_b.clone()), watch(c.clone(), seen_c.clone())];
    let (victim_in_flight, mut in_flight) = tokio::sync::watch::channel(0);
    let cluster = Arc::new(Cluster {
        replicas: [victim_client, b, c],
        ledger: Mutex::default(),
        killed: Default::default(),
        victim_in_flight,
    });

    // Six clients at once, round robin over the replicas, as behind a load balancer.
    let (workers, rounds) = (6, 12);
    let load: Vec<_> = (0..workers)
        .map(|worker| tokio::spawn(client(app.clone(), cluster.clone(), worker, rounds)))
        .collect();
    // Once the victim has served part of the load, kill it while calls to it are in flight.
    common::eventually("the victim served some calls", Duration::from_secs(60), || {
        let cluster = cluster.clone();
        async move { cluster.ledger.lock().unwrap().served_by_victim >= 8 }
    })
    .await;
    in_flight.wait_for(|calls| *calls > 0).await.unwrap();
    cluster.killed.store(true, std::sync::atomic::Ordering::SeqCst);
    victim.start_kill().expect("SIGKILL the replica");
    victim.wait().await.unwrap();
    for worker in load {
        worker.await.expect("a client of the load");
    }

    let ledger = std::mem::take(&mut *cluster.ledger.lock().unwrap());
    assert!(ledger.served_by_victim >= 8, "the killed replica served part of the load");
    assert!(ledger.interrupted > 0, "the kill cut calls in flight to the victim");
    assert!(
        ledger.refused_by_victim > 0,
        "calls reached the killed replica after it died and were retried"
    );
    assert_eq!(ledger.created.len(), workers * rounds, "every create was acknowledged");

    // Nothing acknowledged is lost: read back through a survivor.
    let pool = app.pg().await;
    for id in &ledger.created {
        let state = common::state_of(&pool, common::uuid_of(id)).await;
        let want = if ledger.destroyed.contains(id) { "DESTROYED" } else { "RUNNING" };
        assert_eq!(state, want, "sandbox {id}");
    }
    // The watchers on the survivors saw every acknowledged create and destroy.
    for (name, seen) in [("B", &seen_b), ("C", &seen_c)] {
        common::eventually(
            &format!("watcher {name} sees every event"),
            Duration::from_secs(30),
            || {
                let seen = seen.clone();
                let (created, destroyed) = (ledger.created.clone(), ledger.destroyed.clone());
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
