//! One typed configuration, layered: built-in defaults → TOML file → `SANDBOXD_*` environment
//! variables (nested keys joined by `__`, e.g. `SANDBOXD_DATABASE__URL`) → command-line flags.
//! [`Config::validate`] runs once at start and reports every problem at once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

pub use crate::secret::{Secret, SecretUrl};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
    pub auth: AuthConfig,
    pub sandbox: SandboxDefaults,
    pub routing: RoutingConfig,
    pub reconcile: ReconcileConfig,
    pub templates: TemplatesConfig,
    pub telemetry: TelemetryConfig,
    pub runtime: RuntimeConfig,
    pub files: crate::workspace::files::FileLimits,
    pub sync: crate::workspace::sync::SyncSettings,
    pub git: crate::git::settings::GitSettings,
    pub metrics: MetricsConfig,
    /// The web dashboard (`crate::web`).
    pub dashboard: DashboardConfig,
    /// Per-sandbox PostgreSQL roles and Redis ACL users.
    pub isolation: crate::isolation::config::IsolationConfig,
    /// `sandboxd route-events` only.
    pub router: crate::router::config::RouterConfig,
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    pub artifacts: ArtifactsConfig,
}

/// Artifacts (`ArtifactService`): size limit, review rules and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Largest artifact content, in bytes; a bigger one is refused (`ARTIFACT_TOO_LARGE`).
    pub max_bytes: usize,
    /// Whether a tenant requires four eyes: the publisher of an artifact may not review it.
    pub four_eyes: bool,
    /// Per-tenant exceptions to `four_eyes` (tenant → required).
    pub four_eyes_tenants: std::collections::BTreeMap<String, bool>,
    /// How long artifacts outlive their sandbox, counted from its destroy time; then the
    /// reconciler removes them with their bytes.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            four_eyes: false,
            four_eyes_tenants: std::collections::BTreeMap::new(),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl ArtifactsConfig {
    /// Whether `tenant` requires four eyes (its override first).
    pub fn four_eyes_for(&self, tenant: &str) -> bool {
        self.four_eyes_tenants.get(tenant).copied().unwrap_or(self.four_eyes)
    }
}

/// The Prometheus listener (`crate::metrics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`; unset (the default): no listener.
    pub listen: Option<SocketAddr>,
}

/// The web dashboard listener (`crate::web`): the embedded web app at `/ui` and the same gRPC
/// services as `server.listen`, over gRPC-Web (HTTP/1.1 or HTTP/2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address of the dashboard listener; unset (the default): no dashboard. It uses
    /// `[server.tls]` when that is set; without it, a non-loopback address is refused unless
    /// `server.allow_plaintext = true`, as for `server.listen`.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Upper bound on any RPC; a shorter `grpc-timeout` from the client wins.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long in-flight RPCs may finish after SIGTERM before the server exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Interval of the PostgreSQL/Redis readiness probe that drives the health service.
    #[serde(with = "humantime_serde")]
    pub readiness_interval: Duration,
    pub concurrency_limit_per_connection: usize,
    /// Largest request metadata (all headers, counted as HTTP/2 does), in bytes; above it an
    /// RPC answers RESOURCE_EXHAUSTED (`METADATA_TOO_LARGE`). At most 1 MiB, the header-list
    /// limit the server advertises to HTTP/2 clients.
    pub max_metadata_bytes: usize,
    /// TLS (and mTLS with a client CA) for the gRPC listener; unset: plaintext.
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// Serve plaintext on a non-loopback `listen` address (e.g. behind a mesh sidecar that
    /// terminates mTLS). Without it and without `[server.tls]`, such an address is refused.
    pub allow_plaintext: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            readiness_interval: Duration::from_secs(2),
            concurrency_limit_per_connection: 256,
            max_metadata_bytes: 16 * 1024,
            tls: None,
            allow_plaintext: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub max_connections: u32,
    /// Longest wait for a pooled connection before the RPC fails with UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Per-statement limit set on every connection (`statement_timeout`).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// TLS to PostgreSQL; see `store::connect` for how `sslmode` is decided.
    pub tls: crate::tls::client::ClientTlsConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("postgres://postgres@127.0.0.1:5432/sandboxd"),
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            tls: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `standalone`: one Redis server (or a primary behind a proxy). `cluster`: a Redis
    /// Cluster, reached through `url` as the seed node; the other nodes are discovered.
    pub mode: RedisMode,
    pub url: SecretUrl,
    pub pool_size: usize,
    /// Applies to waiting for, creating and recycling a pooled connection, and to each command.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Prefix of sandboxd's own keys (locks, caches). Sandbox keys always live under
    /// `sandbox:{<uuid>}:`, which is unique per sandbox.
    pub key_prefix: String,
    /// Files for a `rediss://` URL (TLS, always verified).
    pub tls: crate::tls::client::ClientTlsConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: SecretUrl::new("redis://127.0.0.1:6379"),
            pool_size: 32,
            timeout: Duration::from_secs(2),
            key_prefix: "sandboxd:".into(),
            tls: Default::default(),
        }
    }
}

/// How sandboxd reaches Redis, and so how a destroyed sandbox's keys are found (see
/// `isolation::redis_namespace`): on a cluster by reading the sandbox's one hash slot at destroy
/// time, on a single server by a batched keyspace pass after DESTROYED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    Standalone,
    Cluster,
}

/// Object store for workspace sync. Empty `endpoint` means the AWS default endpoint resolution.
/// `bucket` also names every sandbox's object prefix `s3://<bucket>/sandboxes/<uuid>/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub enabled: bool,
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub force_path_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "sandboxd".into(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            force_path_style: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every RPC but health and reflection needs `authorization: Bearer <api key>`.
    ApiKey,
    /// Everyone is the `dev` tenant's owner. Only for local development, and logged loudly.
    Disabled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// How long a verified key is trusted without asking PostgreSQL again; a revoked key stops
    /// working within this time. Zero disables the cache.
    #[serde(with = "humantime_serde")]
    pub key_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { mode: AuthMode::ApiKey, key_cache_ttl: Duration::from_secs(10) }
    }
}

/// Server-wide sandbox defaults; each template may override them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxDefaults {
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest lifetime counted from creation; extensions are capped here.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub boot_timeout: Duration,
    /// Live sandboxes one owner may hold at once.
    pub max_live_per_owner: u32,
    /// Live sandboxes one tenant may hold at once, all owners together; 0: no limit.
    pub max_live_per_tenant: u32,
    /// Per-tenant exceptions to `max_live_per_tenant` (tenant → limit; 0: no limit).
    pub tenant_live_limits: std::collections::BTreeMap<String, u32>,
    /// How often last-activity times collected in memory are written (one batched UPDATE).
    #[serde(with = "humantime_serde")]
    pub activity_flush_interval: Duration,
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(168 * 3600),
            idle_timeout: Duration::from_secs(15 * 60),
            boot_timeout: Duration::from_secs(5 * 60),
            max_live_per_owner: 5,
            max_live_per_tenant: 100,
            tenant_live_limits: std::collections::BTreeMap::new(),
            activity_flush_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Guilds one sandbox may route.
    pub max_guilds_per_sandbox: u32,
    /// Safety-net interval at which each replica re-reads route changes even without a NOTIFY.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Resolves keep answering from the in-memory table while PostgreSQL is unreachable, for at
    /// most this long after the table last caught up; then they answer UNAVAILABLE. Keep it above
    /// `sync_interval`.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_guilds_per_sandbox: 10,
            sync_interval: Duration::from_secs(5),
            max_staleness: Duration::from_secs(30),
        }
    }
}

/// The reconciler, which runs in every replica: expiry, idle and boot timeouts, finishing work a
/// crashed or failed worker left behind, orphan removal, log retention and warm-pool refill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// How often each pass runs. A sandbox is destroyed within about one interval of its expiry.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Sandboxes handled per pass and kind of work.
    pub batch_size: u32,
    /// Sandboxes a pass works on at once (each teardown waits on PostgreSQL and Redis).
    pub concurrency: usize,
    /// Schemas and Redis keys of unknown or destroyed sandboxes are removed once their sandbox
    /// id is older than this, so an in-flight create is never touched. Keep it above the longest
    /// boot timeout.
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// How often the orphan sweep runs (it lists every schema and scans Redis for sandbox keys).
    #[serde(with = "humantime_serde")]
    pub orphan_interval: Duration,
    /// On a single Redis, the keys of destroyed sandboxes are removed by one keyspace pass for
    /// all of them; passes start at most this often, and never more often than keeps their SCAN
    /// work under a tenth of Redis' time (the gap after a pass is at least 9× its SCAN time).
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// Audit events and route changes (the logs behind watch resume tokens) older than this are
    /// deleted; resuming from a deleted position answers OUT_OF_RANGE.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Keep pooled templates' pools at `min_ready`. Off: pools are only drained (claims and
    /// releases still work).
    pub pool_refill: bool,
    /// Pool members provisioned at once per replica; cold creates are never queued behind more.
    pub refill_concurrency: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(1),
            batch_size: 500,
            concurrency: 8,
            orphan_grace: Duration::from_secs(10 * 60),
            orphan_interval: Duration::from_secs(60),
            purge_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_interval: Duration::from_secs(10 * 60),
            pool_refill: true,
            refill_concurrency: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesConfig {
    /// Directory of `*.toml` template files.
    pub dir: PathBuf,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("deploy/templates") }
    }
}

/// The `process` runtime: where workspaces live, how commands are isolated and bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Directory holding one workspace directory per `process` sandbox (`<root>/<uuid>`). Must
    /// not be inside one of `system_paths`, which commands see.
    pub workspace_root: PathBuf,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// UNSAFE: run commands without bubblewrap (no namespaces: they see the host's files,
    /// processes and network). Only for machines without bubblewrap; logged as a warning at
    /// start and reported by every `GetSandboxHealth` of a `process` sandbox.
    pub unsafe_without_bubblewrap: bool,
    /// Host directories commands see read-only (missing ones are skipped).
    pub system_paths: Vec<PathBuf>,
    /// Exec timeout when the request sets none.
    #[serde(with = "humantime_serde")]
    pub default_exec_timeout: Duration,
    /// Longest exec timeout a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_exec_timeout: Duration,
    /// Run time limit of hooks (`cold_start`, `message`, ...).
    #[serde(with = "humantime_serde")]
    pub hook_timeout: Duration,
    /// Output of one exec (stdout and stderr together) beyond which it is cut with a marker.
    pub max_output_bytes: usize,
    /// Largest `ExecRequest.stdin`.
    pub max_stdin_bytes: usize,
    /// When sandboxd runs as root, each sandbox's commands run as an unprivileged uid (and gid)
    /// from `uid_base .. uid_base + uid_count`, derived from the sandbox id, so a sandbox's
    /// process limit counts only its own processes.
    pub uid_base: u32,
    pub uid_count: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workspace_root: PathBuf::from("/var/lib/sandboxd/workspaces"),
            bwrap: PathBuf::from("bwrap"),
            unsafe_without_bubblewrap: false,
            system_paths: ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            default_exec_timeout: Duration::from_secs(300),
            max_exec_timeout: Duration::from_secs(3600),
            hook_timeout: Duration::from_secs(300),
            max_output_bytes: 16 << 20,
            max_stdin_bytes: 4 << 20,
            uid_base: 200_000,
            uid_count: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `tracing` filter directive; `RUST_LOG` overrides it.
    pub log_filter: String,
    /// OpenTelemetry collector (OTLP over gRPC), e.g. `http://otel-collector:4317`; empty: off.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info,sqlx=warn".into(),
            otlp_endpoint: String::new(),
        }
    }
}

impl Config {
    /// Layers defaults, the optional TOML file and `SANDBOXD_*` env vars. Flags are applied by the
    /// caller afterwards; call [`Config::validate`] last.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            // Only nested keys (`SANDBOXD_<SECTION>__<KEY>`) are config: other SANDBOXD_* vars
            // (SANDBOXD_CONFIG, sandboxctl's SANDBOXD_ADDR, Kubernetes service links) are not.
            .merge(Env::prefixed("SANDBOXD_").filter(|key| key.as_str().contains("__")).split("__"))
            .extract()
            .context("invalid configuration")
    }

    /// Checks the values that types alone cannot; reports every problem in one error.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if !self.database.url.expose().starts_with("postgres://")
            && !self.database.url.expose().starts_with("postgresql://")
        {
            problems.push("database.url must start with postgres:// or postgresql://".to_string());
        }
        let redis_url = self.redis.url.expose();
        if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
            problems.push("redis.url must start with redis:// or rediss:// (TLS)".to_string());
        }
        problems.extend(self.transport_problems());
        problems.extend(self.rate_limit.problems());
        let positive = [
            ("database.max_connections", self.database.max_connections as usize),
            ("redis.pool_size", self.redis.pool_size),
            ("server.max_message_bytes", self.server.max_message_bytes),
            ("server.max_metadata_bytes", self.server.max_metadata_bytes),
            (
                "server.concurrency_limit_per_connection",
                self.server.concurrency_limit_per_connection,
            ),
            ("sandbox.max_live_per_owner", self.sandbox.max_live_per_owner as usize),
            ("routing.max_guilds_per_sandbox", self.routing.max_guilds_per_sandbox as usize),
            ("reconcile.batch_size", self.reconcile.batch_size as usize),
            ("reconcile.refill_concurrency", self.reconcile.refill_concurrency),
            ("reconcile.concurrency", self.reconcile.concurrency),
            ("runtime.max_output_bytes", self.runtime.max_output_bytes),
            ("runtime.uid_count", self.runtime.uid_count as usize),
            ("artifacts.max_bytes", self.artifacts.max_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        let timeouts = [
            ("database.acquire_timeout", self.database.acquire_timeout),
            ("redis.timeout", self.redis.timeout),
            ("server.request_timeout", self.server.request_timeout),
            ("server.readiness_interval", self.server.readiness_interval),
            ("sandbox.default_ttl", self.sandbox.default_ttl),
            ("server.shutdown_grace", self.server.shutdown_grace),
            ("sandbox.activity_flush_interval", self.sandbox.activity_flush_interval),
            ("routing.sync_interval", self.routing.sync_interval),
            ("reconcile.interval", self.reconcile.interval),
            ("reconcile.orphan_interval", self.reconcile.orphan_interval),
            ("reconcile.purge_interval", self.reconcile.purge_interval),
            ("reconcile.retention", self.reconcile.retention),
            ("reconcile.retention_interval", self.reconcile.retention_interval),
            ("sandbox.idle_timeout", self.sandbox.idle_timeout),
            ("sandbox.boot_timeout", self.sandbox.boot_timeout),
            ("runtime.default_exec_timeout", self.runtime.default_exec_timeout),
            ("runtime.max_exec_timeout", self.runtime.max_exec_timeout),
            ("runtime.hook_timeout", self.runtime.hook_timeout),
            ("artifacts.retention", self.artifacts.retention),
        ];
        for (name, value) in timeouts {
            if value.is_zero() {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if self.sandbox.default_ttl > self.sandbox.max_ttl {
            problems.push("sandbox.default_ttl must not exceed sandbox.max_ttl".to_string());
        }
        problems.extend(self.git.problems());
        problems.extend(self.isolation.problems());
        if self.git.lock_wait >= self.server.request_timeout {
            problems.push("git.lock_wait must be below server.request_timeout".to_string());
        }
        if self.redis.key_prefix.is_empty() {
            problems.push("redis.key_prefix must not be empty".to_string());
        }
        if self.runtime.default_exec_timeout > self.runtime.max_exec_timeout {
            problems.push(
                "runtime.default_exec_timeout must not exceed runtime.max_exec_timeout".to_string(),
            );
        }
        if !self.runtime.workspace_root.is_absolute() {
            problems.push("runtime.workspace_root must be an absolute path".to_string());
        }
        if let Some(system) =
            self.runtime.system_paths.iter().find(|p| self.runtime.workspace_root.starts_with(p))
        {
            problems.push(format!(
                "runtime.workspace_root must not be inside {} (a system path commands see)",
                system.display()
            ));
        }
        problems.extend(self.files.problems(self.server.max_message_bytes));
        let header_limit = crate::wire::limits::HTTP2_MAX_HEADER_LIST_BYTES as usize;
        if self.server.max_metadata_bytes > header_limit {
            problems.push(format!("server.max_metadata_bytes must be at most {header_limit}"));
        }
        if let Err(error) = self.sync.validate() {
            problems.push(error.to_string());
        }
        if self.s3.enabled && self.s3.bucket.is_empty() {
            problems.push("s3.bucket must be set when s3.enabled".to_string());
        }
        if !self.templates.dir.is_dir() {
            problems
                .push(format!("templates.dir {} is not a directory", self.templates.dir.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_passwords_in_debug_output() {
        let url = SecretUrl::new("postgres://app:hunter2@db:5432/x");
        assert_eq!(format!("{url:?}"), "postgres://app:***@db:5432/x");
        assert!(!format!("{:?}", Config::default()).contains("hunter2"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "OMITTED");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let config = Config::load(Some(std::path::Path::new("deploy/sandboxd.example.toml")))
            .expect("deploy/sandboxd.example.toml matches the config types");
        assert_eq!(config.routing.max_guilds_per_sandbox, 10);
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut config = Config::default();
        config.redis.pool_size = 0;
        config.sandbox.default_ttl = Duration::from_secs(1000 * 3600);
        config.templates.dir = PathBuf::from("/nonexistent");
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("redis.pool_size"), "{message}");
        assert!(message.contains("default_ttl must not exceed"), "{message}");
        assert!(message.contains("templates.dir"), "{message}");
    }
}
