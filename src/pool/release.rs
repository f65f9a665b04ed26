//! `ReleaseSandbox`: a claimed sandbox goes back to its pool, reset, or is destroyed when it
//! cannot be (unhealthy, pool full, pool disabled since it was claimed). Three steps, like a
//! destroy, so no Redis I/O happens under a database lock and a crash leaves something the
//! reconciler finishes (a READY row still owned by a tenant, which it destroys):
//!
//! 1. Locked: RUNNING → READY with its tables truncated, routes removed and name, labels,
//!    metadata and request id cleared, its role's login and password and its stored credentials
//!    withdrawn; still the caller's, so nobody can claim it yet.
//! 2. The last user's sessions of the role ended and its ACL user removed (closing its Redis
//!    connections); Redis: keys removed, marker written again, a round trip; the schema's
//!    tables checked; a `process` sandbox's workspace made afresh. The next claim gives the
//!    member new passwords.
//! 3. The row is handed to the pool (no tenant): claimable from now on.

use crate::{
    auth::Principal,
    error::{Error, Result},
    sandbox::{
        Sandbox, SandboxId, SandboxState, boot,
        destroy::Teardown,
        manager::{SandboxManager, check_etag},
    },
    store::{pool::PoolFigures, sandbox_transitions::TransitionChange},
};

/// What to do with a sandbox being released.
enum Verdict {
    BackToPool,
    Destroy(&'static str),
}

impl SandboxManager {
    /// Releases a sandbox to its template's pool; returns it READY (after which the caller no
    /// longer sees it), or DESTROYED when it could not go back.
    #[tracing::instrument(name = "pool.release", skip_all, fields(tenant = %principal.tenant, sandbox_id = %id))]
    pub async fn release(
        &self,
        principal: &Principal,
        id: SandboxId,
        etag: Option<&str>,
    ) -> Result<Sandbox> {
        principal.require_manager()?;
        let teardown = Teardown::for_caller(principal, "");
        let (manager, etag) = (self.clone(), etag.map(str::to_string));
        self.run_to_completion(
            async move { manager.hand_back(id, teardown, etag.as_deref()).await },
        )
        .await
    }

    async fn hand_back(
        &self,
        id: SandboxId,
        mut teardown: Teardown,
        etag: Option<&str>,
    ) -> Result<Sandbox> {
        let _in_flight = self.replica.start(id);
        let scope = crate::store::sandboxes::Scope {
            tenant: &teardown.tenant,
            owner: teardown.owner_scope.as_deref(),
        };
        // The verdict reads the pool's figures before the row is locked: holding the row's
        // connection while waiting for a second one would let concurrent releases exhaust the
        // pool. The template and pool membership it depends on do not change under the lock.
        let seen = self
            .store
            .get_sandbox(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", id.to_string()))?;
        let verdict = self.verdict(&seen).await?;
        let mut locked = self
            .store
            .lock_sandbox(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", id.to_string()))?;
        let sandbox = locked.sandbox().clone();
        if sandbox.state != SandboxState::Running {
            return Err(Error::FailedPrecondition {
                reason: "SANDBOX_NOT_RUNNING",
                message: format!(
                    "only RUNNING sandboxes can be released; this one is {}",
                    sandbox.state
                ),
            });
        }
        check_etag(&sandbox, etag)?;
        if let Verdict::Destroy(reason) = verdict {
            locked.release().await?;
            teardown.reason = reason.into();
            return self.tear_down(id, &teardown, None).await;
        }
        locked.truncate_tables().await?;
        locked.withdraw_credentials().await?;
        let change = TransitionChange {
            reason: "released to the pool",
            worker: self.replica.worker(),
            clear_identity: true,
            ..TransitionChange::default()
        };
        let released = locked.transition(&[SandboxState::Ready], change, &teardown.actor).await?;
        if released.removed_routes > 0 {
            self.catch_up_routes().await;
        }
        if let Err(error) = self.reset_namespace(&released.sandbox).await {
            tracing::warn!(sandbox_id = %id, %error, "released sandbox failed its health check; destroying it");
            teardown.reason = "release health check failed".into();
            teardown.owner_scope = None;
            return self.tear_down(id, &teardown, None).await;
        }
        if !self.store.return_to_pool(id, self.replica.worker()).await? {
            return Err(crate::sandbox::manager::changed_concurrently(id));
        }
        self.pool_wakeup.notify_one();
        Ok(released.sandbox)
    }

    /// Back to the pool only when the template still pools, the pool has room and the sandbox
    /// is healthy enough to be worth resetting.
    async fn verdict(&self, sandbox: &Sandbox) -> Result<Verdict> {
        let Some(template) = self.templates.get(&sandbox.template) else {
            return Ok(Verdict::Destroy("released; template no longer exists"));
        };
        if !template.pool.enabled {
            if sandbox.from_pool {
                return Ok(Verdict::Destroy("released; the template's pool is disabled"));
            }
            return Err(Error::FailedPrecondition {
                reason: "TEMPLATE_HAS_NO_POOL",
                message: format!("template {:?} has no warm pool to release into", template.name),
            });
        }
        let figures = self.store.pool_figures(std::slice::from_ref(&template.name)).await?;
        let members = figures.get(&template.name).map_or(0, PoolFigures::members);
        let others = members - i64::from(sandbox.from_pool);
        if others >= i64::from(template.pool.max_size) {
            return Ok(Verdict::Destroy("released; the pool is full"));
        }
        Ok(Verdict::BackToPool)
    }

    /// Step 2: the Redis namespace emptied and marked again, then checked with the schema; a
    /// runtime that boots gets a fresh workspace (processes killed, files removed, `cold_start`
    /// run again), so nothing of the last user's reaches the next.
    async fn reset_namespace(&self, sandbox: &Sandbox) -> Result<()> {
        if let Some(template) = self.templates.get(&sandbox.template)
            && boot::boots(&template)
        {
            self.runtimes.get(template.runtime).destroy(sandbox.id).await?;
            self.prepare_runtime(sandbox, &template, None).await?;
        }
        self.store.end_role_sessions(sandbox.id).await?;
        if self.templates.any_redis_acl() {
            self.redis.delete_acl_user(sandbox.id).await?;
        }
        self.redis.purge(sandbox.id).await?;
        self.redis.provision(sandbox.id, "", &sandbox.template).await?;
        if !self.redis.round_trip(sandbox.id).await? {
            return Err(Error::Internal(anyhow::anyhow!("the namespace marker did not stick")));
        }
        let tables = self.store.sandbox_tables(sandbox.id).await?;
        let expected = self.templates.tables(&sandbox.template);
        if tables != expected {
            return Err(Error::Internal(anyhow::anyhow!(
                "schema tables {tables:?} differ from the template's {expected:?}"
            )));
        }
        Ok(())
    }
}
