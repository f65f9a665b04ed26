//! `WatchSandboxes`: lifecycle events streamed from the audit log. The stream polls the log after
//! each `NOTIFY` from any replica (and at least every second), resuming after the last event id
//! it delivered, so a client that reconnects with its last token misses nothing. A stream that
//! falls behind log retention ends with OUT_OF_RANGE when it would deliver an event after a
//! pruned gap. The check is by position, so it may also end a scoped stream whose pruned entries
//! were not in its scope; the client then re-reads the state and watches again without a token.

use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{Sandbox, SandboxId, SandboxSelector, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::Result,
    events::Notification,
    store::{
        audit::{AuditEvent, EventScope},
        reconcile::PrunedLog,
    },
};

const BATCH: u32 = 200;
const POLL_FALLBACK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    /// Resume after this event id; `None` starts with events after the call.
    pub after: Option<i64>,
    pub sandbox_id: Option<SandboxId>,
    pub owner: Option<String>,
}

impl SandboxManager {
    /// Checks the request and returns the stream; it ends when the server shuts down.
    pub async fn watch(
        &self,
        principal: Principal,
        spec: WatchSpec,
    ) -> Result<impl Stream<Item = Result<(AuditEvent, Sandbox)>> + Send + 'static> {
        principal.require_manager()?;
        if let Some(id) = spec.sandbox_id {
            self.get(&principal, &SandboxSelector::Id(id)).await?;
        }
        // Subscribe before reading the start position, so no wake-up is lost in between.
        let mut notifications = self.events().subscribe();
        let mut last = match spec.after {
            Some(after) => {
                self.store().check_resume_token(PrunedLog::AuditEvents, after).await?;
                after
            }
            // From now on; never from before the pruning horizon, or a quiet tenant whose
            // last event is older than the retention would be refused at once.
            None => {
                let latest = self.store().latest_event_id(&principal.tenant).await?;
                latest.max(self.store().log_horizon(PrunedLog::AuditEvents).await?)
            }
        };
        let manager = self.clone();
        Ok(async_stream::try_stream! {
            let scope = EventScope {
                tenant: &principal.tenant,
                owner: principal.owner_scope(),
                sandbox_id: spec.sandbox_id.map(|id| id.as_uuid()),
            };
            loop {
                let batch = manager.store().lifecycle_events_after(scope, spec.owner.as_deref(), last, BATCH).await?;
                if batch.is_empty() {
                    tokio::select! {
                        () = manager.shutdown().cancelled() => break,
                        () = wait_for_tenant(&mut notifications, &principal.tenant) => {}
                        () = tokio::time::sleep(POLL_FALLBACK) => {}
                    }
                    continue;
                }
                // Entries between `last` and this batch may have been pruned while this stream
                // lagged behind retention: end it (OUT_OF_RANGE) rather than deliver it with a
                // gap. Checked after the read, so a pruning that raced it is seen too.
                manager.store().check_resumable(PrunedLog::AuditEvents, last).await?;
                for (event, sandbox) in batch {
                    last = event.id;
                    yield (event, sandbox);
                }
            }
        })
    }
}

/// Returns at the next NOTIFY of `tenant`'s events (or when notifications may have been lost).
pub(crate) async fn wait_for_tenant(
    notifications: &mut tokio::sync::broadcast::Receiver<Notification>,
    tenant: &str,
) {
    loop {
        match notifications.recv().await {
            Ok(Notification::Events { tenant: t }) if t == tenant => return,
            Ok(Notification::Reconnected) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
