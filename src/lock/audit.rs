//! The audit of AcquireLock and ReleaseLock. A lock cycle takes well under a millisecond, an
//! audit row a round trip under the tenant's event-ordering lock, so writing one row per call
//! would cap locks at the audit's rate: events are queued and written in batches (one statement
//! per batch) by one task. Decision: a crash loses at most the last `FLUSH_INTERVAL` of lock
//! events (the locks themselves are unaffected); a full queue drops events with a warning
//! rather than slowing locks down. Pushes record their lease in their own audit row, written
//! synchronously (`sandbox::git_remote`).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, audit::DetachedEvent};

const QUEUE: usize = 65_536;
const BATCH: usize = 2_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct LockAudit {
    queue: mpsc::Sender<DetachedEvent>,
}

/// The receiving end, run by [`LockAuditWriter::run`].
pub struct LockAuditWriter {
    queue: mpsc::Receiver<DetachedEvent>,
}

impl LockAudit {
    pub fn new() -> (Self, LockAuditWriter) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        (Self { queue }, LockAuditWriter { queue: receiver })
    }

    pub fn record(&self, tenant: &str, actor: String, event_type: &'static str, details: Value) {
        let event = DetachedEvent { tenant: tenant.to_string(), actor, event_type, details };
        if self.queue.try_send(event).is_err() {
            tracing::warn!(event_type, "the lock audit queue is full; an event was dropped");
        }
    }
}

impl LockAuditWriter {
    /// Writes queued events every `FLUSH_INTERVAL` until `stop`, then what is left.
    pub async fn run(mut self, store: Store, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let stopping = tokio::select! {
                received = self.queue.recv_many(&mut batch, BATCH) => received == 0,
                () = stop.cancelled() => true,
            };
            if stopping {
                while let Ok(event) = self.queue.try_recv() {
                    batch.push(event);
                }
            }
            for chunk in batch.chunks(BATCH) {
                if let Err(error) = store.record_detached_events(chunk).await {
                    tracing::warn!(%error, events = chunk.len(), "lock audit events could not be written");
                }
            }
            batch.clear();
            if stopping {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}
