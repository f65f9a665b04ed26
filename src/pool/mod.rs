//! Warm pools: templates with `[pool] enabled` keep `min_ready` provisioned sandboxes READY so a
//! create is a claim (one UPDATE) instead of DDL. Claims are in `sandbox::create` and
//! `store::pool`; here are the refill (run by the reconciler), `ReleaseSandbox` and
//! `GetPoolStatus`.
//!
//! Pool members belong to no tenant while READY; a claim makes a member the caller's, a release
//! resets it (tables emptied with identities restarted, Redis keys removed, routes removed,
//! name, labels and metadata cleared) and gives it back. After a release the former owner no
//! longer sees it (it is NOT_FOUND to them): it may be claimed by anyone next. A pool never holds
//! more than `max_size` members, READY and claimed together.

mod refill;
mod release;

use std::sync::Arc;

use crate::{
    auth::Principal,
    error::{Error, Result},
    sandbox::SandboxManager,
    template::Template,
};

/// One template's pool as `GetPoolStatus` reports it.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub template: Arc<Template>,
    pub ready: i64,
    pub in_use: i64,
    pub hits: i64,
    pub misses: i64,
}

impl PoolStatus {
    /// `hits / (hits + misses)`; 0 before the first create.
    pub fn reuse_rate(&self) -> f64 {
        let creates = self.hits + self.misses;
        if creates == 0 { 0.0 } else { self.hits as f64 / creates as f64 }
    }
}

impl SandboxManager {
    /// The pools of every template (or of one), by template name; the counters are persisted,
    /// so every replica reports the same figures.
    #[tracing::instrument(name = "pool.status", skip_all)]
    pub async fn pool_status(
        &self,
        principal: &Principal,
        template: Option<&str>,
    ) -> Result<Vec<PoolStatus>> {
        principal.require_manager()?;
        let templates: Vec<Arc<Template>> = match template {
            Some(name) => {
                vec![self.templates.get(name).ok_or_else(|| Error::not_found("template", name))?]
            }
            None => self.templates.iter().cloned().collect(),
        };
        let names: Vec<String> = templates.iter().map(|t| t.name.clone()).collect();
        let mut figures = self.store.pool_figures(&names).await?;
        Ok(templates
            .into_iter()
            .map(|template| {
                let figures = figures.remove(&template.name).unwrap_or_default();
                PoolStatus {
                    template,
                    ready: figures.ready,
                    in_use: figures.in_use,
                    hits: figures.hits,
                    misses: figures.misses,
                }
            })
            .collect())
    }
}
