//! Read-only views of one sandbox's resources: health checks and schema stats (connection
//! details are in `connection`).

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Sandbox, SandboxId, SandboxSelector, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::{Error, Result},
    runtime::RuntimeHealth,
    template::RuntimeKind,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthLevel {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub name: &'static str,
    pub level: HealthLevel,
    pub detail: String,
    pub latency: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct HealthReport {
    pub sandbox_id: SandboxId,
    /// The worst level of any check.
    pub level: HealthLevel,
    pub checks: Vec<HealthCheck>,
    pub checked_at: DateTime<Utc>,
}

impl SandboxManager {
    /// Runs every check against the real resources; never fails because a check failed.
    #[tracing::instrument(name = "sandbox.health", skip_all, fields(sandbox_id = %id))]
    pub async fn health(&self, principal: &Principal, id: SandboxId) -> Result<HealthReport> {
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        let mut checks = vec![self.check_schema(&sandbox).await, self.check_redis(&sandbox).await];
        checks.extend(self.check_routing(&sandbox).await);
        if let Some(runtime) = self.check_runtime(&sandbox) {
            checks.push(runtime);
        }
        let level = checks.iter().map(|check| check.level).max().unwrap_or(HealthLevel::Healthy);
        Ok(HealthReport { sandbox_id: id, level, checks, checked_at: Utc::now() })
    }

    async fn check_schema(&self, sandbox: &Sandbox) -> HealthCheck {
        let started = Instant::now();
        let expected = self.templates().tables(&sandbox.template);
        let (level, detail) = match self.store().sandbox_tables(sandbox.id).await {
            Err(error) => (HealthLevel::Unhealthy, format!("cannot read the schema: {error}")),
            Ok(tables) if tables.is_empty() && !expected.is_empty() => {
                (HealthLevel::Unhealthy, format!("schema {} is missing", sandbox.id.schema_name()))
            }
            Ok(tables) => {
                let missing: Vec<&String> =
                    expected.iter().filter(|t| !tables.contains(t)).collect();
                if missing.is_empty() {
                    (HealthLevel::Healthy, format!("{} tables present", tables.len()))
                } else {
                    (HealthLevel::Degraded, format!("tables missing: {missing:?}"))
                }
            }
        };
        HealthCheck { name: "schema", level, detail, latency: started.elapsed() }
    }

    async fn check_redis(&self, sandbox: &Sandbox) -> HealthCheck {
        let started = Instant::now();
        let (level, detail) = match self.redis().round_trip(sandbox.id).await {
            Ok(true) => (HealthLevel::Healthy, "write/read/delete round trip ok".to_string()),
            Ok(false) => (
                HealthLevel::Degraded,
                "round trip ok, but the namespace marker key is missing".to_string(),
            ),
            Err(error) => (HealthLevel::Unhealthy, format!("round trip failed: {error}")),
        };
        HealthCheck { name: "redis", level, detail, latency: started.elapsed() }
    }

    /// The routes stored for this sandbox and the ones this replica's table serves must agree.
    async fn check_routing(&self, sandbox: &Sandbox) -> Option<HealthCheck> {
        let started = Instant::now();
        let stored =
            self.store().list_routes(None, None, Some(sandbox.id.as_uuid()), None, 10_000).await;
        let (level, detail) = match stored {
            Err(error) => (HealthLevel::Unhealthy, format!("cannot read routes: {error}")),
            Ok(routes) => {
                let mut stored: Vec<u64> =
                    routes.iter().filter_map(|r| r.guild_id.parse().ok()).collect();
                stored.sort_unstable();
                let served = self.routes().guilds_of(sandbox.id.as_uuid());
                if stored == served {
                    (
                        HealthLevel::Healthy,
                        format!("{} guild routes, routing table in sync", stored.len()),
                    )
                } else {
                    (
                        HealthLevel::Degraded,
                        format!(
                            "{} guild routes stored, {} served by this replica",
                            stored.len(),
                            served.len()
                        ),
                    )
                }
            }
        };
        Some(HealthCheck { name: "routing", level, detail, latency: started.elapsed() })
    }

    /// The runtime's own view (`process`: the workspace exists, whether commands are
    /// isolated); data-only sandboxes have no runtime check.
    fn check_runtime(&self, sandbox: &Sandbox) -> Option<HealthCheck> {
        let started = Instant::now();
        let template = self.templates().get(&sandbox.template)?;
        if template.runtime == RuntimeKind::None {
            return None;
        }
        let (level, detail) = match self.runtimes.get(template.runtime).health(sandbox.id) {
            RuntimeHealth::Healthy(detail) => (HealthLevel::Healthy, detail),
            RuntimeHealth::Degraded(detail) => (HealthLevel::Degraded, detail),
            RuntimeHealth::Unhealthy(detail) => (HealthLevel::Unhealthy, detail),
        };
        Some(HealthCheck { name: "runtime", level, detail, latency: started.elapsed() })
    }

    /// Exact row counts of the sandbox's tables; FAILED_PRECONDITION when the schema is gone.
    pub async fn schema_stats(
        &self,
        principal: &Principal,
        id: SandboxId,
    ) -> Result<Vec<(String, i64)>> {
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        self.store().sandbox_row_counts(id).await?.ok_or_else(|| Error::FailedPrecondition {
            reason: "SCHEMA_MISSING",
            message: format!("sandbox {id} has no schema (state {})", sandbox.state),
        })
    }
}
