//! Changes to live sandboxes other than state transitions: TTL extension and batched
//! last-activity updates.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    Store, audit,
    sandboxes::{COLUMNS, SandboxRow},
};
use crate::{
    error::Result,
    sandbox::{Sandbox, SandboxId},
};

/// A TTL extension to write, checked against the version the caller read.
#[derive(Debug)]
pub struct Extension<'a> {
    pub tenant: &'a str,
    pub id: SandboxId,
    pub observed_version: i64,
    pub previous_expire_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    pub capped: bool,
    pub actor: &'a str,
}

impl Store {
    /// Sets a new expiry if the sandbox is still live and unchanged since it was read; `None`
    /// when it changed (or stopped being RUNNING/READY) in the meantime.
    #[tracing::instrument(name = "store.sandboxes.extend", skip(self, extension), fields(id = %extension.id))]
    pub async fn extend_sandbox(&self, extension: Extension<'_>) -> Result<Option<Sandbox>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "UPDATE sandboxes SET expire_at = $3, version = version + 1, updated_at = now()
             WHERE id = $1 AND tenant = $2 AND version = $4 AND state IN ('RUNNING', 'READY')
             RETURNING {COLUMNS}"
        ))
        .bind(extension.id.as_uuid())
        .bind(extension.tenant)
        .bind(extension.expire_at)
        .bind(extension.observed_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let details = json!({
            "from": extension.previous_expire_at,
            "to": extension.expire_at,
            "capped": extension.capped,
        });
        audit::record(
            &mut tx,
            extension.tenant,
            Some(extension.id.as_uuid()),
            extension.actor,
            audit::event::TTL_EXTENDED,
            details,
        )
        .await?;
        tx.commit().await?;
        row.into_domain().map(|(sandbox, _)| Some(sandbox))
    }

    /// Writes a batch of last-activity times in one statement; never moves a time backwards.
    #[tracing::instrument(name = "store.sandboxes.record_activity", skip_all, fields(count = batch.len()))]
    pub async fn record_activity(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = batch.iter().copied().unzip();
        let result = sqlx::query(
            "UPDATE sandboxes AS s SET last_activity_at = v.at, idle_noticed_at = NULL
             FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at)
             WHERE s.id = v.id AND s.last_activity_at < v.at",
        )
        .bind(ids)
        .bind(times)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
