//! Dependencies failing under load, with real processes: a throwaway PostgreSQL and Redis that
//! the test starts, restarts, kills and cuts off while agents create, resolve and destroy.
//! During a fault callers see only retryable codes (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED),
//! never INTERNAL or a panic; afterwards sandboxd is SERVING again by itself, every
//! acknowledged create and destroy holds, and the reconciler leaves nothing half-done.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{TestApp, create_request, destroy_request, eventually, gate::Gate};
use sandboxd::{
    config::SecretUrl,
    dev::{ThrowawayPostgres, ThrowawayRedis},
    proto::{RegisterGuildRequest, ResolveGuildRequest},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// What the agents saw.
#[derive(Default)]
struct Tally {
    errors: BTreeMap<String, u64>,
    created: HashSet<String>,
    destroyed: HashSet<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    agents: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Four agents, each looping create → register a guild → resolve it → destroy.
    fn start(app: &TestApp) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let agents = (0..4)
            .map(|agent| {
                let (mut control, mut routing) = (app.owner(), app.routing(Some(&app.owner_key)));
                let (stop, tally) = (stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let note = |status: tonic::Status| {
                        let key = format!("{:?}", status.code());
                        *tally.lock().unwrap().errors.entry(key).or_default() += 1;
                    };
                    // A call that does not answer within 20 s is a hang, reported as such.
                    let hung =
                        |rpc: &str| tonic::Status::new(tonic::Code::Unknown, format!("{rpc} hung"));
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let guild = format!("{}", 1_000_000 + agent * 100_000 + round);
                        let name = format!("agent-{agent}-{round}");
                        let create = control.create_sandbox(create_request(&name));
                        let created = tokio::time::timeout(Duration::from_secs(20), create).await;
                        let id = match created.unwrap_or_else(|_| Err(hung("CreateSandbox"))) {
                            Ok(created) => created.into_inner().sandbox_id,
                            Err(status) => {
                                note(status);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        tally.lock().unwrap().created.insert(id.clone());
                        let register = RegisterGuildRequest {
                            guild_id: guild.clone(),
                            sandbox_id: id.clone(),
                        };
                        let register = tokio::time::timeout(
                            Duration::from_secs(20),
                            routing.register_guild(register),
                        );
                        if let Err(status) =
                            register.await.unwrap_or_else(|_| Err(hung("RegisterGuild")))
                        {
                            note(status);
                        }
                        let resolve = ResolveGuildRequest { guild_id: guild };
                        let resolve = tokio::time::timeout(
                            Duration::from_secs(20),
                            routing.resolve_guild(resolve),
                        );
                        if let Err(status) =
                            resolve.await.unwrap_or_else(|_| Err(hung("ResolveGuild")))
                        {
                            note(status);
                        }
                        let destroy = tokio::time::timeout(
                            Duration::from_secs(20),
                            control.destroy_sandbox(destroy_request(&id)),
                        );
                        match destroy.await.unwrap_or_else(|_| Err(hung("DestroySandbox"))) {
                            Ok(_) => {
                                tally.lock().unwrap().destroyed.insert(id);
                            }
                            Err(status) => note(status),
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, agents }
    }

    fn created(&self) -> usize {
        self.tally.lock().unwrap().created.len()
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for agent in self.agents {
            agent.await.expect("no agent panicked");
        }
        Arc::try_unwrap(self.tally).ok().unwrap().into_inner().unwrap()
    }
}

struct Rig {
    postgres: ThrowawayPostgres,
    /// sandboxd reaches PostgreSQL through this gate, so the test can cut it off.
    postgres_gate: Gate,
    redis: ThrowawayRedis,
    app: TestApp,
    _dir: tempfile::TempDir,
}

/// sandboxd on its own throwaway PostgreSQL (behind an open gate) and Redis.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let postgres = ThrowawayPostgres::start(&dir.path().join("postgres")).await.unwrap();
    let redis = ThrowawayRedis::start(&dir.path().join("redis")).await.unwrap();
    let postgres_gate = Gate::closed(socket_of(&postgres.url("postgres"))).await;
    postgres_gate.open();
    let database_url = format!("postgres://postgres@{}/postgres", postgres_gate.addr);
    let redis_url = redis.url();
    let app = TestApp::spawn_with(|config| {
        config.database.url = SecretUrl::new(&database_url);
        config.database.acquire_timeout = Duration::from_secs(1);
        config.redis.url = SecretUrl::new(&redis_url);
        config.redis.timeout = Duration::from_millis(500);
        config.server.readiness_interval = Duration::from_millis(100);
        config.reconcile.interval = Duration::from_millis(200);
        config.sandbox.max_live_per_owner = 10_000;
        config.sandbox.max_live_per_tenant = 0;
    })
    .await;
    Rig { postgres, postgres_gate, redis, app, _dir: dir }
}

async fn serving(app: &TestApp) -> bool {
    let request = HealthCheckRequest { service: String::new() };
    let check = tokio::time::timeout(Duration::from_secs(5), app.health().check(request)).await;
    matches!(check, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving)
}

/// Waits until `count` more creates were acknowledged (the load really runs).
async fn more_creates(load: &Load, count: usize) {
    let target = load.created() + count;
    eventually("creates to be acknowledged", Duration::from_secs(30), || async {
        load.created() >= target
    })
    .await;
}

/// Everything after the fault: retryable codes only, SERVING again, acknowledged work holds,
/// and nothing is left half-done or leaked. Prints the fault's report.
async fn check_after(fault: &str, rig: &Rig, load: Load, fault_ended: tokio::time::Instant) {
    eventually("SERVING again", Duration::from_secs(30), || serving(&rig.app)).await;
    let recovered_in = fault_ended.elapsed();
    more_creates(&load, 5).await;
    let tally = load.stop().await;
    let allowed = ["Unavailable", "Aborted", "DeadlineExceeded"];
    let unexpected: Vec<_> =
        tally.errors.keys().filter(|code| !allowed.contains(&code.as_str())).collect();
    assert!(unexpected.is_empty(), "{fault}: codes other than retryable ones: {:?}", tally.errors);
    assert!(!tally.errors.is_empty(), "{fault}: the fault was felt by the callers");

    let pg = sqlx::PgPool::connect(&rig.postgres.url("postgres")).await.unwrap();
    eventually("the reconciler to settle every sandbox", Duration::from_secs(30), || async {
        let (unsettled,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM sandboxes WHERE state NOT IN ('RUNNING', 'READY', 'DESTROYED')",
        )
        .fetch_one(&pg)
        .await
        .unwrap();
        unsettled == 0
    })
    .await;
    for id in &tally.created {
        let state: String = sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pg)
            .await
            .unwrap_or_else(|_| panic!("{fault}: acknowledged create {id} was lost"));
        if tally.destroyed.contains(id) {
            assert_eq!(state, "DESTROYED", "{fault}: acknowledged destroy of {id} was lost");
        }
    }
    let (leaked,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_namespace n JOIN sandboxes s ON s.id = substr(n.nspname, 9)::uuid
         WHERE n.nspname ~ '^sandbox_[0-9a-f]{32}$' AND s.state = 'DESTROYED'",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "{fault}: schemas of destroyed sandboxes");
    eprintln!(
        "FAULT REPORT {fault}: errors {:?}; SERVING again {recovered_in:?} after the fault ended; \
         {} creates and {} destroys acknowledged, all held",
        tally.errors,
        tally.created.len(),
        tally.destroyed.len()
    );
    assert!(
        recovered_in < Duration::from_secs(5),
        "{fault}: SERVING again only after {recovered_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load() {
    let rig = rig().await;
    let load = Load::start(&rig.app);
    more_creates(&load, 5).await;
    let restart = tokio::task::block_in_place(|| rig.postgres.restart());
    assert!(restart.is_ok(), "{restart:?}");
    let ended = tokio::time::Instant::now();
    check_after("postgres restart (pg_ctl restart -m fast)", &rig, load, ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let mut rig = rig().await;
    let load = Load::start(&rig.app);
    more_creates(&load, 5).await;
    rig.redis.kill().await.unwrap();
    // Down long enough for the probes and callers to notice.
    eventually("sandboxd to notice Redis is gone", Duration::from_secs(10), || async {
        !serving(&rig.app).await
    })
    .await;
    rig.redis.start_again().await.unwrap();
    let ended = tokio::time::Instant::now();
    check_after("redis killed and restarted", &rig, load, ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_ten_seconds_under_load() {
    let rig = rig().await;
    let load = Load::start(&rig.app);
    more_creates(&load, 5).await;
    rig.postgres_gate.close();
    tokio::time::sleep(Duration::from_secs(10)).await;
    rig.postgres_gate.open();
    let ended = tokio::time::Instant::now();
    check_after("postgres unreachable for 10 s", &rig, load, ended).await;
}

/// The `host:port` of a `postgres://user@host:port/db` URL.
fn socket_of(url: &str) -> std::net::SocketAddr {
    let host_port = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(host_port).unwrap().next().unwrap()
}
