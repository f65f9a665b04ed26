//! Last-activity tracking without a database write per RPC: touches are kept in memory and
//! written in one batched statement per flush interval (and once more at shutdown).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::SandboxId;
use crate::store::Store;

#[derive(Default)]
pub struct ActivityTracker {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl ActivityTracker {
    /// Records that an RPC touched the sandbox now.
    pub fn touch(&self, id: SandboxId) {
        let mut pending = self.pending.lock().expect("activity lock poisoned");
        pending.insert(id.as_uuid(), Utc::now());
    }

    /// The newest touch not yet written, to show callers an up-to-date `last_activity_time`.
    pub fn pending_touch(&self, id: SandboxId) -> Option<DateTime<Utc>> {
        self.pending.lock().expect("activity lock poisoned").get(&id.as_uuid()).copied()
    }

    /// Writes what was touched since the last flush.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(Uuid, DateTime<Utc>)> = {
            let mut pending = self.pending.lock().expect("activity lock poisoned");
            pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.record_activity(&batch).await {
            tracing::warn!(%error, count = batch.len(), "could not record sandbox activity; will retry");
            let mut pending = self.pending.lock().expect("activity lock poisoned");
            for (id, at) in batch {
                let entry = pending.entry(id).or_insert(at);
                *entry = (*entry).max(at);
            }
        }
    }

    /// Flushes every `interval` until `shutdown`, then once more.
    pub async fn run(&self, store: Store, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => self.flush(&store).await,
            }
        }
        self.flush(&store).await;
    }
}
