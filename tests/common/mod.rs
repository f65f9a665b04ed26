//! Test harness: the real server, in-process on port 0, against a fresh PostgreSQL database per
//! test and its own Redis key prefix. Needs PostgreSQL and Redis (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a role allowed to create databases;
//! `TEST_REDIS_URL`, default `redis://127.0.0.1:6379`); a test fails loudly when they are absent.

#![allow(dead_code)]

pub mod certs;
pub mod dev_process;
pub mod gate;
pub mod http1;
pub mod log_capture;
pub mod nats;
pub mod redis_cluster;
pub mod s3_servers;

use std::{net::SocketAddr, time::Duration};

use sandboxd::{
    auth::{self, Principal, Role},
    config::{Config, SecretUrl},
    proto::{
        guild_routing_client::GuildRoutingClient, sandbox_control_client::SandboxControlClient,
        sync_service_client::SyncServiceClient,
    },
    server::{self, RunningServer},
};
use sqlx::{Connection, PgConnection, PgPool};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `admin_url` with its database replaced by `database`.
pub fn database_url(admin_url: &str, database: &str) -> String {
    let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{database}")
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii key");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Control = SandboxControlClient<InterceptedService<Channel, Bearer>>;
pub type Routing = GuildRoutingClient<InterceptedService<Channel, Bearer>>;
pub type Sync = SyncServiceClient<InterceptedService<Channel, Bearer>>;

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub database_name: String,
    pub database_url: String,
    /// Key of the owner of tenant "acme" (subject "alice").
    pub owner_key: String,
    server: Option<RunningServer>,
    channel: Channel,
    /// Holds `config.runtime.workspace_root`; removed with everything in it at drop.
    _workspaces: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns the server with `customize` applied to the test config, and waits until it is
    /// SERVING (by watching the health service, not by sleeping).
    pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> TestApp {
        let mut app = Self::start_unready(customize).await;
        app.wait_for_health("", ServingStatus::Serving).await;
        let principal =
            Principal { tenant: "acme".into(), subject: "alice".into(), role: Role::Owner };
        app.owner_key = app.create_key(&principal).await;
        app
    }

    /// Spawns the server without waiting for readiness and without creating keys.
    pub async fn start_unready(customize: impl FnOnce(&mut Config)) -> TestApp {
        // TEST_LOG=<filter> shows the server's logs (e.g. TEST_LOG=sandboxd=debug).
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let admin_url = admin_database_url();
        let database_name = format!("sandboxd_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
            panic!("cannot reach PostgreSQL at TEST_DATABASE_URL ({admin_url}): {error}; run scripts/test, which starts it")
        });
        sqlx::query(&format!("CREATE DATABASE {database_name}"))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        admin.close().await.ok();
        let database_url = database_url(&admin_url, &database_name);

        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.readiness_interval = Duration::from_millis(100);
        config.server.shutdown_grace = Duration::from_secs(10);
        config.database.url = SecretUrl::new(&database_url);
        config.database.max_connections = 10;
        config.redis.url = SecretUrl::new(redis_url());
        config.redis.key_prefix = format!("sandboxd-test:{}:", uuid::Uuid::new_v4().simple());
        config.templates.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/templates").into();
        // Pool refill is off unless a test turns it on: most tests count the sandboxes they
        // made, and a refilling pool would add members beside them.
        config.reconcile.pool_refill = false;
        // On a single Redis a destroyed sandbox's keys go with the next keyspace pass; tests
        // that check them wait for it (`keys_purged`), and short gaps keep that wait short.
        config.reconcile.purge_interval = Duration::from_millis(100);
        let workspaces = tempfile::tempdir().expect("a directory for workspaces");
        // Sandbox uids must traverse it to reach their workspace (tempdirs are 0700).
        std::fs::set_permissions(
            workspaces.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("making the workspaces directory traversable");
        config.runtime.workspace_root = workspaces.path().join("workspaces");
        config.git.mirror_dir = workspaces.path().join("git");
        customize(&mut config);
        config.validate().expect("test config is valid");

        let server = match server::start(config.clone()).await {
            Ok(server) => server,
            Err(error) => {
                cleanup(database_name, database_url, config.redis.key_prefix).await;
                panic!("server did not start: {error:#}");
            }
        };
        let addr = server.local_addr;
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        TestApp {
            addr,
            config,
            database_name,
            database_url,
            owner_key: String::new(),
            server: Some(server),
            channel,
            _workspaces: workspaces,
        }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn control(&self, key: Option<&str>) -> Control {
        SandboxControlClient::with_interceptor(self.channel(), Bearer(key.map(str::to_string)))
    }

    pub fn owner(&self) -> Control {
        self.control(Some(&self.owner_key))
    }

    pub fn routing(&self, key: Option<&str>) -> Routing {
        GuildRoutingClient::with_interceptor(self.channel(), Bearer(key.map(str::to_string)))
    }

    pub fn sync(&self, key: Option<&str>) -> Sync {
        SyncServiceClient::with_interceptor(self.channel(), Bearer(key.map(str::to_string)))
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub async fn create_key(&self, principal: &Principal) -> String {
        auth::create_key(&self.server().app.store, principal, "test", None)
            .await
            .expect("creating a key")
            .key
    }

    pub async fn key_for(&self, tenant: &str, subject: &str, role: Role) -> String {
        self.create_key(&Principal { tenant: tenant.into(), subject: subject.into(), role }).await
    }

    /// A direct connection to the test database, for checking what the server did.
    pub async fn pg(&self) -> PgPool {
        PgPool::connect(&self.database_url).await.expect("connecting to the test database")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to Redis")
    }

    /// Watches `service` until it reports `want` (30 s at most, then the test fails).
    pub async fn wait_for_health(&self, service: &str, want: ServingStatus) {
        let request = HealthCheckRequest { service: service.into() };
        let watched = async {
            let mut stream = self.health().watch(request).await.expect("health watch").into_inner();
            while let Some(response) = stream.message().await.expect("health stream") {
                if response.status() == want {
                    return;
                }
            }
            panic!("health stream ended before {want:?}");
        };
        tokio::time::timeout(Duration::from_secs(30), watched).await.unwrap_or_else(|_| {
            panic!("health of {service:?} did not become {want:?} within 30 s")
        });
    }

    /// Graceful shutdown; returns the server's result.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.shutdown().await,
            None => Ok(()),
        }
    }

    /// A second server (replica) on the same database and Redis, as behind a load balancer.
    /// The caller shuts it down; the database belongs to this app.
    pub async fn replica(&self) -> (RunningServer, Control) {
        let replica = server::start(self.config.clone()).await.expect("replica starts");
        let channel =
            Channel::from_shared(format!("http://{}", replica.local_addr)).unwrap().connect_lazy();
        let mut health = HealthClient::new(channel.clone());
        let request = HealthCheckRequest { service: String::new() };
        let mut stream = health.watch(request).await.expect("replica health").into_inner();
        while let Some(response) = stream.message().await.expect("replica health stream") {
            if response.status() == ServingStatus::Serving {
                break;
            }
        }
        let client =
            SandboxControlClient::with_interceptor(channel, Bearer(Some(self.owner_key.clone())));
        (replica, client)
    }

    pub fn take_server(&mut self) -> RunningServer {
        self.server.take().expect("server is running")
    }
}

impl Drop for TestApp {
    /// Stops the server and removes the test database and every Redis key the test made, even
    /// when the test panicked.
    fn drop(&mut self) {
        let server = self.server.take();
        if let Some(server) = &server {
            server.shutdown_token().cancel();
        }
        let database_name = self.database_name.clone();
        let database_url = self.database_url.clone();
        let key_prefix = self.config.redis.key_prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(cleanup(database_name, database_url, key_prefix));
        });
        drop(server);
        if let Err(panic) = cleanup.join() {
            eprintln!("test cleanup failed: {panic:?}");
        }
    }
}

pub async fn cleanup(database_name: String, database_url: String, key_prefix: String) {
    let mut patterns = vec![format!("{key_prefix}*")];
    // Sandbox login roles are objects of the whole (shared) server: the ones of this database
    // (their comment names it) are dropped after it.
    let mut roles = Vec::new();
    if let Ok(mut conn) = PgConnection::connect(&database_url).await {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM sandboxes")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
        patterns.extend(ids.iter().map(|id| format!("sandbox:{{{id}}}:*")));
        roles = sandbox_roles_of_database(&mut conn).await;
        conn.close().await.ok();
    }
    if let Ok(client) = redis::Client::open(redis_url())
        && let Ok(mut redis) = client.get_multiplexed_async_connection().await
    {
        for pattern in patterns {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<u64, _> =
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut redis).await;
            }
        }
    }
    let mut admin =
        PgConnection::connect(&admin_database_url()).await.expect("admin connection for cleanup");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("dropping the test database");
    for role in roles {
        sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("dropping sandbox role {role}: {error}"));
    }
}

/// The sandbox login roles made for the database `conn` is connected to.
pub async fn sandbox_roles_of_database(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT r.rolname::text FROM pg_roles r
         JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
         WHERE d.description = $1 || current_database() AND r.rolname ~ '^sandbox_[0-9a-f]{32}$'",
    )
    .bind(sandboxd::store::sandbox_roles::ROLE_COMMENT_PREFIX)
    .fetch_all(conn)
    .await
    .unwrap_or_default()
}

pub fn create_request(name: &str) -> sandboxd::proto::CreateSandboxRequest {
    sandboxd::proto::CreateSandboxRequest {
        template: "discord-guild".into(),
        name: name.into(),
        ..Default::default()
    }
}

pub fn by_id(id: &str) -> sandboxd::proto::GetSandboxRequest {
    use sandboxd::proto::get_sandbox_request::Selector;
    sandboxd::proto::GetSandboxRequest { selector: Some(Selector::SandboxId(id.into())) }
}

pub fn destroy_request(id: &str) -> sandboxd::proto::DestroySandboxRequest {
    sandboxd::proto::DestroySandboxRequest { sandbox_id: id.into(), ..Default::default() }
}

/// The states a sandbox moved to, in order, from its audit trail.
/// Polls the test database until some sandbox is in `state` (15 s at most, then the test fails):
/// waits on the condition itself, never a fixed sleep.
pub async fn wait_for_state(pool: &PgPool, state: &str) -> uuid::Uuid {
    for _ in 0..1500 {
        let found: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM sandboxes WHERE state = $1")
                .bind(state)
                .fetch_optional(pool)
                .await
                .unwrap();
        if let Some(id) = found {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no sandbox reached {state}");
}

pub async fn audited_states(pool: &PgPool, id: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT details->>'to' FROM audit_events WHERE sandbox_id = $1 AND details ? 'to' ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The `google.rpc.ErrorInfo` reason of a status.
pub fn error_reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| {
            assert_eq!(info.domain, "sandboxd", "ErrorInfo.domain");
            info.reason
        })
        .unwrap_or_else(|| panic!("status has no ErrorInfo: {status:?}"))
}

/// The field paths of a status's `google.rpc.BadRequest` violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Polls `check` every 20 ms until it holds (`timeout` at most, then the test fails naming
/// `what`): waits on the condition itself, never a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of one sandbox, read from the test database.
pub async fn state_of(pool: &PgPool, id: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn schema_exists(pool: &PgPool, id: uuid::Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(format!("sandbox_{}", id.simple()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the keyspace pass has removed a DESTROYED sandbox's keys and recorded it (on a
/// single Redis a destroy leaves its keys to that pass), then checks that none is left.
pub async fn wait_for_keys_purged(pool: &PgPool, id: uuid::Uuid) {
    eventually(
        "the keyspace pass to remove the sandbox's keys",
        Duration::from_secs(15),
        || async { keys_purged(pool, id).await },
    )
    .await;
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");
    let left = sandbox_keys(&mut redis, id).await;
    assert!(left.is_empty(), "keys left after the keyspace pass recorded them removed: {left:?}");
}

/// Whether the database records the sandbox's Redis keys as removed.
pub async fn keys_purged(pool: &PgPool, id: uuid::Uuid) -> bool {
    sqlx::query_scalar("SELECT keys_purged_at IS NOT NULL FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every key under a sandbox's Redis prefix.
pub async fn sandbox_keys(
    redis: &mut redis::aio::MultiplexedConnection,
    id: uuid::Uuid,
) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("sandbox:{{{id}}}:*")).query_async(redis).await.unwrap()
}

/// A copy of the shipped templates in a temporary directory, with `edit` applied to each file's
/// text (by template file name, e.g. `discord-guild.toml`).
pub fn templates_with(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/templates");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(dir.path().join(&name), edit(&name, text)).unwrap();
    }
    dir
}

/// Runs a shell script in a sandbox through Exec; its exit code and stdout.
pub async fn sh(app: &TestApp, id: &str, script: &str) -> (i32, String) {
    use tokio_stream::StreamExt;
    let request = sandboxd::proto::ExecRequest {
        sandbox_id: id.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let mut stream = app.owner().exec(request).await.unwrap().into_inner();
    let (mut code, mut stdout) = (-1, Vec::new());
    while let Some(message) = stream.next().await {
        match message.unwrap().output.unwrap() {
            sandboxd::proto::exec_response::Output::Exit(exit) => code = exit.exit_code,
            sandboxd::proto::exec_response::Output::StdoutChunk(chunk) => stdout.extend(chunk),
            sandboxd::proto::exec_response::Output::StderrChunk(_) => {}
        }
    }
    (code, String::from_utf8_lossy(&stdout).into_owned())
}

pub fn uuid_of(id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(id).unwrap()
}

/// Opens a transaction on another session that holds the sandbox's row lock (`FOR UPDATE`)
/// until the returned connection runs ROLLBACK or is dropped.
pub async fn hold_row_lock(database_url: &str, sandbox_id: &str) -> PgConnection {
    let mut holder = PgConnection::connect(database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM sandboxes WHERE id = $1::uuid FOR UPDATE")
        .bind(sandbox_id)
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Backends of the test database waiting on a lock while running a query `LIKE pattern`.
pub async fn backends_waiting(pool: &PgPool, pattern: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event_type = 'Lock' AND query ILIKE $1",
    )
    .bind(pattern)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A server whose `discord-guild` pool keeps `min_ready` of at most `max_size` members.
pub async fn pooled_app(
    min_ready: u32,
    max_size: u32,
    customize: impl FnOnce(&mut Config),
) -> (TestApp, tempfile::TempDir) {
    let templates = templates_with(|name, text| {
        if name == "discord-guild.toml" {
            text.replace("min_ready = 3", &format!("min_ready = {min_ready}"))
                .replace("max_size = 10", &format!("max_size = {max_size}"))
        } else {
            text
        }
    });
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(|config| {
        config.templates.dir = dir;
        config.reconcile.pool_refill = true;
        config.reconcile.interval = Duration::from_millis(50);
        config.reconcile.refill_concurrency = 4;
        customize(config);
    })
    .await;
    (app, templates)
}

/// A server with one more template (`file_name`, `text`) beside the shipped ones and an
/// in-process S3 store with a bucket of its own; keep it while the test runs.
pub struct WithS3 {
    pub app: TestApp,
    pub s3: sandboxd::dev::InProcessS3,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub async fn spawn_with_s3(file_name: &str, text: &str) -> WithS3 {
    spawn_with_s3_and(file_name, text, |_| {}).await
}

/// [`spawn_with_s3`], with more of the configuration changed by `customize`.
pub async fn spawn_with_s3_and(
    file_name: &str,
    text: &str,
    customize: impl FnOnce(&mut Config),
) -> WithS3 {
    let templates = templates_with(|_, text| text);
    std::fs::write(templates.path().join(file_name), text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let s3 = sandboxd::dev::InProcessS3::start(data.path()).await.unwrap();
    let mut s3_config = sandboxd::config::S3Config::default();
    s3.apply(&mut s3_config);
    s3_config.bucket = format!("test-{}", uuid::Uuid::new_v4().simple());
    let client = sandboxd::objectstore::client(&s3_config).await;
    sandboxd::objectstore::ensure_bucket(&client, &s3_config.bucket).await.unwrap();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(move |config| {
        config.s3 = s3_config;
        config.templates.dir = dir;
        customize(config);
    })
    .await;
    WithS3 { app, s3, _dirs: (templates, data) }
}

/// Whether the server's own metrics count exactly one call of `method` that ended `CANCELLED`
/// (read in-process, without a metrics listener).
pub async fn one_cancelled_call(app: &TestApp, method: &str) -> bool {
    let server = &app.server().app;
    let templates: Vec<String> = server.templates.iter().map(|t| t.name.clone()).collect();
    let text = server.metrics.render(&server.store, &templates).await.unwrap();
    let method = format!("method=\"{method}\"");
    text.lines().any(|line| {
        line.starts_with("grpc_server_handled_total{")
            && line.contains(&method)
            && line.contains("code=\"CANCELLED\"")
            && line.ends_with(" 1")
    })
}

/// Waits until no work a handler handed off to a tracked task (`run_to_completion`) is left.
pub async fn wait_for_handed_off_work(app: &TestApp) {
    let tasks = app.server().app.sandboxes.tasks().clone();
    eventually("no handed-off work in flight", Duration::from_secs(10), || {
        let tasks = tasks.clone();
        async move { tasks.is_empty() }
    })
    .await;
}
