//! CreateSandbox and EnsureSandbox: validation, request-id idempotency (AIP-155), and
//! provisioning: the Redis namespace, then the schema and the row in one PostgreSQL transaction
//! (`store::sandbox_create`). A create that fails midway leaves nothing behind and is recorded
//! as a sandbox that went FAILED → DESTROYING → DESTROYED with `last_error`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::{
    Sandbox, SandboxId, SandboxState, boot,
    destroy::Teardown,
    manager::{SandboxManager, SandboxSelector},
};
use crate::{
    auth::Principal,
    clock,
    error::{Error, Result},
    isolation::credentials::IssuedCredentials,
    store::{
        pool::ClaimCredentials,
        quotas::{LiveQuotas, QuotaRefusal},
        sandbox_create::{Booting, CreateOutcome, NewSandbox, Provisioning},
        sandbox_roles::RoleSpec,
    },
    template::Template,
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
    /// An earlier sandbox whose pushed workspace the new one starts from.
    pub init_from_store: Option<SandboxId>,
}

impl SandboxManager {
    /// Creates a sandbox and returns it RUNNING. A failure while provisioning leaves nothing
    /// behind: the sandbox goes FAILED → DESTROYING → DESTROYED with `last_error`.
    #[tracing::instrument(name = "sandbox.create", skip_all, fields(tenant = %principal.tenant, template = %spec.template))]
    pub async fn create(&self, principal: &Principal, spec: CreateSpec) -> Result<Sandbox> {
        let template = spec.template.clone();
        let result = self.create_counted(principal, spec).await;
        self.metrics.record_create(&template, &result);
        result
    }

    async fn create_counted(&self, principal: &Principal, spec: CreateSpec) -> Result<Sandbox> {
        principal.require_manager()?;
        let template = self
            .templates
            .get(&spec.template)
            .ok_or_else(|| Error::not_found("template", &spec.template))?;
        let init_from = self.init_source(principal, &template, spec.init_from_store).await?;
        let new = self.new_sandbox(principal, &template, spec)?;
        if let Some(earlier) = self.answer_for_request_id(principal, &new).await? {
            return Ok(earlier);
        }
        let (manager, actor) = (self.clone(), principal.actor());
        let provisioning = new.clone();
        let outcome = self
            .run_to_completion(async move {
                manager.provision(provisioning, template, init_from, actor).await
            })
            .await?;
        match outcome {
            CreateOutcome::Created(sandbox) => Ok(*sandbox),
            CreateOutcome::QuotaExceeded(refusal) => Err(quota_error(&new, refusal)),
            // A concurrent duplicate of this request (same request id, so also the same name)
            // committed first: answer as it was answered.
            CreateOutcome::NameTaken | CreateOutcome::RequestIdTaken
                if let Some(earlier) = self.answer_for_request_id(principal, &new).await? =>
            {
                Ok(earlier)
            }
            CreateOutcome::NameTaken => Err(Error::AlreadyExists {
                reason: "SANDBOX_NAME_TAKEN",
                message: format!(
                    "a live sandbox named {:?} already exists in this tenant",
                    new.name.unwrap_or_default()
                ),
            }),
            CreateOutcome::RequestIdTaken => Err(Error::Aborted {
                reason: "CONCURRENT_MODIFICATION",
                message: "a concurrent create with this request_id changed; retry".into(),
            }),
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

    /// The sandbox `init_from_store` names: visible to the caller, and only for a template
    /// whose runtime has a workspace.
    async fn init_source(
        &self,
        principal: &Principal,
        template: &Template,
        source: Option<SandboxId>,
    ) -> Result<Option<SandboxId>> {
        let Some(source) = source else { return Ok(None) };
        if !boot::boots(template) {
            return Err(Error::invalid(
                "init_from_store",
                format!(
                    "template {:?} has runtime \"none\": it has no workspace to fill",
                    template.name
                ),
            ));
        }
        self.find(principal, &SandboxSelector::Id(source)).await?;
        Ok(Some(source))
    }

    fn new_sandbox(
        &self,
        principal: &Principal,
        template: &Template,
        spec: CreateSpec,
    ) -> Result<NewSandbox> {
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
        let request_fingerprint = fingerprint(&spec, ttl);
        Ok(NewSandbox {
            id: SandboxId::new(),
            tenant: principal.tenant.clone(),
            owner: principal.subject.clone(),
            name: spec.name,
            template: template.name.clone(),
            labels: spec.labels,
            metadata: spec.metadata,
            request_id: spec.request_id,
            request_fingerprint,
            created_at: now,
            expire_at: clock::later_saturating(now, ttl),
            max_expire_at: clock::later_saturating(now, template.max_ttl),
        })
    }

    /// AIP-155: the sandbox an earlier create with this request id made (once it settled), or
    /// `INVALID_ARGUMENT` when that create was a different request; `None` when the id is new.
    async fn answer_for_request_id(
        &self,
        principal: &Principal,
        new: &NewSandbox,
    ) -> Result<Option<Sandbox>> {
        let Some(request_id) = new.request_id.as_deref() else { return Ok(None) };
        let Some((earlier, fingerprint)) =
            self.store.get_sandbox_by_request_id(&new.tenant, request_id).await?
        else {
            return Ok(None);
        };
        let same_request = earlier.owner == new.owner
            && fingerprint.as_deref() == Some(new.request_fingerprint.as_str());
        if !same_request {
            return Err(Error::invalid(
                "request_id",
                "was already used for a different create request",
            ));
        }
        self.wait_until_settled(principal, earlier).await.map(Some)
    }

    /// Claims a ready warm-pool member when the template has a pool and one is ready;
    /// otherwise provisions a new sandbox: the Redis namespace marker, then the schema and the
    /// row in one transaction, then (for a runtime that boots) the boot. A refused create
    /// (quota, name, request id) has its marker removed; a failed one is recorded and cleaned
    /// up.
    async fn provision(
        &self,
        new: NewSandbox,
        template: Arc<Template>,
        init_from: Option<SandboxId>,
        actor: String,
    ) -> Result<CreateOutcome> {
        let quotas = self.live_quotas(&new.tenant);
        let pooled = template.pool.enabled;
        let credentials = IssuedCredentials::generate(template.postgres_role, template.redis_acl);
        // A member's workspace was made without the caller's earlier files: start cold.
        let claimable = pooled && init_from.is_none();
        if claimable && let Some(claimed) = self.claim(&new, quotas, &credentials, &actor).await? {
            return Ok(claimed);
        }
        let booting = boot::boots(&template).then(|| Booting { worker: self.replica.worker() });
        let limit = self.worker_endpoints.role_connection_limit;
        let provisioning = Provisioning {
            template_sql: &template.schema_sql,
            role: template
                .postgres_role
                .then_some(RoleSpec { login: true, connection_limit: limit }),
            credentials: Some(&credentials),
        };
        let created = async {
            self.redis.provision(new.id, &new.tenant, &template.name).await?;
            if let Some(acl) = &credentials.acl {
                self.redis.set_acl_user(new.id, acl).await?;
            }
            self.store.create_sandbox(&new, provisioning, quotas, pooled, booting, &actor).await
        }
        .await;
        match created {
            Ok(CreateOutcome::Created(sandbox)) if booting.is_some() => {
                let ready = SandboxState::Running;
                let booted = self.boot(*sandbox, &template, ready, init_from, &actor).await?;
                Ok(CreateOutcome::Created(Box::new(booted)))
            }
            Ok(CreateOutcome::Created(sandbox)) => Ok(CreateOutcome::Created(sandbox)),
            Ok(refused) => {
                self.discard_namespace(new.id).await;
                Ok(refused)
            }
            Err(error) => {
                self.record_failure(&new, &error, &actor).await;
                Err(error)
            }
        }
    }

    /// Claims a ready warm-pool member for `new`, giving it fresh credentials: its role's
    /// password changes in the claim's transaction, its ACL user is made right after (a claim
    /// whose ACL user cannot be made is torn down, and the create fails).
    async fn claim(
        &self,
        new: &NewSandbox,
        quotas: LiveQuotas,
        credentials: &IssuedCredentials,
        actor: &str,
    ) -> Result<Option<CreateOutcome>> {
        let connection_limit = self.worker_endpoints.role_connection_limit;
        let issued = (credentials.role.is_some() || credentials.acl.is_some())
            .then_some(ClaimCredentials { issued: credentials, connection_limit });
        let started = std::time::Instant::now();
        let claimed = self.store.claim_pool_member(new, quotas, issued, actor).await?;
        self.metrics.record_pool_claim(&new.template, claimed.is_some(), started.elapsed());
        let Some(claimed) = claimed else { return Ok(None) };
        let CreateOutcome::Created(sandbox) = &claimed else { return Ok(Some(claimed)) };
        self.pool_wakeup.notify_one();
        if let Some(acl) = &credentials.acl
            && let Err(error) = self.redis.set_acl_user(sandbox.id, acl).await
        {
            let teardown = Teardown::by_system(&sandbox.tenant, "provisioning_failed");
            // Boxed: the teardown's future would otherwise be nested inside every create's.
            if let Err(cleanup) = Box::pin(self.tear_down(sandbox.id, &teardown, None)).await {
                tracing::warn!(sandbox_id = %sandbox.id, error = %cleanup, "a claim without its ACL user could not be torn down; the reconciler will");
            }
            return Err(error);
        }
        Ok(Some(claimed))
    }

    /// The quotas a create of `tenant` is held to (`sandbox.tenant_live_limits` first).
    fn live_quotas(&self, tenant: &str) -> LiveQuotas {
        let per_tenant = self
            .defaults
            .tenant_live_limits
            .get(tenant)
            .copied()
            .unwrap_or(self.defaults.max_live_per_tenant);
        LiveQuotas {
            per_owner: self.defaults.max_live_per_owner,
            per_tenant: (per_tenant > 0).then_some(per_tenant),
        }
    }

    /// Records a create that failed (row FAILED with the error) and cleans up after it. When not
    /// even the record can be written (PostgreSQL down), only the Redis namespace is removed.
    async fn record_failure(&self, new: &NewSandbox, error: &Error, actor: &str) {
        let last_error = error.with_cause();
        let worker = self.replica.worker();
        match self.store.record_failed_sandbox(new, &last_error, worker, actor).await {
            Ok(failed) => self.clean_up_failed(failed).await,
            Err(record_error) => {
                tracing::warn!(sandbox_id = %new.id, error = %record_error, "the failed create could not be recorded");
                self.discard_namespace(new.id).await;
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
}

/// RESOURCE_EXHAUSTED with a QuotaFailure naming the quota (`owner:<subject>` or
/// `tenant:<tenant>`).
fn quota_error(new: &NewSandbox, refusal: QuotaRefusal) -> Error {
    match refusal {
        QuotaRefusal::Tenant { limit } => Error::QuotaExceeded {
            subject: format!("tenant:{}", new.tenant),
            message: format!(
                "tenant {:?} already has the maximum of {limit} live sandboxes (sandbox.max_live_per_tenant)",
                new.tenant
            ),
        },
        QuotaRefusal::Owner { limit } => Error::QuotaExceeded {
            subject: format!("owner:{}", new.owner),
            message: format!(
                "owner {:?} already has the maximum of {limit} live sandboxes (sandbox.max_live_per_owner)",
                new.owner
            ),
        },
        // Only pool refills are held to a pool's bounds, never a create.
        QuotaRefusal::Pool => {
            Error::Internal(anyhow::anyhow!("a create was refused by pool bounds"))
        }
    }
}

fn changed_concurrently_name(name: &str) -> Error {
    Error::Aborted {
        reason: "CONCURRENT_MODIFICATION",
        message: format!("sandbox {name:?} kept changing concurrently; retry"),
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
        "init_from_store": spec.init_from_store.map(|id| id.to_string()),
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
