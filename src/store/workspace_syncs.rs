//! The last push and pull of each sandbox's workspace (migration 0005), one row per direction.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use crate::{
    error::Result,
    sandbox::{
        SandboxId,
        workspace_sync::{SyncDirection, SyncRecord},
    },
};

#[derive(sqlx::FromRow)]
struct SyncRow {
    direction: String,
    files_scanned: i64,
    files_transferred: i64,
    files_deleted: i64,
    bytes_transferred: i64,
    duration_us: i64,
    finished_at: DateTime<Utc>,
}

impl SyncRow {
    fn into_domain(self) -> Option<SyncRecord> {
        let direction = match self.direction.as_str() {
            "push" => SyncDirection::Push,
            "pull" => SyncDirection::Pull,
            _ => return None,
        };
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        Some(SyncRecord {
            direction,
            files_scanned: count(self.files_scanned),
            files_transferred: count(self.files_transferred),
            files_deleted: count(self.files_deleted),
            bytes_transferred: count(self.bytes_transferred),
            duration: Duration::from_micros(count(self.duration_us)),
            finished_at: self.finished_at,
        })
    }
}

fn direction_name(direction: SyncDirection) -> &'static str {
    match direction {
        SyncDirection::Push => "push",
        SyncDirection::Pull => "pull",
    }
}

impl Store {
    /// Records a completed sync, replacing the last one of its direction.
    #[tracing::instrument(name = "store.workspace_syncs.record", skip(self, record))]
    pub async fn record_sync(&self, id: SandboxId, record: &SyncRecord) -> Result<()> {
        let signed = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO workspace_syncs (sandbox_id, direction, files_scanned, files_transferred,
                 files_deleted, bytes_transferred, duration_us, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sandbox_id, direction) DO UPDATE SET
                 files_scanned = EXCLUDED.files_scanned,
                 files_transferred = EXCLUDED.files_transferred,
                 files_deleted = EXCLUDED.files_deleted,
                 bytes_transferred = EXCLUDED.bytes_transferred,
                 duration_us = EXCLUDED.duration_us,
                 finished_at = EXCLUDED.finished_at",
        )
        .bind(id.as_uuid())
        .bind(direction_name(record.direction))
        .bind(signed(record.files_scanned))
        .bind(signed(record.files_transferred))
        .bind(signed(record.files_deleted))
        .bind(signed(record.bytes_transferred))
        .bind(signed(u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX)))
        .bind(record.finished_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The last push and pull of a sandbox (either may be missing).
    #[tracing::instrument(name = "store.workspace_syncs.get", skip(self))]
    pub async fn last_syncs(&self, id: SandboxId) -> Result<Vec<SyncRecord>> {
        let rows = sqlx::query_as::<_, SyncRow>(
            "SELECT direction, files_scanned, files_transferred, files_deleted,
                    bytes_transferred, duration_us, finished_at
             FROM workspace_syncs WHERE sandbox_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().filter_map(SyncRow::into_domain).collect())
    }
}
