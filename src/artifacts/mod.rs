//! Artifacts: what agents in sandboxes publish (a diff, a report, a log, an image) and the
//! human review that decides whether it may be used (`PENDING → APPROVED | REJECTED`).
//!
//! Bytes live in the object store at `sandboxes/<sandbox id>/artifacts/<artifact id>`, the
//! record in PostgreSQL (`artifacts`), every event in the audit log (`artifact_published`,
//! `artifact_reviewed`, `artifact_removed`), which also feeds WatchArtifacts. An artifact
//! outlives its sandbox for `artifacts.retention` after the sandbox's destroy; then the
//! reconciler removes it with its object (`removal`).
//!
//! Visibility follows the sandbox: owners and admins see the tenant's artifacts, members those
//! of their own sandboxes, routers none; another tenant's artifact is NOT_FOUND.

pub mod model;
pub mod objects;
mod publish;
mod read;
pub mod removal;
mod review;
mod watch;

use std::sync::Arc;

use chrono::DateTime;
use uuid::Uuid;

pub use model::{
    ARTIFACTS_DIR, Artifact, ArtifactEvent, ArtifactEventKind, ArtifactFilter, ArtifactType,
    Decision, PublishSpec, ReviewSpec, ReviewState,
};
pub use objects::ArtifactObjects;
pub use watch::ArtifactWatchSpec;

use crate::{
    auth::Principal,
    config::ArtifactsConfig,
    error::{Error, Result},
    sandbox::{
        SandboxManager,
        listing::{Page, paginate},
        manager::scope,
        page_token,
    },
    store::{Store, artifacts::ArtifactCursor},
};

/// The artifact service's domain side. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactService {
    manager: SandboxManager,
    config: Arc<ArtifactsConfig>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ArtifactService {
    pub fn new(
        manager: SandboxManager,
        config: ArtifactsConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self { manager, config: Arc::new(config), metrics }
    }

    pub fn config(&self) -> &ArtifactsConfig {
        &self.config
    }

    fn store(&self) -> &Store {
        self.manager.store()
    }

    /// The object store, or FAILED_PRECONDITION when the server has none.
    async fn objects(&self) -> Result<ArtifactObjects> {
        objects_of(&self.manager.syncs).await.ok_or_else(|| Error::FailedPrecondition {
            reason: "OBJECT_STORE_NOT_CONFIGURED",
            message: "this server has no object store configured (s3.enabled = false)".into(),
        })
    }

    /// When the server will remove `artifact`: its sandbox's destroy time plus the retention.
    pub fn expire_time(&self, artifact: &Artifact) -> Option<chrono::DateTime<chrono::Utc>> {
        let retention = chrono::Duration::from_std(self.config.retention).ok()?;
        artifact.sandbox_destroyed_at?.checked_add_signed(retention)
    }

    /// An artifact visible to the caller.
    #[tracing::instrument(name = "artifact.get", skip_all, fields(tenant = %principal.tenant))]
    pub async fn get(&self, principal: &Principal, id: Uuid) -> Result<Artifact> {
        principal.require_manager()?;
        self.store()
            .get_artifact(scope(principal), id)
            .await?
            .ok_or_else(|| Error::not_found("artifact", id.to_string()))
    }

    /// Artifacts visible to the caller that match `filter`, newest first.
    #[tracing::instrument(name = "artifact.list", skip_all, fields(tenant = %principal.tenant))]
    pub async fn list(
        &self,
        principal: &Principal,
        filter: ArtifactFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Artifact>> {
        principal.require_manager()?;
        let filters = (
            filter.sandbox_id.map(|id| id.to_string()),
            &filter.conversation_id,
            filter.review_state.as_ref().map(ReviewState::as_str),
        );
        let fingerprint = page_token::fingerprint(&page_token::for_caller(principal, filters));
        let position: Option<(i64, Uuid)> = page_token::decode(page_token, &fingerprint)?;
        let cursor = match position {
            None => None,
            Some((micros, id)) => Some(ArtifactCursor {
                create_time: DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                    Error::invalid("page_token", "is not a page token of this listing")
                })?,
                id,
            }),
        };
        let artifacts =
            self.store().list_artifacts(scope(principal), &filter, cursor, page_size + 1).await?;
        Ok(paginate(artifacts, page_size, move |last| {
            page_token::encode((last.create_time.timestamp_micros(), last.id), &fingerprint)
        }))
    }
}

/// The server's object store, when it has one.
pub(crate) async fn objects_of(
    syncs: &crate::workspace::syncs::WorkspaceSyncs,
) -> Option<ArtifactObjects> {
    if !syncs.enabled() {
        return None;
    }
    Some(ArtifactObjects::new(syncs.client().await, syncs.bucket()))
}
