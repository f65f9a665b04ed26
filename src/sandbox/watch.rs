//! `WatchSandboxes`: lifecycle events streamed from the audit log. The stream polls the log after
//! each `NOTIFY` from any replica (and at least every second), resuming after the last event id
//! it delivered, so a client that reconnects with its last token misses nothing.

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
                self.store().check_resumable(PrunedLog::AuditEvents, after).await?;
                after
            }
            None => self.store().latest_event_id(&principal.tenant).await?,
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
                for (event, sandbox) in batch {
                    last = event.id;
                    yield (event, sandbox);
                }
            }
        })
    }
}

async fn wait_for_tenant(
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
