//! Figures for the metrics exposition.

use super::Store;
use crate::error::Result;

impl Store {
    /// Sandboxes that are not DESTROYED, by template and state (destroyed rows are history and
    /// only grow). The cost grows with the live sandboxes.
    #[tracing::instrument(name = "store.metrics.live_sandboxes", skip(self))]
    pub async fn live_sandbox_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query_as(
            "SELECT template, state, count(*) FROM sandboxes
             WHERE state <> 'DESTROYED' GROUP BY template, state ORDER BY template, state",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
