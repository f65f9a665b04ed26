//! Artifact retention: artifacts outlive their sandbox for `artifacts.retention`, counted from
//! the sandbox's destroy time; then they are removed with their objects (claimed in batches with
//! `SKIP LOCKED`, objects deleted with no database lock held, rows deleted with an
//! `artifact_removed` event; see `artifacts::removal`).

use chrono::Utc;

use super::Reconciler;
use crate::{
    artifacts::{
        self,
        removal::{self, Removal},
    },
    error::Result,
};

/// Batches per pass; the rest waits for the next pass.
const MAX_BATCHES: usize = 10;

impl Reconciler {
    pub(super) async fn remove_expired_artifacts(&self) -> Result<()> {
        let Some(objects) = artifacts::objects_of(&self.manager.syncs).await else {
            return Ok(());
        };
        // A retention longer than the calendar goes back keeps everything.
        let before = chrono::Duration::from_std(self.artifact_retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention));
        let Some(before) = before else { return Ok(()) };
        let what = Removal::DestroyedBefore(before);
        let removed = removal::remove(
            self.store(),
            &objects,
            what,
            self.config.batch_size,
            MAX_BATCHES,
            "system",
        )
        .await?;
        if removed > 0 {
            tracing::info!(removed, "artifacts past their retention removed");
        }
        Ok(())
    }
}
