//! The bookkeeping of the reconciler's Redis keyspace pass: which DESTROYED sandboxes still have
//! keys to remove, and the one row that lets a single replica at a time run the pass (a claim
//! is a committed UPDATE, not a lock held while Redis is walked).

use std::time::Duration;

use uuid::Uuid;

use super::{Store, reconcile::worker_gone};
use crate::{error::Result, sandbox::SandboxId};

/// What a claimed pass should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedPass {
    /// Also look for orphaned keys (their interval has passed).
    pub orphans_due: bool,
}

/// The pass's row (migration 0004).
const PASS: &str = "redis";

impl Store {
    /// Claims the keyspace pass for replica `me` when it is due: its gap since the last pass has
    /// passed and there is work (keys pending removal, or the orphan interval has passed), and
    /// no live replica is running it. `None` otherwise.
    #[tracing::instrument(name = "store.keyspace.claim", skip(self))]
    pub async fn claim_keyspace_pass(&self, me: i32) -> Result<Option<ClaimedPass>> {
        let holder_gone = worker_gone("p.holder");
        let sql = format!(
            "UPDATE keyspace_passes p SET holder = $1, running = true
             WHERE p.name = $2
               AND (NOT p.running OR p.holder = $1 OR {holder_gone})
               AND p.next_at <= now()
               AND (p.next_orphans_at <= now()
                    OR EXISTS (SELECT 1 FROM sandboxes
                               WHERE state = 'DESTROYED' AND keys_purged_at IS NULL))
             RETURNING p.next_orphans_at <= now()"
        );
        let orphans_due: Option<bool> =
            sqlx::query_scalar(&sql).bind(me).bind(PASS).fetch_optional(self.pool()).await?;
        Ok(orphans_due.map(|orphans_due| ClaimedPass { orphans_due }))
    }

    /// Ends a pass claimed by `me`: the next one starts no sooner than `gap` from now, and the
    /// next orphan search `orphan_interval` from now when this pass did one.
    pub async fn finish_keyspace_pass(
        &self,
        me: i32,
        gap: Duration,
        orphans_searched: Option<Duration>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE keyspace_passes SET running = false,
                 next_at = now() + make_interval(secs => $3),
                 next_orphans_at = CASE WHEN $4::float8 IS NULL THEN next_orphans_at
                                        ELSE now() + make_interval(secs => $4) END
             WHERE name = $2 AND holder = $1",
        )
        .bind(me)
        .bind(PASS)
        .bind(gap.as_secs_f64())
        .bind(orphans_searched.map(|interval| interval.as_secs_f64()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// DESTROYED sandboxes whose Redis keys are still to be removed, earliest destroyed first.
    pub async fn keys_pending_purge(&self, limit: u32) -> Result<Vec<SandboxId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sandboxes WHERE state = 'DESTROYED' AND keys_purged_at IS NULL
             ORDER BY destroyed_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// Records that a pass removed every key of these sandboxes.
    pub async fn mark_keys_purged(&self, ids: &[SandboxId]) -> Result<()> {
        let sql = "UPDATE sandboxes SET keys_purged_at = now()
                   WHERE id = ANY($1) AND state = 'DESTROYED' AND keys_purged_at IS NULL";
        Ok(self.execute_for_ids(sql, ids).await?)
    }
}
