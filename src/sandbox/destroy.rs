//! DestroySandbox and every other teardown (failed creates, the reconciler), in three steps so
//! that a crash at any point leaves a sandbox the reconciler can finish, never a live sandbox
//! with missing data:
//!
//! 1. **Intent**: the row is locked and moved to DESTROYING (routes removed, audited, this
//!    replica recorded as its worker), and that commits.
//! 2. **Resources**, with no database lock held: the runtime's processes are killed and its
//!    workspace removed (`process`), the object prefix removed unless the template keeps it
//!    (`keep_objects`); the sandbox's login role stops taking logins and its sessions are ended,
//!    its Redis ACL user is removed (closing its connections); on Redis Cluster the Redis keys
//!    are unlinked
//!    (read from the sandbox's hash slot). On one server they are left to the reconciler's
//!    batched keyspace pass, since finding them there means walking every key
//!    (`isolation::redis_namespace` has the reasoning).
//! 3. **Done**: the row is locked again, the schema and the login role dropped (with the stored
//!    credentials) and DESTROYING → DESTROYED committed together, with `keys_purged_at` when step 2 removed the keys. So DESTROYED means the
//!    schema is gone and routes and connections refused; the Redis keys are gone with it on a
//!    cluster, and by the next keyspace pass on one server.
//!
//! When step 2 or 3 fails (Redis or PostgreSQL down), the sandbox stays DESTROYING and is marked
//! unattended: the next destroy or any replica's reconciler finishes it. A crash between the
//! steps leaves DESTROYING with a worker whose liveness lock is gone, which the reconciler also
//! finishes.

use super::{
    Sandbox, SandboxId, SandboxState,
    manager::{SandboxManager, check_etag, scope},
    workspace_sync::SyncSpec,
};
use crate::{
    auth::Principal,
    error::{Error, Result},
    store::{sandbox_transitions::TransitionChange, sandboxes::Scope},
    template::{RuntimeKind, Template},
};

/// Who is tearing a sandbox down, and under which scope it must be visible to them.
pub(crate) struct Teardown {
    pub tenant: String,
    /// Members see only their own sandboxes; `None` for tenant-wide callers and the system.
    pub owner_scope: Option<String>,
    pub actor: String,
    pub reason: String,
}

impl Teardown {
    /// A teardown on behalf of a caller, who sees only what its scope allows.
    pub(crate) fn for_caller(principal: &Principal, reason: &str) -> Self {
        let caller = scope(principal);
        Self {
            tenant: caller.tenant.to_string(),
            owner_scope: caller.owner.map(str::to_string),
            actor: principal.actor(),
            reason: reason.to_string(),
        }
    }

    /// A teardown by the system (the reconciler, cleanup after a failed create).
    pub(crate) fn by_system(tenant: &str, reason: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            owner_scope: None,
            actor: "system".into(),
            reason: reason.to_string(),
        }
    }
}

impl SandboxManager {
    /// Destroys a sandbox: unlinks its Redis keys, drops its schema, and ends DESTROYED.
    /// Idempotent: destroying a destroyed sandbox returns it unchanged, and a destroy that was
    /// interrupted (state DESTROYING) is finished by the next call.
    #[tracing::instrument(name = "sandbox.destroy", skip_all, fields(tenant = %principal.tenant, sandbox_id = %id))]
    pub async fn destroy(
        &self,
        principal: &Principal,
        id: SandboxId,
        reason: &str,
        etag: Option<&str>,
        final_sync: bool,
    ) -> Result<Sandbox> {
        principal.require_manager()?;
        if final_sync {
            // Before anything changes: a failed sync fails the destroy, the sandbox runs on.
            let (sandbox, _) = self.running_with_runtime(principal, id).await?;
            check_etag(&sandbox, etag)?;
            self.push_sandbox(&sandbox, &SyncSpec { delete: true, ..SyncSpec::default() }).await?;
        }
        let reason = if reason.is_empty() { "requested by caller" } else { reason };
        let teardown = Teardown::for_caller(principal, reason);
        let (manager, etag) = (self.clone(), etag.map(str::to_string));
        let result = self
            .run_to_completion(
                async move { manager.tear_down(id, &teardown, etag.as_deref()).await },
            )
            .await;
        self.metrics.record_destroy(&result);
        result
    }

    /// The three steps of the module docs. A sandbox still being provisioned is refused (its
    /// creator or the boot timeout settles it first).
    pub(crate) async fn tear_down(
        &self,
        id: SandboxId,
        teardown: &Teardown,
        etag: Option<&str>,
    ) -> Result<Sandbox> {
        let _in_flight = self.replica.start(id);
        let scope = Scope { tenant: &teardown.tenant, owner: teardown.owner_scope.as_deref() };
        let locked = self
            .store
            .lock_sandbox(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", id.to_string()))?;
        let sandbox = locked.sandbox();
        let template = self.templates.get(&sandbox.template);
        match sandbox.state {
            SandboxState::Destroyed => return locked.release().await,
            SandboxState::Pending | SandboxState::Creating => {
                return Err(Error::FailedPrecondition {
                    reason: "SANDBOX_PROVISIONING",
                    message:
                        "the sandbox is still being provisioned; retry when it is RUNNING or FAILED"
                            .into(),
                });
            }
            // An interrupted destroy: finish it.
            SandboxState::Destroying => {
                locked.release().await?;
            }
            SandboxState::Ready
            | SandboxState::Running
            | SandboxState::Expired
            | SandboxState::Failed => {
                check_etag(sandbox, etag)?;
                let change = TransitionChange {
                    reason: &teardown.reason,
                    destroy_reason: Some(&teardown.reason),
                    worker: self.replica.worker(),
                    ..TransitionChange::default()
                };
                let transitioned =
                    locked.transition(&[SandboxState::Destroying], change, &teardown.actor).await?;
                if transitioned.removed_routes > 0 {
                    self.catch_up_routes().await;
                }
            }
        }
        match self.remove_resources(id, template.as_deref(), teardown).await {
            Ok(destroyed) => Ok(destroyed),
            Err(error) => {
                tracing::warn!(sandbox_id = %id, %error, "destroy stopped at DESTROYING; it will be finished later");
                if let Err(abandon_error) = self.store.abandon_work(id, self.replica.worker()).await
                {
                    tracing::warn!(sandbox_id = %id, error = %abandon_error, "could not mark the destroy as unattended");
                }
                Err(error)
            }
        }
    }

    /// Steps 2 and 3: without any database lock, the runtime's processes and workspace, the
    /// object prefix (unless the template keeps it) and the Redis keys (when that is cheap);
    /// then the schema with DESTROYED.
    async fn remove_resources(
        &self,
        id: SandboxId,
        template: Option<&Template>,
        teardown: &Teardown,
    ) -> Result<Sandbox> {
        // A template no longer configured: its runtime is taken to be `process`, so a workspace
        // it may have left is still removed, and its objects are kept (nothing says to remove
        // them).
        let runtime = template.map_or(RuntimeKind::Process, |t| t.runtime);
        let keep_objects = template.is_none_or(|t| t.keep_objects);
        self.runtimes.get(runtime).destroy(id).await?;
        self.remove_objects(id, keep_objects).await?;
        self.lock_out_credentials(id).await?;
        let removed_keys = self.redis.purge_if_cheap(id).await?;
        tracing::debug!(sandbox_id = %id, ?removed_keys, "sandbox keys removed (None: left to the keyspace pass)");
        let scope = Scope { tenant: &teardown.tenant, owner: None };
        let locked = self
            .store
            .lock_sandbox(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", id.to_string()))?;
        if locked.sandbox().state != SandboxState::Destroying {
            // Someone else finished it meanwhile.
            return locked.release().await;
        }
        let change = TransitionChange {
            reason: &teardown.reason,
            keys_purged: removed_keys.is_some(),
            ..TransitionChange::default()
        };
        let destroyed =
            locked.transition(&[SandboxState::Destroyed], change, &teardown.actor).await?;
        Ok(destroyed.sandbox)
    }

    /// The sandbox's own credentials stop working: its role may no longer log in and its open
    /// sessions end; its Redis ACL user is removed (when any template makes them), which closes
    /// its connections. The role itself is dropped with the schema.
    pub(crate) async fn lock_out_credentials(&self, id: SandboxId) -> Result<()> {
        let ended = self.store.lock_out_role(id).await?;
        if ended > 0 {
            tracing::info!(sandbox_id = %id, sessions = ended, "sessions of the sandbox role ended");
        }
        if self.templates.any_redis_acl() {
            self.redis.delete_acl_user(id).await?;
        }
        Ok(())
    }

    /// This replica stops routing to a sandbox at once, not at the next NOTIFY.
    pub(crate) async fn catch_up_routes(&self) {
        if let Err(error) = self.routes.catch_up(&self.store).await {
            tracing::warn!(%error, "routing table catch-up failed; the sync loop will retry");
        }
    }

    /// Tears down a sandbox whose provisioning failed. When that cannot finish now (Redis down,
    /// say), the sandbox is left unattended and the reconciler finishes it.
    pub(super) async fn clean_up_failed(&self, failed: Sandbox) {
        let teardown = Teardown::by_system(&failed.tenant, "provisioning_failed");
        if let Err(error) = self.tear_down(failed.id, &teardown, None).await {
            tracing::warn!(sandbox_id = %failed.id, %error, "cleanup after failed provisioning did not finish; the reconciler will");
        }
    }

    /// Removes the Redis namespace of a create that never became a sandbox (refused, or not
    /// recordable): only its marker exists, since nobody was given the prefix. When Redis does
    /// not answer, the orphan sweep removes it after its grace.
    pub(crate) async fn discard_namespace(&self, id: SandboxId) {
        if let Err(error) = self.redis.discard_marker(id).await {
            tracing::warn!(sandbox_id = %id, %error, "could not remove the namespace of a refused create; the orphan sweep will");
        }
        if self.templates.any_redis_acl()
            && let Err(error) = self.redis.delete_acl_user(id).await
        {
            tracing::warn!(sandbox_id = %id, %error, "could not remove the ACL user of a refused create; the orphan sweep will");
        }
    }
}
