//! Provisions and destroys sandboxes: the only code that moves a sandbox through its lifecycle
//! on behalf of a caller.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use sha2::{Digest, Sha256};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Sandbox, SandboxId, SandboxState, activity::ActivityTracker};
use crate::{
    auth::Principal,
    config::SandboxDefaults,
    error::{Error, Result},
    events::EventHub,
    isolation::RedisNamespace,
    routing::RoutingTable,
    store::{
        Store,
        sandboxes::{InsertOutcome, NewSandboxRecord, SchemaWork, Scope, TransitionChange},
    },
    template::{Template, TemplateCatalog},
};

/// Shortest TTL a caller may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// How long a duplicate create (same request id) waits for the first one to settle.
const DUPLICATE_WAIT: Duration = Duration::from_secs(30);
const DUPLICATE_POLL: Duration = Duration::from_millis(50);

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    pub template: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub ttl: Option<Duration>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSelector {
    Id(SandboxId),
    Name(String),
}

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct SandboxManager {
    pub(crate) store: Store,
    pub(crate) redis: RedisNamespace,
    pub(crate) templates: Arc<TemplateCatalog>,
    pub(crate) defaults: SandboxDefaults,
    pub(crate) object_bucket: String,
    pub(crate) activity: Arc<ActivityTracker>,
    pub(crate) events: EventHub,
    /// Cancelled when the server shuts down; ends watch streams.
    pub(crate) shutdown: CancellationToken,
    /// Background lifecycle work (cleanup retries); the server waits for it on shutdown.
    pub(crate) tasks: TaskTracker,
    /// This replica's routing table; caught up after changes that remove routes, so this
    /// replica stops routing to a sandbox as soon as its state changed.
    pub(crate) routes: Arc<RoutingTable>,
}

pub(crate) fn scope(principal: &Principal) -> Scope<'_> {
    Scope { tenant: &principal.tenant, owner: principal.owner_scope() }
}

/// AIP-154: a given etag must match; returns the version the caller saw.
pub(crate) fn check_etag(sandbox: &Sandbox, etag: Option<&str>) -> Result<Option<i64>> {
    match etag {
        Some(etag) if etag != sandbox.etag() => Err(Error::FailedPrecondition {
            reason: "ETAG_MISMATCH",
            message: format!("etag {etag} does not match the current {}", sandbox.etag()),
        }),
        Some(_) => Ok(Some(sandbox.version)),
        None => Ok(None),
    }
}

impl SandboxManager {
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

    /// Creates a sandbox and returns it RUNNING. A failure while provisioning leaves nothing
    /// behind: the sandbox goes FAILED → DESTROYING → DESTROYED with `last_error`.
    #[tracing::instrument(name = "sandbox.create", skip_all, fields(tenant = %principal.tenant, template = %spec.template))]
    pub async fn create(&self, principal: &Principal, spec: CreateSpec) -> Result<Sandbox> {
        principal.require_manager()?;
        let template = self
            .templates
            .get(&spec.template)
            .ok_or_else(|| Error::not_found("template", &spec.template))?;
        let ttl = spec.ttl.unwrap_or(template.default_ttl);
        if ttl < MIN_TTL || ttl > template.max_ttl {
            return Err(Error::invalid(
                "ttl",
                format!(
                    "must be between {} and {} (the template's maximum)",
                    humantime::format_duration(MIN_TTL),
                    humantime::format_duration(template.max_ttl)
                ),
            ));
        }
        let now = Utc::now();
        let id = SandboxId::new();
        let fingerprint = fingerprint(&spec, ttl);
        let record = NewSandboxRecord {
            id,
            tenant: &principal.tenant,
            owner: &principal.subject,
            name: spec.name.as_deref(),
            template: &template.name,
            labels: &spec.labels,
            metadata: &spec.metadata,
            request_id: spec.request_id.as_deref(),
            request_fingerprint: &fingerprint,
            created_at: now,
            expire_at: now + ttl,
            max_expire_at: now + template.max_ttl,
        };
        let actor = principal.actor();
        let quota = self.defaults.max_live_per_owner;
        match self.store.insert_sandbox(&record, quota, &actor).await? {
            InsertOutcome::Inserted(sandbox) => {
                let manager = self.clone();
                run_to_completion(
                    async move { manager.provision(sandbox, &template, &actor).await },
                )
                .await
            }
            InsertOutcome::SameRequestId { same_request: false, .. } => {
                Err(Error::invalid("request_id", "was already used for a different create request"))
            }
            InsertOutcome::SameRequestId { existing, same_request: true } => {
                self.wait_until_settled(principal, existing).await
            }
        }
    }

    /// Get-or-create by name: the caller's live sandbox with `spec.name`, or a new one. Concurrent
    /// calls with one name yield one sandbox (the live-name unique index decides the race).
    /// Returns whether this call created it.
    #[tracing::instrument(name = "sandbox.ensure", skip_all, fields(tenant = %principal.tenant))]
    pub async fn ensure(&self, principal: &Principal, spec: CreateSpec) -> Result<(Sandbox, bool)> {
        let name = spec.name.clone().ok_or_else(|| Error::invalid("name", "is required"))?;
        let mut last_error = None;
        for _attempt in 0..3 {
            match self.find(principal, &SandboxSelector::Name(name.clone())).await {
                Ok(existing) if existing.state.is_live() => {
                    if existing.template != spec.template {
                        return Err(Error::FailedPrecondition {
                            reason: "NAME_BOUND_TO_OTHER_TEMPLATE",
                            message: format!(
                                "live sandbox {name:?} was made from template {:?}, not {:?}",
                                existing.template, spec.template
                            ),
                        });
                    }
                    let settled = self.wait_until_settled(principal, existing).await?;
                    return Ok((settled, false));
                }
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
            match self.create(principal, spec.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(error @ Error::AlreadyExists { reason: "SANDBOX_NAME_TAKEN", .. }) => {
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| changed_concurrently_name(&name)))
    }

    /// Provisions a CREATING sandbox: the Redis namespace, then the schema with the template's
    /// tables committed together with CREATING → RUNNING.
    async fn provision(
        &self,
        creating: Sandbox,
        template: &Template,
        actor: &str,
    ) -> Result<Sandbox> {
        let (tenant, id) = (creating.tenant.clone(), creating.id);
        let provisioned = async {
            self.redis.provision(id, &tenant, &template.name).await?;
            let change = TransitionChange { reason: "provisioned", ..TransitionChange::default() };
            let schema = SchemaWork::Create { template_sql: &template.schema_sql };
            self.store
                .transition_sandbox_with(
                    &tenant,
                    id,
                    SandboxState::Creating,
                    SandboxState::Running,
                    actor,
                    change,
                    schema,
                )
                .await?
                .ok_or_else(|| changed_concurrently(id))
        }
        .await;
        match provisioned {
            Ok(running) => Ok(running),
            Err(error) => {
                self.fail_and_clean_up(creating, &error, actor).await;
                Err(error)
            }
        }
    }

    /// Marks a sandbox FAILED with the error and removes whatever was provisioned. Cleanup
    /// problems are logged; a sandbox left DESTROYING is finished by a later destroy.
    async fn fail_and_clean_up(&self, sandbox: Sandbox, error: &Error, actor: &str) {
        let last_error = error.with_cause();
        let change = TransitionChange {
            reason: "provisioning failed",
            last_error: Some(&last_error),
            ..TransitionChange::default()
        };
        let (tenant, id) = (sandbox.tenant.clone(), sandbox.id);
        let failed = self
            .store
            .transition_sandbox(&tenant, id, sandbox.state, SandboxState::Failed, actor, change)
            .await;
        let outcome = match failed {
            Ok(Some(failed)) => {
                self.tear_down(failed, "provisioning failed", actor, None).await.map(|_| ())
            }
            Ok(None) => Ok(()),
            Err(cleanup_error) => Err(cleanup_error),
        };
        if let Err(cleanup_error) = outcome {
            tracing::warn!(sandbox_id = %id, error = %cleanup_error, "cleanup after failed provisioning did not finish; retrying in the background");
            let (manager, actor) = (self.clone(), actor.to_string());
            self.tasks.spawn(async move { manager.retry_cleanup(tenant, id, actor).await });
        }
    }

    /// Retries the cleanup of a failed sandbox with exponential backoff until it is DESTROYED
    /// or the server stops (a sandbox left behind then is the reconciler's).
    async fn retry_cleanup(&self, tenant: String, id: SandboxId, actor: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let scope = Scope { tenant: &tenant, owner: None };
            let sandbox = match self.store.get_sandbox(scope, id).await {
                Ok(Some(sandbox)) if sandbox.state == SandboxState::Destroyed => return,
                Ok(Some(sandbox)) => sandbox,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, %error, "cleanup retry could not read the sandbox");
                    continue;
                }
            };
            match self.tear_down(sandbox, "provisioning failed", &actor, None).await {
                Ok(_) => return,
                Err(error) => tracing::warn!(sandbox_id = %id, %error, "cleanup retry failed"),
            }
        }
    }

    async fn wait_until_settled(
        &self,
        principal: &Principal,
        mut sandbox: Sandbox,
    ) -> Result<Sandbox> {
        let deadline = tokio::time::Instant::now() + DUPLICATE_WAIT;
        while matches!(sandbox.state, SandboxState::Pending | SandboxState::Creating)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(DUPLICATE_POLL).await;
            sandbox = self.get(principal, &SandboxSelector::Id(sandbox.id)).await?;
        }
        Ok(sandbox)
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

    async fn find(&self, principal: &Principal, selector: &SandboxSelector) -> Result<Sandbox> {
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

    /// Destroys a sandbox: drops its schema, unlinks its Redis keys, and ends DESTROYED.
    /// Idempotent: destroying a destroyed sandbox returns it unchanged, and a destroy that was
    /// interrupted (state DESTROYING) is finished by the next call.
    #[tracing::instrument(name = "sandbox.destroy", skip_all, fields(tenant = %principal.tenant, sandbox_id = %id))]
    pub async fn destroy(
        &self,
        principal: &Principal,
        id: SandboxId,
        reason: &str,
        etag: Option<&str>,
    ) -> Result<Sandbox> {
        principal.require_manager()?;
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        if sandbox.state == SandboxState::Destroyed {
            return Ok(sandbox);
        }
        let expected_version = check_etag(&sandbox, etag)?;
        let reason = if reason.is_empty() { "requested by caller" } else { reason }.to_string();
        let (manager, actor) = (self.clone(), principal.actor());
        run_to_completion(async move {
            manager.tear_down(sandbox, &reason, &actor, expected_version).await
        })
        .await
    }

    async fn tear_down(
        &self,
        sandbox: Sandbox,
        reason: &str,
        actor: &str,
        expected_version: Option<i64>,
    ) -> Result<Sandbox> {
        let (tenant, id) = (sandbox.tenant.clone(), sandbox.id);
        let destroying = match sandbox.state {
            SandboxState::Destroyed | SandboxState::Destroying => sandbox,
            SandboxState::Pending | SandboxState::Creating => {
                return Err(Error::FailedPrecondition {
                    reason: "SANDBOX_PROVISIONING",
                    message:
                        "the sandbox is still being provisioned; retry when it is RUNNING or FAILED"
                            .into(),
                });
            }
            from @ (SandboxState::Ready
            | SandboxState::Running
            | SandboxState::Expired
            | SandboxState::Failed) => {
                let change = TransitionChange {
                    reason,
                    destroy_reason: Some(reason),
                    expected_version,
                    ..TransitionChange::default()
                };
                match self
                    .store
                    .transition_sandbox(&tenant, id, from, SandboxState::Destroying, actor, change)
                    .await?
                {
                    Some(destroying) => destroying,
                    None => return Err(changed_concurrently(id)),
                }
            }
        };
        if destroying.state == SandboxState::Destroyed {
            return Ok(destroying);
        }
        if let Err(error) = self.routes.catch_up(&self.store).await {
            tracing::warn!(%error, "routing table catch-up failed; the sync loop will retry");
        }
        let removed_keys = self.redis.purge(id).await?;
        tracing::debug!(%id, removed_keys, "sandbox keys removed");
        let change = TransitionChange { reason, ..TransitionChange::default() };
        match self
            .store
            .transition_sandbox_with(
                &tenant,
                id,
                SandboxState::Destroying,
                SandboxState::Destroyed,
                actor,
                change,
                SchemaWork::Drop,
            )
            .await?
        {
            Some(destroyed) => Ok(destroyed),
            // A concurrent destroy finished first; the result is the same.
            None => self
                .store
                .get_sandbox(Scope { tenant: &tenant, owner: None }, id)
                .await?
                .ok_or_else(|| Error::not_found("sandbox", id.to_string())),
        }
    }
}

/// Runs lifecycle work on its own task, so it finishes even when the caller goes away (deadline
/// exceeded, client disconnect): a sandbox is never left half-provisioned or half-destroyed
/// because an RPC was cancelled. Graceful shutdown waits for in-flight RPCs, and so for this.
async fn run_to_completion<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work).await.map_err(|error| {
        Error::Internal(anyhow::Error::new(error).context("lifecycle task failed"))
    })?
}

fn changed_concurrently_name(name: &str) -> Error {
    Error::Aborted {
        reason: "CONCURRENT_MODIFICATION",
        message: format!("sandbox {name:?} kept changing concurrently; retry"),
    }
}

pub(crate) fn changed_concurrently(id: SandboxId) -> Error {
    Error::Aborted {
        reason: "CONCURRENT_MODIFICATION",
        message: format!("sandbox {id} was changed concurrently; re-read it and retry"),
    }
}

/// Identifies a create request for AIP-155: the same request id must come with the same request.
fn fingerprint(spec: &CreateSpec, ttl: Duration) -> String {
    let canonical = serde_json::json!({
        "template": spec.template,
        "name": spec.name,
        "labels": spec.labels,
        "metadata": spec.metadata,
        "ttl_seconds": ttl.as_secs(),
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
