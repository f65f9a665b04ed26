//! DestroySandbox and cleanup, in one transaction: the sandbox row is locked, its Redis keys are
//! unlinked, and then DROP SCHEMA commits together with → DESTROYING → DESTROYED, both audited.
//! When the Redis keys cannot be removed (Redis down), only → DESTROYING is committed, so the
//! sandbox shows that its destruction started and the next destroy finishes it.
//!
//! The keys go before the commit so that DESTROYED always means gone: a crash in between leaves
//! the sandbox in its previous state without (some of) its keys, and destroying it again (the
//! caller saw no answer) completes the job.

use std::time::Duration;

use super::{
    Sandbox, SandboxId, SandboxState,
    manager::{SandboxManager, check_etag, run_to_completion, scope},
};
use crate::{
    auth::Principal,
    error::{Error, Result},
    store::{sandbox_transitions::TransitionChange, sandboxes::Scope},
};

/// Who is tearing a sandbox down, and under which scope it must be visible to them.
struct Teardown {
    tenant: String,
    owner_scope: Option<String>,
    actor: String,
    reason: String,
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
    ) -> Result<Sandbox> {
        principal.require_manager()?;
        let caller = scope(principal);
        let teardown = Teardown {
            tenant: caller.tenant.to_string(),
            owner_scope: caller.owner.map(str::to_string),
            actor: principal.actor(),
            reason: if reason.is_empty() { "requested by caller" } else { reason }.to_string(),
        };
        let (manager, etag) = (self.clone(), etag.map(str::to_string));
        run_to_completion(async move { manager.tear_down(id, &teardown, etag.as_deref()).await })
            .await
    }

    async fn tear_down(
        &self,
        id: SandboxId,
        teardown: &Teardown,
        etag: Option<&str>,
    ) -> Result<Sandbox> {
        let scope = Scope { tenant: &teardown.tenant, owner: teardown.owner_scope.as_deref() };
        let locked = self
            .store
            .lock_sandbox(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", id.to_string()))?;
        let sandbox = locked.sandbox();
        let steps: &[SandboxState] = match sandbox.state {
            SandboxState::Destroyed => return locked.release().await,
            SandboxState::Pending | SandboxState::Creating => {
                return Err(Error::FailedPrecondition {
                    reason: "SANDBOX_PROVISIONING",
                    message:
                        "the sandbox is still being provisioned; retry when it is RUNNING or FAILED"
                            .into(),
                });
            }
            SandboxState::Destroying => &[SandboxState::Destroyed],
            SandboxState::Ready
            | SandboxState::Running
            | SandboxState::Expired
            | SandboxState::Failed => &[SandboxState::Destroying, SandboxState::Destroyed],
        };
        check_etag(sandbox, etag)?;
        let change = TransitionChange {
            reason: &teardown.reason,
            destroy_reason: Some(&teardown.reason),
            ..TransitionChange::default()
        };
        let (steps, outcome) = match self.redis.purge(id).await {
            Ok(removed_keys) => {
                tracing::debug!(%id, removed_keys, "sandbox keys removed");
                (steps, Ok(()))
            }
            // Record that the destruction started; the next destroy finishes it.
            Err(error) if steps.len() > 1 => (&steps[..1], Err(error)),
            Err(error) => return Err(error),
        };
        let transitioned = locked.transition(steps, change, &teardown.actor).await?;
        if transitioned.removed_routes > 0 {
            // This replica stops routing to the sandbox at once, not at the next NOTIFY.
            if let Err(error) = self.routes.catch_up(&self.store).await {
                tracing::warn!(%error, "routing table catch-up failed; the sync loop will retry");
            }
        }
        outcome.map(|()| transitioned.sandbox)
    }

    /// Tears down a sandbox whose provisioning failed. Cleanup problems (Redis down, say) are
    /// logged and retried in the background until the sandbox is DESTROYED.
    pub(super) async fn clean_up_failed(&self, failed: Sandbox, actor: &str) {
        let teardown = Teardown {
            tenant: failed.tenant,
            owner_scope: None,
            actor: actor.to_string(),
            reason: "provisioning failed".into(),
        };
        let id = failed.id;
        if let Err(error) = self.tear_down(id, &teardown, None).await {
            tracing::warn!(sandbox_id = %id, %error, "cleanup after failed provisioning did not finish; retrying in the background");
            let manager = self.clone();
            self.tasks.spawn(async move {
                manager.retry_with_backoff(|| manager.tear_down(id, &teardown, None)).await
            });
        }
    }

    /// Removes the Redis namespace of a create that never became a sandbox (refused, or not
    /// recordable); retried in the background while Redis does not answer.
    pub(super) async fn discard_namespace(&self, id: SandboxId) {
        if self.redis.purge(id).await.is_ok() {
            return;
        }
        let manager = self.clone();
        self.tasks
            .spawn(async move { manager.retry_with_backoff(|| manager.redis.purge(id)).await });
    }

    /// Runs `attempt` with exponential backoff (100 ms doubling up to 5 s) until it succeeds or
    /// the server shuts down; failures are logged.
    async fn retry_with_backoff<T, F, Fut>(&self, mut attempt: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            match attempt().await {
                Ok(_) => return,
                Err(error) => tracing::warn!(%error, "background cleanup attempt failed; retrying"),
            }
        }
    }
}
