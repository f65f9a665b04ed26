//! The sandbox manager: the only code that moves a sandbox through its lifecycle on behalf of a
//! caller. Creation is in `create`, destruction in `destroy`, the rest beside them.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Sandbox, SandboxId, activity::ActivityTracker};
use crate::{
    auth::Principal,
    config::{RuntimeConfig, SandboxDefaults},
    error::{Error, Result},
    events::EventHub,
    isolation::RedisNamespace,
    reconcile::Replica,
    routing::RoutingTable,
    runtime::Runtimes,
    store::{Store, sandboxes::Scope},
    template::TemplateCatalog,
    workspace::{files::FileLimits, syncs::WorkspaceSyncs},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSelector {
    Id(SandboxId),
    Name(String),
}

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct SandboxManager {
    pub(crate) store: Store,
    /// Outcome counters of creates, destroys and reconciler actions.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) redis: RedisNamespace,
    pub(crate) templates: Arc<TemplateCatalog>,
    pub(crate) defaults: SandboxDefaults,
    pub(crate) object_bucket: String,
    pub(crate) activity: Arc<ActivityTracker>,
    pub(crate) events: EventHub,
    /// Cancelled when the server shuts down; ends watch streams.
    pub(crate) shutdown: CancellationToken,
    /// Lifecycle work run to completion on its own task, and pool refills; the server waits
    /// for it on shutdown.
    pub(crate) tasks: TaskTracker,
    /// This replica as a worker: recorded on sandboxes it moves into transitional states.
    pub(crate) replica: Replica,
    /// Wakes the pool refill (after a claim took a member).
    pub(crate) pool_wakeup: Arc<tokio::sync::Notify>,
    /// This replica's routing table; caught up after changes that remove routes, so this
    /// replica stops routing to a sandbox as soon as its state changed.
    pub(crate) routes: Arc<RoutingTable>,
    /// What runs sandboxes' commands, by template runtime.
    pub(crate) runtimes: Arc<Runtimes>,
    pub(crate) runtime_config: Arc<RuntimeConfig>,
    pub(crate) file_limits: FileLimits,
    /// The object store and per-sandbox sync state.
    pub(crate) syncs: Arc<WorkspaceSyncs>,
    /// Mirrors, push locks and credentials of template repositories.
    pub(crate) git: Arc<crate::git::GitRemotes>,
    /// Where workers reach PostgreSQL and Redis, for sandboxes' DSNs; sandbox roles' limits.
    pub(crate) worker_endpoints: Arc<crate::isolation::config::WorkerEndpoints>,
}

pub(crate) fn scope(principal: &Principal) -> Scope<'_> {
    Scope { tenant: &principal.tenant, owner: principal.owner_scope() }
}

/// AIP-154: a given etag must match; returns the version the caller saw.
pub(crate) fn check_etag(sandbox: &Sandbox, etag: Option<&str>) -> Result<Option<i64>> {
    match etag {
        // AIP-154: a stale etag is ABORTED (the caller re-reads and retries). The caller's
        // etag is not echoed: it can be anything, of any size.
        Some(etag) if etag != sandbox.etag() => Err(Error::Aborted {
            reason: "ETAG_MISMATCH",
            message: format!(
                "the etag does not match the sandbox's current etag {}; re-read it and retry",
                sandbox.etag()
            ),
        }),
        Some(_) => Ok(Some(sandbox.version)),
        None => Ok(None),
    }
}

impl SandboxManager {
    /// The test hook that pauses a push before it updates the remote (`crate::git::pauses`).
    pub fn push_pauses(&self) -> &crate::git::pauses::PushPauses {
        &self.git.pauses
    }

    pub fn templates(&self) -> &TemplateCatalog {
        &self.templates
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn redis(&self) -> &RedisNamespace {
        &self.redis
    }

    pub(crate) fn events(&self) -> &EventHub {
        &self.events
    }

    pub(crate) fn routes(&self) -> &RoutingTable {
        &self.routes
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub fn activity(&self) -> &ActivityTracker {
        &self.activity
    }

    pub fn object_bucket(&self) -> &str {
        &self.object_bucket
    }

    /// A sandbox visible to the caller. Counts as activity on a live sandbox.
    #[tracing::instrument(name = "sandbox.get", skip_all, fields(tenant = %principal.tenant))]
    pub async fn get(&self, principal: &Principal, selector: &SandboxSelector) -> Result<Sandbox> {
        principal.require_manager()?;
        let mut sandbox = self.find(principal, selector).await?;
        if sandbox.state.is_live() {
            self.activity.touch(sandbox.id);
            sandbox.last_activity_at = Utc::now();
        }
        Ok(sandbox)
    }

    pub(super) async fn find(
        &self,
        principal: &Principal,
        selector: &SandboxSelector,
    ) -> Result<Sandbox> {
        let scope = scope(principal);
        let found = match selector {
            SandboxSelector::Id(id) => self.store.get_sandbox(scope, *id).await?,
            SandboxSelector::Name(name) => self.store.get_sandbox_by_name(scope, name).await?,
        };
        found.ok_or_else(|| match selector {
            SandboxSelector::Id(id) => Error::not_found("sandbox", id.to_string()),
            SandboxSelector::Name(name) => Error::not_found("sandbox", name),
        })
    }
}

impl SandboxManager {
    /// Runs lifecycle work on its own (tracked) task, so it finishes even when the caller goes
    /// away (deadline exceeded, client disconnect): a sandbox is never left half-provisioned or
    /// half-destroyed because an RPC was cancelled. Shutdown waits for these tasks.
    pub(crate) async fn run_to_completion<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        // The task stays in the caller's span, so its store, Redis and S3 spans belong to the
        // RPC's trace.
        use tracing::Instrument as _;
        self.tasks.spawn(work.in_current_span()).await.map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("lifecycle task failed"))
        })?
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }
}

pub(crate) fn changed_concurrently(id: SandboxId) -> Error {
    Error::Aborted {
        reason: "CONCURRENT_MODIFICATION",
        message: format!("sandbox {id} was changed concurrently; re-read it and retry"),
    }
}
