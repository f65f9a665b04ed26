//! WatchArtifacts: artifact events streamed from the audit log, exactly as WatchSandboxes
//! streams lifecycle events (`sandbox::watch`): polled after each NOTIFY (and at least every
//! second), resumable after the last event id delivered, OUT_OF_RANGE past the log's retention.

use std::time::Duration;

use futures::Stream;

use super::{ArtifactEvent, ArtifactService};
use crate::{
    auth::Principal,
    error::Result,
    sandbox::{SandboxId, SandboxSelector, watch::wait_for_tenant},
    store::{artifact_events::ArtifactEventScope, reconcile::PrunedLog},
};

const BATCH: u32 = 200;
const POLL_FALLBACK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactWatchSpec {
    /// Resume after this event id; `None` starts with events after the call.
    pub after: Option<i64>,
    pub sandbox_id: Option<SandboxId>,
    pub conversation_id: Option<String>,
}

impl ArtifactService {
    /// Checks the request and returns the stream; it ends when the server shuts down.
    pub async fn watch(
        &self,
        principal: Principal,
        spec: ArtifactWatchSpec,
    ) -> Result<impl Stream<Item = Result<ArtifactEvent>> + Send + 'static> {
        principal.require_manager()?;
        if let Some(id) = spec.sandbox_id {
            self.manager.get(&principal, &SandboxSelector::Id(id)).await?;
        }
        // Subscribe before reading the start position, so no wake-up is lost in between.
        let mut notifications = self.manager.events().subscribe();
        let store = self.store().clone();
        let mut last = match spec.after {
            Some(after) => {
                store.check_resume_token(PrunedLog::AuditEvents, after).await?;
                after
            }
            None => {
                let latest = store.latest_event_id(&principal.tenant).await?;
                latest.max(store.log_horizon(PrunedLog::AuditEvents).await?)
            }
        };
        let shutdown = self.manager.shutdown().clone();
        Ok(async_stream::try_stream! {
            let scope = ArtifactEventScope {
                tenant: &principal.tenant,
                owner: principal.owner_scope(),
                sandbox_id: spec.sandbox_id,
                conversation_id: spec.conversation_id.as_deref(),
            };
            loop {
                let batch = store.artifact_events_after(scope, last, BATCH).await?;
                if batch.is_empty() {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = wait_for_tenant(&mut notifications, &principal.tenant) => {}
                        () = tokio::time::sleep(POLL_FALLBACK) => {}
                    }
                    continue;
                }
                store.check_resumable(PrunedLog::AuditEvents, last).await?;
                for event in batch {
                    last = event.id;
                    yield event;
                }
            }
        })
    }
}
