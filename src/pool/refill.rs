//! Keeping pools at `min_ready`: run by the reconciler in every replica. The count check that
//! bounds a pool is exact (it runs under the template's pool lock, in the insert that makes the
//! member), so replicas refilling at once may waste a provisioning but never overfill a pool.

use std::sync::Arc;

use chrono::Utc;
use futures::{StreamExt, stream};

use crate::{
    clock,
    error::Result,
    sandbox::{SandboxId, SandboxManager, SandboxState, boot},
    store::{
        pool::PoolFigures,
        sandbox_create::{Booting, CreateOutcome, NewSandbox, PoolBounds, Provisioning},
        sandbox_roles::RoleSpec,
    },
    template::Template,
};

impl SandboxManager {
    /// Provisions missing ready members of every pooled template, at most `concurrency` at a
    /// time; returns how many were added.
    #[tracing::instrument(name = "pool.refill", skip(self))]
    pub(crate) async fn refill_pools(&self, concurrency: usize) -> Result<usize> {
        let pooled: Vec<Arc<Template>> =
            self.templates.iter().filter(|t| t.pool.enabled).cloned().collect();
        if pooled.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = pooled.iter().map(|t| t.name.clone()).collect();
        let figures = self.store.pool_figures(&names).await?;
        let mut jobs = Vec::new();
        for template in pooled {
            let current = figures.get(&template.name).cloned().unwrap_or_default();
            for _ in 0..missing_members(&template, &current) {
                jobs.push(template.clone());
            }
        }
        let added = stream::iter(jobs)
            .map(|template| async move { self.provision_member(&template).await })
            .buffer_unordered(concurrency)
            .fold(0usize, |added, outcome| async move {
                match outcome {
                    Ok(true) => added + 1,
                    Ok(false) => added,
                    Err(error) => {
                        tracing::warn!(%error, "provisioning a pool member failed");
                        added
                    }
                }
            })
            .await;
        Ok(added)
    }

    /// Ready members of templates whose pool is disabled (it was enabled when they were made):
    /// the reconciler tears them down.
    pub(crate) async fn surplus_members(&self) -> Result<Vec<SandboxId>> {
        let mut surplus = Vec::new();
        for template in self.templates.iter().filter(|t| !t.pool.enabled) {
            surplus.extend(self.store.ready_pool_members(&template.name).await?);
        }
        Ok(surplus)
    }

    /// One member: Redis marker, then schema and READY row in one transaction (CREATING, then
    /// booted to READY, for a runtime that boots). `false` when the
    /// pool turned out full (another replica filled it first).
    async fn provision_member(&self, template: &Template) -> Result<bool> {
        let now = Utc::now();
        let new = NewSandbox {
            id: SandboxId::new(),
            tenant: String::new(),
            owner: String::new(),
            name: None,
            template: template.name.clone(),
            labels: Default::default(),
            metadata: Default::default(),
            request_id: None,
            request_fingerprint: String::new(),
            created_at: now,
            // READY members do not expire; a claim sets the claimer's lifetimes.
            expire_at: clock::later_saturating(now, template.max_ttl),
            max_expire_at: clock::later_saturating(now, template.max_ttl),
        };
        let bounds =
            PoolBounds { min_ready: template.pool.min_ready, max_size: template.pool.max_size };
        let booting = boot::boots(template).then(|| Booting { worker: self.replica.worker() });
        let created = async {
            self.redis.provision(new.id, "", &template.name).await?;
            let sql = &template.schema_sql;
            // The member's role exists but may not log in: it gets a password when claimed.
            let role = template.postgres_role.then_some(RoleSpec {
                login: false,
                connection_limit: self.worker_endpoints.role_connection_limit,
            });
            let provisioning = Provisioning { template_sql: sql, role, credentials: None };
            self.store.create_pool_member(&new, provisioning, bounds, booting, "system").await
        }
        .await;
        match created {
            Ok(CreateOutcome::Created(member)) if booting.is_some() => {
                let ready_state = SandboxState::Ready;
                let ready = self.boot(*member, template, ready_state, None, "system").await?;
                tracing::info!(sandbox_id = %ready.id, template = %template.name, "pool member booted and ready");
                Ok(true)
            }
            Ok(CreateOutcome::Created(member)) => {
                tracing::info!(sandbox_id = %member.id, template = %template.name, "pool member ready");
                Ok(true)
            }
            Ok(_full) => {
                self.discard_namespace(new.id).await;
                Ok(false)
            }
            Err(error) => {
                self.discard_namespace(new.id).await;
                Err(error)
            }
        }
    }
}

/// Ready members to add: up to `min_ready`, without exceeding `max_size` members.
fn missing_members(template: &Template, current: &PoolFigures) -> usize {
    let min_ready = i64::from(template.pool.min_ready);
    let max_size = i64::from(template.pool.max_size);
    let wanted = (min_ready - current.ready).min(max_size - current.members());
    usize::try_from(wanted).unwrap_or(0)
}
