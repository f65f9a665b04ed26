//! The reconciler's regular passes: expiry, idle and boot timeouts, unattended work, pool shrink.

use chrono::Utc;
use futures::StreamExt;

use super::Reconciler;
use crate::{
    error::Result,
    sandbox::{SandboxId, SandboxState, destroy::Teardown},
    store::{reconcile::TimeoutsByTemplate, sandbox_transitions::TransitionChange},
    template::Template,
};

/// Destroy reasons the reconciler records.
pub mod reason {
    pub const EXPIRED: &str = "expired";
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    pub const BOOT_TIMEOUT: &str = "boot_timeout";
    pub const PROVISIONING_FAILED: &str = "provisioning_failed";
    pub const RELEASE_INTERRUPTED: &str = "release_interrupted";
    pub const POOL_DISABLED: &str = "pool_disabled";
}

/// What a locked candidate turned out to need.
enum Decision {
    /// Move to `to` and destroy with `reason`.
    Act { to: SandboxState, reason: &'static str, last_error: Option<String> },
    /// No longer applies (changed since it was listed).
    Skip,
}

impl Reconciler {
    pub(super) async fn pass(&self, me: i32) {
        let steps = [
            ("expiry", self.expire().await),
            ("idle timeout", self.expire_idle().await),
            ("boot timeout", self.fail_overdue(me).await),
            ("unattended work", self.finish_unattended(me).await),
            ("artifact retention", self.remove_expired_artifacts().await),
        ];
        for (step, outcome) in steps {
            if let Err(error) = outcome {
                tracing::warn!(step, %error, "reconcile step failed; retrying next pass");
            }
        }
    }

    pub(super) fn store(&self) -> &crate::store::Store {
        self.manager.store()
    }

    async fn expire(&self) -> Result<()> {
        let expired = self.store().expired_sandboxes(self.config.batch_size).await?;
        futures::stream::iter(expired)
            .for_each_concurrent(self.config.concurrency, |id| {
                self.act_on(id, |sandbox| {
                    if sandbox.state == SandboxState::Running && sandbox.expire_at <= Utc::now() {
                        Decision::Act {
                            to: SandboxState::Expired,
                            reason: reason::EXPIRED,
                            last_error: None,
                        }
                    } else {
                        Decision::Skip
                    }
                })
            })
            .await;
        Ok(())
    }

    async fn expire_idle(&self) -> Result<()> {
        let timeouts =
            self.timeouts(|template| template.idle_timeout, self.defaults().idle_timeout);
        let candidates = self.store().idle_sandboxes(&timeouts, self.config.batch_size).await?;
        let activity = self.manager.activity();
        let mut first_seen = Vec::new();
        for candidate in candidates {
            // A touch this replica has not written yet counts as activity.
            if activity.pending_touch(candidate.id).is_some() {
                continue;
            }
            let Some(noticed_at) = candidate.noticed_at else {
                first_seen.push(candidate.id);
                continue;
            };
            let confirmed = Utc::now() - noticed_at
                >= chrono::Duration::from_std(self.idle_confirmation).unwrap_or_default();
            if !confirmed {
                continue;
            }
            let seen_activity = candidate.last_activity_at;
            self.act_on(candidate.id, |sandbox| {
                if sandbox.state == SandboxState::Running
                    && sandbox.last_activity_at == seen_activity
                {
                    Decision::Act {
                        to: SandboxState::Expired,
                        reason: reason::IDLE_TIMEOUT,
                        last_error: None,
                    }
                } else {
                    Decision::Skip
                }
            })
            .await;
        }
        if !first_seen.is_empty() {
            self.store().notice_idle(&first_seen).await?;
        }
        Ok(())
    }

    async fn fail_overdue(&self, me: i32) -> Result<()> {
        let timeouts =
            self.timeouts(|template| template.boot_timeout, self.defaults().boot_timeout);
        let overdue =
            self.store().overdue_provisioning(me, &timeouts, self.config.batch_size).await?;
        for id in overdue {
            self.act_on(id, |sandbox| {
                if !matches!(sandbox.state, SandboxState::Pending | SandboxState::Creating) {
                    return Decision::Skip;
                }
                let boot_timeout = self
                    .manager
                    .templates()
                    .get(&sandbox.template)
                    .map_or(self.defaults().boot_timeout, |template| template.boot_timeout);
                let last_error = format!(
                    "provisioning did not finish: {} for longer than the boot timeout ({}) or its worker stopped",
                    sandbox.state,
                    humantime::format_duration(boot_timeout)
                );
                Decision::Act { to: SandboxState::Failed, reason: reason::BOOT_TIMEOUT, last_error: Some(last_error) }
            })
            .await;
        }
        Ok(())
    }

    /// Finishes work nobody is doing: each sandbox is claimed first, so one replica does it.
    async fn finish_unattended(&self, me: i32) -> Result<()> {
        let unattended = self.store().unattended_work(me, self.config.batch_size).await?;
        futures::stream::iter(unattended)
            .for_each_concurrent(self.config.concurrency, |id| async move {
                if let Err(error) = self.finish(id, me).await {
                    tracing::warn!(sandbox_id = %id, %error, "finishing unattended work failed; retrying next pass");
                }
            })
            .await;
        Ok(())
    }

    async fn finish(&self, id: SandboxId, me: i32) -> Result<()> {
        if self.manager.replica().is_in_flight(id) || !self.store().claim_unattended(id, me).await?
        {
            return Ok(());
        }
        let Some(locked) = self.store().try_lock_sandbox(id).await? else { return Ok(()) };
        let sandbox = locked.release().await?;
        // A destroy already under way keeps the reason it was started with.
        let why = match sandbox.state {
            SandboxState::Ready => reason::RELEASE_INTERRUPTED,
            SandboxState::Failed => reason::PROVISIONING_FAILED,
            _ => sandbox.destroy_reason.as_deref().unwrap_or(reason::EXPIRED),
        };
        tracing::info!(sandbox_id = %id, state = %sandbox.state, reason = why, "finishing unattended work");
        self.destroy(id, &sandbox.tenant, why).await;
        Ok(())
    }

    /// Ready members of pools that were disabled are destroyed.
    pub(super) async fn shrink_pools(&self) {
        let surplus = match self.manager.surplus_members().await {
            Ok(surplus) => surplus,
            Err(error) => {
                tracing::warn!(%error, "listing surplus pool members failed");
                return;
            }
        };
        for id in surplus {
            self.destroy(id, "", reason::POOL_DISABLED).await;
        }
    }

    /// Locks `id` without waiting (another replica holding it is on it), asks `decide` what the
    /// sandbox needs as it is now, moves it and destroys it.
    async fn act_on(
        &self,
        id: SandboxId,
        decide: impl FnOnce(&crate::sandbox::Sandbox) -> Decision,
    ) {
        let outcome = async {
            let Some(_in_flight) = self.manager.replica().start(id) else { return Ok(()) };
            let Some(locked) = self.store().try_lock_sandbox(id).await? else { return Ok(()) };
            let Decision::Act { to, reason, last_error } = decide(locked.sandbox()) else {
                return locked.release().await.map(|_| ());
            };
            let tenant = locked.sandbox().tenant.clone();
            let change = TransitionChange {
                reason,
                last_error: last_error.as_deref(),
                destroy_reason: Some(reason),
                worker: self.manager.replica().worker(),
                ..TransitionChange::default()
            };
            let moved = locked.transition(&[to], change, "system").await?;
            if moved.removed_routes > 0 {
                self.manager.catch_up_routes().await;
            }
            tracing::info!(sandbox_id = %id, to = %to, reason, "reconciler acted");
            self.manager.metrics.record_reconcile(reason);
            drop(_in_flight);
            self.destroy(id, &tenant, reason).await;
            Ok::<_, crate::error::Error>(())
        }
        .await;
        if let Err(error) = outcome {
            tracing::warn!(sandbox_id = %id, %error, "reconciling a sandbox failed; retrying next pass");
        }
    }

    async fn destroy(&self, id: SandboxId, tenant: &str, reason: &str) {
        let teardown = Teardown::by_system(tenant, reason);
        if let Err(error) = self.manager.tear_down(id, &teardown, None).await {
            tracing::warn!(sandbox_id = %id, %error, "reconciler destroy did not finish; retrying next pass");
        }
    }

    fn defaults(&self) -> &crate::config::SandboxDefaults {
        &self.manager.defaults
    }

    fn timeouts(
        &self,
        of: impl Fn(&Template) -> std::time::Duration,
        default: std::time::Duration,
    ) -> TimeoutsByTemplate {
        let templates = self.manager.templates();
        TimeoutsByTemplate {
            templates: templates.iter().map(|t| t.name.clone()).collect(),
            seconds: templates.iter().map(|t| of(t).as_secs_f64()).collect(),
            default_seconds: default.as_secs_f64(),
        }
    }
}
