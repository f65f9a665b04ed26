//! Removing artifacts: the retention's and the tenant purge's claims, then the deletion of each
//! row with its `artifact_removed` event. Callers remove the objects between the claim and the
//! deletion, holding no database lock meanwhile: a claim is one statement (`FOR UPDATE SKIP
//! LOCKED`, so replicas claim disjoint batches) that marks the rows `removing_since`, which
//! hides them from readers; a claim older than [`RECLAIM_AFTER`] (its replica died) may be taken
//! again.

use super::{
    Store,
    artifacts::{ArtifactRow, COLUMNS, event_details},
    audit::{Events, event, recording_ctes},
};
use crate::{artifacts::Artifact, error::Result};
use chrono::{DateTime, Utc};
use serde_json::json;

/// A claim not followed by the deletion within this long is taken to be abandoned.
const RECLAIM_AFTER: &str = "10 minutes";

impl Store {
    /// Claims up to `limit` artifacts whose sandbox was destroyed before `destroyed_before`.
    #[tracing::instrument(name = "store.artifacts.claim_expired", skip(self))]
    pub async fn claim_expired_artifacts(
        &self,
        destroyed_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Artifact>> {
        self.claim_artifacts(
            &format!(
                "s.state = 'DESTROYED' AND s.destroyed_at < $1::timestamptz AND $2::text IS NULL
                 AND (a.removing_since IS NULL
                      OR a.removing_since < now() - interval '{RECLAIM_AFTER}')"
            ),
            Some(destroyed_before),
            None,
            limit,
        )
        .await
    }

    /// Claims up to `limit` artifacts of `tenant` (the tenant purge, run by an operator: it
    /// takes over any claim).
    #[tracing::instrument(name = "store.artifacts.claim_of_tenant", skip(self))]
    pub async fn claim_tenant_artifacts(&self, tenant: &str, limit: u32) -> Result<Vec<Artifact>> {
        self.claim_artifacts("$1::timestamptz IS NULL AND a.tenant = $2", None, Some(tenant), limit)
            .await
    }

    /// `condition` uses `$1` (a time) and `$2` (a tenant).
    async fn claim_artifacts(
        &self,
        condition: &str,
        time: Option<DateTime<Utc>>,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Artifact>> {
        let rows = sqlx::query_as::<_, ArtifactRow>(&format!(
            "WITH claimed AS (
                 UPDATE artifacts SET removing_since = now()
                 WHERE id IN (
                     SELECT a.id FROM artifacts a JOIN sandboxes s ON s.id = a.sandbox_id
                     WHERE {condition}
                     ORDER BY a.create_time, a.id
                     LIMIT $3
                     FOR UPDATE OF a SKIP LOCKED)
                 RETURNING *
             )
             SELECT {COLUMNS} FROM claimed a JOIN sandboxes s ON s.id = a.sandbox_id"
        ))
        .bind(time)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ArtifactRow::into_domain).collect()
    }

    /// Deletes a claimed artifact's row and records `artifact_removed` (with `reason`), in one
    /// statement; `false` when it was gone already.
    #[tracing::instrument(name = "store.artifacts.delete", skip(self, artifact), fields(artifact_id = %artifact.id))]
    pub async fn delete_claimed_artifact(
        &self,
        artifact: &Artifact,
        actor: &str,
        reason: &str,
    ) -> Result<bool> {
        let sql = format!(
            "WITH deleted AS (
                 DELETE FROM artifacts WHERE id = $1 AND removing_since IS NOT NULL
                 RETURNING tenant, sandbox_id AS id
             ),
             changed AS (SELECT tenant, id FROM deleted), {}
             SELECT count(*) FROM deleted",
            recording_ctes("changed", 2)
        );
        let details = event_details(artifact, json!({ "reason": reason }));
        let events = Events::new().push(event::ARTIFACT_REMOVED, details);
        let query = sqlx::query_as::<_, (i64,)>(&sql).bind(artifact.id);
        let (deleted,) = events.bind_to(query, actor).fetch_one(self.pool()).await?;
        Ok(deleted > 0)
    }

    /// How many sandboxes of `tenant` are live (every state but DESTROYED: a failed one still holds resources).
    pub async fn live_sandboxes_of_tenant(&self, tenant: &str) -> Result<i64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sandboxes WHERE tenant = $1 AND state <> 'DESTROYED'",
        )
        .bind(tenant)
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    /// How many artifacts `tenant` has (being removed or not).
    pub async fn artifacts_of_tenant(&self, tenant: &str) -> Result<i64> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(self.pool())
            .await?;
        Ok(count)
    }
}
