//! Retention of the logs behind resume tokens: audit events and route changes older than
//! `retention` are deleted in batches, and each log's horizon moves past them, so resuming from
//! a deleted position answers OUT_OF_RANGE instead of silently skipping events.

use chrono::Utc;

use super::Reconciler;
use crate::store::reconcile::PrunedLog;

const BATCH: u32 = 10_000;
/// Batches per log and run; the rest waits for the next run.
const MAX_BATCHES: usize = 100;

impl Reconciler {
    pub(super) async fn prune_logs(&self) {
        // A retention longer than the calendar goes back keeps everything.
        let before = chrono::Duration::from_std(self.config.retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention));
        let Some(before) = before else { return };
        for log in [PrunedLog::AuditEvents, PrunedLog::RouteChanges] {
            for _ in 0..MAX_BATCHES {
                match self.store().prune_log(log, before, BATCH).await {
                    Ok(deleted) if deleted < u64::from(BATCH) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(?log, %error, "pruning failed; retrying next run");
                        break;
                    }
                }
            }
        }
    }
}
