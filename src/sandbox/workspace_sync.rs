//! PushWorkspace, PullWorkspace and GetSyncStatus, and the syncs of the lifecycle
//! (`init_from_store` at create, `final_sync` at destroy, removing the prefix on destroy when
//! the template does not keep it). The transfer itself is `workspace::sync`.
//!
//! Syncs of one sandbox run one at a time on this replica (a per-sandbox mutex), so two pushes
//! cannot interleave their manifests. The object store is optional (`s3.enabled`); without it
//! sync RPCs answer FAILED_PRECONDITION.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use super::{Sandbox, SandboxId, SandboxSelector, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::Result,
    workspace::sync::{self, SyncReport, SyncRequest},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDirection {
    Push,
    Pull,
}

/// A completed sync, as GetSyncStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub direction: SyncDirection,
    pub files_scanned: u64,
    pub files_transferred: u64,
    pub files_deleted: u64,
    pub bytes_transferred: u64,
    pub duration: Duration,
    pub finished_at: DateTime<Utc>,
}

/// What a push or pull answers: the sync, or a pull skipped because of a recent sync.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub record: SyncRecord,
    pub skipped: bool,
}

/// A validated push or pull request.
#[derive(Debug, Clone, Default)]
pub struct SyncSpec {
    pub paths: Vec<String>,
    pub delete: bool,
    /// Pull only: skip when the last sync finished less than this long ago.
    pub max_staleness: Option<Duration>,
}

fn record(direction: SyncDirection, report: &SyncReport) -> SyncRecord {
    SyncRecord {
        direction,
        files_scanned: report.files_scanned,
        files_transferred: report.files_transferred,
        files_deleted: report.files_deleted,
        bytes_transferred: report.bytes_transferred,
        duration: report.duration,
        // PostgreSQL keeps microseconds: answer what GetSyncStatus will report.
        finished_at: Utc::now().trunc_subsecs(6),
    }
}

impl SandboxManager {
    /// PushWorkspace: a RUNNING `process` sandbox's workspace to its prefix.
    #[tracing::instrument(name = "sandbox.push_workspace", skip_all, fields(sandbox_id = %id))]
    pub async fn push_workspace(
        &self,
        principal: &Principal,
        id: SandboxId,
        spec: SyncSpec,
    ) -> Result<SyncOutcome> {
        let (sandbox, _) = self.running_with_runtime(principal, id).await?;
        self.push_sandbox(&sandbox, &spec).await
    }

    /// PullWorkspace: the sandbox's prefix into its RUNNING `process` workspace, unless the
    /// last sync is newer than `max_staleness`.
    #[tracing::instrument(name = "sandbox.pull_workspace", skip_all, fields(sandbox_id = %id))]
    pub async fn pull_workspace(
        &self,
        principal: &Principal,
        id: SandboxId,
        spec: SyncSpec,
    ) -> Result<SyncOutcome> {
        let (sandbox, _) = self.running_with_runtime(principal, id).await?;
        if let Some(max_staleness) = spec.max_staleness {
            let newest = self.store.last_syncs(id).await?.into_iter().max_by_key(|r| r.finished_at);
            let fresh = newest.filter(|last| {
                (Utc::now() - last.finished_at).to_std().unwrap_or_default() < max_staleness
            });
            if let Some(last) = fresh {
                let record = SyncRecord {
                    direction: SyncDirection::Pull,
                    files_scanned: 0,
                    files_transferred: 0,
                    files_deleted: 0,
                    bytes_transferred: 0,
                    duration: Duration::ZERO,
                    finished_at: last.finished_at,
                };
                return Ok(SyncOutcome { record, skipped: true });
            }
        }
        self.pull_into(&sandbox, sandbox.id, &spec).await
    }

    /// GetSyncStatus: the last push and the last pull (the sandbox may be in any state).
    pub async fn sync_status(
        &self,
        principal: &Principal,
        id: SandboxId,
    ) -> Result<(Option<SyncRecord>, Option<SyncRecord>)> {
        self.get(principal, &SandboxSelector::Id(id)).await?;
        let records = self.store.last_syncs(id).await?;
        let last = |direction| records.iter().find(|r| r.direction == direction).cloned();
        Ok((last(SyncDirection::Push), last(SyncDirection::Pull)))
    }

    /// Pushes a sandbox's workspace and records it (also the `final_sync` of a destroy).
    pub(crate) async fn push_sandbox(
        &self,
        sandbox: &Sandbox,
        spec: &SyncSpec,
    ) -> Result<SyncOutcome> {
        self.transfer(sandbox, sandbox.id, SyncDirection::Push, spec).await
    }

    /// Pulls the prefix of `source` (the sandbox itself, or the earlier sandbox of
    /// `init_from_store`) into the sandbox's workspace, and records it.
    pub(crate) async fn pull_into(
        &self,
        sandbox: &Sandbox,
        source: SandboxId,
        spec: &SyncSpec,
    ) -> Result<SyncOutcome> {
        self.transfer(sandbox, source, SyncDirection::Pull, spec).await
    }

    /// One push or pull between the sandbox's workspace and `prefix_of`'s prefix, under the
    /// sandbox's sync mutex, recorded with the sandbox.
    async fn transfer(
        &self,
        sandbox: &Sandbox,
        prefix_of: SandboxId,
        direction: SyncDirection,
        spec: &SyncSpec,
    ) -> Result<SyncOutcome> {
        let template = self.template_of(sandbox)?;
        let workspace = self.workspace_dir(sandbox.id, &template)?;
        let target = self.syncs.target(prefix_of.as_uuid()).await?;
        let state = self.syncs.state(sandbox.id.as_uuid());
        let _one_at_a_time = state.running.lock().await;
        let request = SyncRequest { paths: &spec.paths, delete: spec.delete };
        let (settings, cache) = (self.syncs.settings(), &state.cache);
        let report = match direction {
            SyncDirection::Push => {
                sync::push(&workspace, &target, &request, settings, cache).await?
            }
            SyncDirection::Pull => {
                sync::pull(&workspace, &target, &request, settings, cache).await?
            }
        };
        self.metrics.record_sync(direction == SyncDirection::Push, &report);
        let record = record(direction, &report);
        self.store.record_sync(sandbox.id, &record).await?;
        Ok(SyncOutcome { record, skipped: false })
    }

    /// Removes the sandbox's objects at destroy when its template does not keep them; forgets
    /// its sync state either way.
    pub(crate) async fn remove_objects(&self, id: SandboxId, keep: bool) -> Result<()> {
        self.syncs.forget(id.as_uuid());
        if keep || !self.syncs.enabled() {
            return Ok(());
        }
        let target = self.syncs.target(id.as_uuid()).await?;
        // Artifacts outlive the sandbox; the artifact retention removes them.
        let removed =
            sync::delete_prefix_keeping(&target, Some(crate::artifacts::ARTIFACTS_DIR)).await?;
        tracing::debug!(sandbox_id = %id, removed, "object prefix removed");
        Ok(())
    }
}
