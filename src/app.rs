//! The shared state of one server: config, store, Redis, auth, domain services, readiness.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Request;

use crate::{
    artifacts::ArtifactService,
    auth::{Authenticator, Principal},
    config::Config,
    error::{Error, Result},
    events::EventHub,
    git::GitRemotes,
    isolation::{RedisNamespace, redis_client::RedisClient},
    lock::{
        Locks,
        audit::{LockAudit, LockAuditWriter},
    },
    rate_limit::RateLimiter,
    reconcile::Replica,
    routing::{RoutingService, RoutingTable},
    runtime::Runtimes,
    sandbox::SandboxManager,
    store::Store,
    template::TemplateCatalog,
    workspace::syncs::WorkspaceSyncs,
};

pub struct App {
    pub config: Config,
    pub store: Store,
    pub redis: RedisNamespace,
    /// Distributed locks (AcquireLock, RenewLock, ReleaseLock).
    pub locks: Locks,
    /// The audit of AcquireLock and ReleaseLock, written in batches.
    pub lock_audit: LockAudit,
    /// Its writer, taken (once) by the server to run.
    pub lock_audit_writer: std::sync::Mutex<Option<LockAuditWriter>>,
    pub auth: Authenticator,
    /// Calls per principal, per role's limit (this replica's share).
    pub rate_limits: RateLimiter,
    /// Prometheus metrics (`crate::metrics`), recorded at the wire edge and read at scrape.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub sandboxes: SandboxManager,
    /// Artifacts and their review (`ArtifactService`).
    pub artifacts: ArtifactService,
    pub routing: RoutingService,
    pub templates: Arc<TemplateCatalog>,
    pub events: EventHub,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    readiness: Readiness,
}

/// What the readiness probe last saw, per dependency.
#[derive(Default)]
struct Readiness {
    /// Migrations ran, templates checked, routing table loaded.
    initialized: AtomicBool,
    postgres: AtomicBool,
    redis: AtomicBool,
}

impl App {
    /// Builds everything without touching the network; the readiness task connects later.
    pub fn build(config: Config) -> anyhow::Result<Arc<Self>> {
        crate::tls::install_crypto_provider();
        let templates =
            Arc::new(TemplateCatalog::load_dir(&config.templates.dir, &config.sandbox)?);
        let store = Store::connect_lazy(&config.database)?;
        let redis_client = RedisClient::build(&config.redis)?;
        let redis =
            RedisNamespace::new(redis_client, config.redis.timeout, &config.redis.key_prefix);
        let auth = Authenticator::new(store.clone(), config.auth.mode, config.auth.key_cache_ttl);
        let shutdown = CancellationToken::new();
        let events = EventHub::default();
        let routes = Arc::new(RoutingTable::default());
        let locks = Locks::new(redis.clone());
        let (lock_audit, lock_audit_writer) = LockAudit::new();
        let rate_limits = RateLimiter::new(config.rate_limit.clone());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let sandboxes = SandboxManager {
            metrics: metrics.clone(),
            store: store.clone(),
            redis: redis.clone(),
            templates: templates.clone(),
            defaults: config.sandbox.clone(),
            object_bucket: config.s3.bucket.clone(),
            activity: Arc::default(),
            events: events.clone(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            replica: Replica::default(),
            pool_wakeup: Arc::default(),
            routes: routes.clone(),
            runtimes: Arc::new(Runtimes::new(&config.runtime)),
            runtime_config: Arc::new(config.runtime.clone()),
            file_limits: config.files,
            syncs: Arc::new(WorkspaceSyncs::new(config.s3.clone(), config.sync.clone())),
            git: Arc::new(GitRemotes::new(config.git.clone(), locks.clone())),
            worker_endpoints: Arc::new(crate::isolation::config::WorkerEndpoints::new(
                &config.isolation,
                config.database.url.expose(),
                config.redis.url.expose(),
            )),
        };
        let artifacts =
            ArtifactService::new(sandboxes.clone(), config.artifacts.clone(), metrics.clone());
        let routing = RoutingService::new(
            store.clone(),
            routes,
            sandboxes.clone(),
            events.clone(),
            config.routing.max_guilds_per_sandbox,
        );
        Ok(Arc::new(Self {
            config,
            store,
            locks,
            lock_audit,
            lock_audit_writer: std::sync::Mutex::new(Some(lock_audit_writer)),
            redis,
            auth,
            rate_limits,
            metrics: metrics.clone(),
            sandboxes,
            artifacts,
            routing,
            templates,
            events,
            shutdown,
            readiness: Readiness::default(),
        }))
    }

    /// Everything answers: what SandboxControl and SyncService need.
    pub fn is_ready(&self) -> bool {
        let readiness = &self.readiness;
        readiness.initialized.load(Ordering::Acquire)
            && readiness.postgres.load(Ordering::Acquire)
            && readiness.redis.load(Ordering::Acquire)
    }

    /// GuildRouting answers from its in-memory table, which needs neither Redis nor, for a
    /// while, PostgreSQL: it may answer while the table is loaded and caught up within
    /// `routing.max_staleness`.
    pub fn routing_is_ready(&self) -> bool {
        self.readiness.initialized.load(Ordering::Acquire)
            && self
                .routing
                .table()
                .staleness()
                .is_some_and(|age| age <= self.config.routing.max_staleness)
    }

    pub(crate) fn set_readiness(&self, initialized: bool, postgres: bool, redis: bool) {
        let readiness = &self.readiness;
        readiness.initialized.store(initialized, Ordering::Release);
        readiness.postgres.store(postgres, Ordering::Release);
        readiness.redis.store(redis, Ordering::Release);
    }

    /// The bytes a page of a listing may fill: the message limit less room for the rest of the
    /// response (the page token and framing).
    pub fn page_budget(&self) -> usize {
        self.config.server.max_message_bytes.saturating_sub(16 * 1024).max(1)
    }

    /// Authenticates the caller of an RPC; refuses while dependencies are not ready.
    pub async fn principal<T>(&self, request: &Request<T>) -> Result<Principal> {
        if !self.is_ready() {
            return Err(Error::NotReady(
                "sandboxd is not ready: PostgreSQL or Redis is not answering; retry shortly",
            ));
        }
        let principal = self.auth.authenticate(request.metadata()).await?;
        self.rate_limits.check(&principal)?;
        Ok(principal)
    }

    /// Authenticates the caller of a routing RPC served from memory (resolves): works while
    /// Redis is down, and while PostgreSQL is down for up to `routing.max_staleness` (for keys
    /// already verified, which are cached).
    pub async fn routing_principal<T>(&self, request: &Request<T>) -> Result<Principal> {
        if !self.routing_is_ready() {
            return Err(Error::NotReady(
                "the routing table is not loaded yet, or PostgreSQL has been unreachable for longer than routing.max_staleness; retry shortly",
            ));
        }
        let principal = self.auth.authenticate(request.metadata()).await?;
        self.rate_limits.check(&principal)?;
        Ok(principal)
    }

    /// Checks every template's SQL against PostgreSQL and records the tables each creates.
    pub async fn check_templates(&self) -> anyhow::Result<()> {
        for template in self.templates.iter() {
            let tables = self
                .store
                .check_template_sql(&template.schema_sql)
                .await
                .map_err(|error| anyhow::anyhow!("template {:?}: {error:#}", template.name))?;
            self.templates.set_tables(&template.name, tables);
        }
        Ok(())
    }
}
