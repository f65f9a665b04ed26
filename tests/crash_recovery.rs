//! Crashes: `sandboxd serve` runs as a separate process and is killed with SIGKILL in the middle
//! of work, then started again. Once it is SERVING, the reconciler must converge by itself:
//! every sandbox RUNNING, READY or DESTROYED, nothing left without a live sandbox, every
//! acknowledged create kept, the pool back at `min_ready`.

mod common;

use std::{collections::HashSet, process::Stdio, time::Duration};

use common::{Bearer, Control, eventually, templates_with};
use sandboxd::{
    auth::{self, Principal, Role},
    config::{DatabaseConfig, SecretUrl},
    proto::{
        CreateSandboxRequest, DestroySandboxRequest, RegisterGuildRequest,
        sandbox_control_client::SandboxControlClient,
    },
    store::Store,
};
use sqlx::{Connection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const MIN_READY: i64 = 4;
const ROUNDS: usize = 3;

/// One database and Redis key prefix for the server processes of a test; removed on drop.
struct Deployment {
    database_name: String,
    database_url: String,
    key_prefix: String,
    templates: tempfile::TempDir,
}

impl Deployment {
    async fn new() -> Self {
        let admin_url = common::admin_database_url();
        let database_name = format!("sandboxd_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin =
            sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL (TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {database_name}")).execute(&mut admin).await.unwrap();
        let templates = templates_with(|name, text| {
            if name == "discord-guild.toml" {
                text.replace("min_ready = 3", &format!("min_ready = {MIN_READY}"))
                    .replace("max_size = 10", "max_size = 40")
            } else {
                text
            }
        });
        Deployment {
            database_url: common::database_url(&admin_url, &database_name),
            database_name,
            key_prefix: format!("sandboxd-test:{}:", uuid::Uuid::new_v4().simple()),
            templates,
        }
    }

    /// Starts `sandboxd serve` and waits until it is SERVING; returns it and a client channel.
    async fn start(&self) -> (tokio::process::Child, Channel) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxd"))
            .arg("serve")
            .env("SANDBOXD_SERVER__LISTEN", "127.0.0.1:0")
            .env("SANDBOXD_SERVER__READINESS_INTERVAL", "100ms")
            .env("SANDBOXD_DATABASE__URL", &self.database_url)
            .env("SANDBOXD_REDIS__URL", common::redis_url())
            .env("SANDBOXD_REDIS__KEY_PREFIX", &self.key_prefix)
            .env("SANDBOXD_TEMPLATES__DIR", self.templates.path())
            .env("SANDBOXD_SANDBOX__MAX_LIVE_PER_OWNER", "1000")
            .env("SANDBOXD_RECONCILE__INTERVAL", "1s")
            .env("SANDBOXD_RECONCILE__ORPHAN_GRACE", "300ms")
            .env("SANDBOXD_RECONCILE__ORPHAN_INTERVAL", "200ms")
            .env("SANDBOXD_TELEMETRY__LOG_FORMAT", "json")
            .env("RUST_LOG", "sandboxd=info")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sandboxd serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(addr) = log["fields"]["local_addr"].as_str() {
                    return addr.to_string();
                }
            }
            panic!("sandboxd serve exited before it listened");
        })
        .await
        .expect("sandboxd serve listened within 60 s");
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let mut health = HealthClient::new(channel.clone());
        let mut stream = health
            .watch(HealthCheckRequest { service: String::new() })
            .await
            .expect("health watch")
            .into_inner();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(response) = stream.message().await.expect("health stream") {
                if response.status() == ServingStatus::Serving {
                    return;
                }
            }
        })
        .await
        .expect("SERVING within 30 s");
        (child, channel)
    }

    async fn key(&self) -> String {
        let store = Store::connect_lazy(&DatabaseConfig {
            url: SecretUrl::new(&self.database_url),
            ..DatabaseConfig::default()
        })
        .unwrap();
        let principal =
            Principal { tenant: "acme".into(), subject: "alice".into(), role: Role::Owner };
        auth::create_key(&store, &principal, "crash test", None).await.unwrap().key
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let (name, url, prefix) =
            (self.database_name.clone(), self.database_url.clone(), self.key_prefix.clone());
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(common::cleanup(name, url, prefix));
        })
        .join()
        .ok();
    }
}

fn client(channel: &Channel, key: &str) -> Control {
    SandboxControlClient::with_interceptor(channel.clone(), Bearer(Some(key.to_string())))
}

/// Everything the reconciler promises after a crash, checked once; `Err` says what is off.
async fn converged(pg: &PgPool, redis_prefix_owner: &str) -> Result<(), String> {
    let unsettled: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT id, state FROM sandboxes WHERE state NOT IN ('RUNNING', 'READY', 'DESTROYED')",
    )
    .fetch_all(pg)
    .await
    .unwrap();
    if !unsettled.is_empty() {
        return Err(format!("not settled: {unsettled:?}"));
    }
    let orphan_schemas: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_namespace n
         LEFT JOIN sandboxes s ON s.id = substr(n.nspname, 9)::uuid
         WHERE n.nspname ~ '^sandbox_[0-9a-f]{32}$' AND (s.id IS NULL OR s.state = 'DESTROYED')",
    )
    .fetch_all(pg)
    .await
    .unwrap();
    if !orphan_schemas.is_empty() {
        return Err(format!("schemas without a live sandbox: {orphan_schemas:?}"));
    }
    let stray_routes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM guild_routes r JOIN sandboxes s ON s.id = r.sandbox_id WHERE s.state <> 'RUNNING'",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    if stray_routes > 0 {
        return Err(format!("{stray_routes} routes of sandboxes that are not RUNNING"));
    }
    let stray_keys = keys_without_live_sandbox(pg, redis_prefix_owner).await;
    if !stray_keys.is_empty() {
        return Err(format!("redis keys without a live sandbox: {stray_keys:?}"));
    }
    let ready: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes WHERE state = 'READY' AND tenant = '' AND template = 'discord-guild'",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    if ready != MIN_READY {
        return Err(format!("{ready} ready pool members, not {MIN_READY}"));
    }
    Ok(())
}

/// Keys under `sandbox:{id}:` whose sandbox is destroyed, or unknown with this deployment's
/// namespace marker.
async fn keys_without_live_sandbox(pg: &PgPool, deployment: &str) -> Vec<String> {
    let mut redis = redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("sandbox:{*").query_async(&mut redis).await.unwrap();
    let mut stray = Vec::new();
    for key in keys {
        let Some(id) = key.strip_prefix("sandbox:{").and_then(|rest| rest.get(..36)) else {
            continue;
        };
        let id = uuid::Uuid::parse_str(id).unwrap();
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1")
            .bind(id)
            .fetch_optional(pg)
            .await
            .unwrap();
        let marker: Option<String> = redis::cmd("HGET")
            .arg(format!("sandbox:{{{id}}}:__sandboxd"))
            .arg("deployment")
            .query_async(&mut redis)
            .await
            .unwrap();
        let ours = marker.as_deref() == Some(deployment);
        match state.as_deref() {
            Some("DESTROYED") => stray.push(key),
            None if ours => stray.push(key),
            _ => {}
        }
    }
    stray
}

async fn wait_converged(pg: &PgPool, deployment: &str) -> Duration {
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        match converged(pg, deployment).await {
            Ok(()) => return started.elapsed(),
            Err(problem) => last = problem,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reconciler did not converge within 20 s: {last}");
}

#[tokio::test]
async fn a_crash_under_load_converges_after_restart() {
    let deployment = Deployment::new().await;
    let (mut server, channel) = deployment.start().await;
    let key = deployment.key().await;
    let pg = PgPool::connect(&deployment.database_url).await.unwrap();
    eventually("the pool to fill", Duration::from_secs(30), || async {
        let ready: i64 = sqlx::query_scalar("SELECT count(*) FROM sandboxes WHERE state = 'READY'")
            .fetch_one(&pg)
            .await
            .unwrap();
        ready == MIN_READY
    })
    .await;

    // 200 agents each create (pooled or cold), route a guild, and destroy, three times over.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let agents: Vec<_> = (0..200)
        .map(|index| {
            let (mut control, acked) = (client(&channel, &key), acked_tx.clone());
            let mut routing =
                sandboxd::proto::guild_routing_client::GuildRoutingClient::with_interceptor(
                    channel.clone(),
                    Bearer(Some(key.clone())),
                );
            tokio::spawn(async move {
                let template = if index % 2 == 0 { "discord-guild" } else { "git-agent" };
                for round in 0..ROUNDS {
                    let request = CreateSandboxRequest {
                        template: template.into(),
                        name: format!("agent-{index}-{round}"),
                        ..Default::default()
                    };
                    let Ok(created) = control.create_sandbox(request).await else { return };
                    let id = created.into_inner().sandbox_id;
                    let _ = acked.send((id.clone(), false));
                    let guild = RegisterGuildRequest {
                        guild_id: format!("{}", 1000 + index),
                        sandbox_id: id.clone(),
                    };
                    let _ = routing.register_guild(guild).await;
                    let destroy =
                        DestroySandboxRequest { sandbox_id: id.clone(), ..Default::default() };
                    if control.destroy_sandbox(destroy).await.is_err() {
                        return;
                    }
                    let _ = acked.send((id, true));
                }
            })
        })
        .collect();
    drop(acked_tx);
    // Kill it once work is well under way: creates and destroys acknowledged, most to come.
    let mut acknowledged_creates = HashSet::new();
    let mut acknowledged_destroys = HashSet::new();
    while acknowledged_creates.len() < 40 || acknowledged_destroys.len() < 10 {
        let (id, destroyed) = acked_rx.recv().await.expect("creates are acknowledged");
        if destroyed {
            acknowledged_destroys.insert(id);
        } else {
            acknowledged_creates.insert(id);
        }
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    for agent in agents {
        agent.await.unwrap();
    }
    while let Some((id, destroyed)) = acked_rx.recv().await {
        if destroyed {
            acknowledged_destroys.insert(id);
        } else {
            acknowledged_creates.insert(id);
        }
    }
    assert!(
        acknowledged_creates.len() < 200 * ROUNDS,
        "the kill came while creates were under way"
    );
    assert!(acknowledged_destroys.len() < acknowledged_creates.len(), "and destroys");
    let (in_between,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM sandboxes WHERE state NOT IN ('RUNNING', 'READY', 'DESTROYED')",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    eprintln!(
        "killed after {} acknowledged creates and {} destroys; {in_between} sandboxes left in between",
        acknowledged_creates.len(),
        acknowledged_destroys.len()
    );

    let (_server, _channel) = deployment.start().await;
    let took = wait_converged(&pg, &deployment.key_prefix).await;
    eprintln!("converged {took:?} after SERVING (reconcile interval 1 s, the default)");

    for id in &acknowledged_creates {
        let state: String = sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pg)
            .await
            .unwrap_or_else(|_| panic!("acknowledged sandbox {id} is gone"));
        if acknowledged_destroys.contains(id) {
            assert_eq!(state, "DESTROYED", "{id}: its destroy was acknowledged");
        } else {
            assert!(state == "RUNNING" || state == "DESTROYED", "{id} is {state}");
        }
    }
}

#[tokio::test]
async fn destroys_killed_while_waiting_on_drop_schema_finish_by_themselves() {
    let deployment = Deployment::new().await;
    let (mut server, channel) = deployment.start().await;
    let key = deployment.key().await;
    let pg = PgPool::connect(&deployment.database_url).await.unwrap();
    let mut control = client(&channel, &key);
    let mut ids = Vec::new();
    for index in 0..4 {
        let request = CreateSandboxRequest {
            template: "git-agent".into(),
            name: format!("held-{index}"),
            ..Default::default()
        };
        ids.push(control.create_sandbox(request).await.unwrap().into_inner().sandbox_id);
    }
    let mut redis = redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // A reader holds each sandbox's table, so DROP SCHEMA waits.
    let mut reader = sqlx::PgConnection::connect(&deployment.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    for id in &ids {
        let schema = format!("sandbox_{}", uuid::Uuid::parse_str(id).unwrap().simple());
        let () = redis::cmd("SET")
            .arg(format!("sandbox:{{{id}}}:data"))
            .arg("x")
            .query_async(&mut redis)
            .await
            .unwrap();
        sqlx::query(&format!("LOCK TABLE {schema}.tasks IN ACCESS SHARE MODE"))
            .execute(&mut reader)
            .await
            .unwrap();
    }
    let destroys: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut control = client(&channel, &key);
            let request = DestroySandboxRequest { sandbox_id: id.clone(), ..Default::default() };
            tokio::spawn(async move { control.destroy_sandbox(request).await })
        })
        .collect();
    // Every destroy is now blocked on DROP SCHEMA: its DESTROYING has committed.
    eventually("all four destroys to wait on DROP SCHEMA", Duration::from_secs(15), || async {
        common::backends_waiting(&pg, "DROP SCHEMA%").await.len() == 4
    })
    .await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    for destroy in destroys {
        assert!(destroy.await.unwrap().is_err(), "killed before answering");
    }
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM sandboxes WHERE template = 'git-agent'")
            .fetch_all(&pg)
            .await
            .unwrap();
    assert_eq!(states, ["DESTROYING"; 4], "the destroys' intent survived the crash");

    let (_server, _channel) = deployment.start().await;
    let took = wait_converged(&pg, &deployment.key_prefix).await;
    eprintln!("converged {took:?} after SERVING");
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM sandboxes WHERE template = 'git-agent'")
            .fetch_all(&pg)
            .await
            .unwrap();
    assert_eq!(states, ["DESTROYED"; 4]);
    for id in &ids {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("sandbox:{{{id}}}:*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}
