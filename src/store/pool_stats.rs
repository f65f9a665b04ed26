//! Warm-pool hit and miss counters, sharded (see the `pool_stats` table): each count goes to a
//! random shard, so concurrent claims do not queue on one row; reads sum the shards.

use sqlx::PgConnection;

use crate::error::Result;

/// Shards per template.
pub(super) const SHARDS: i16 = 16;

pub(super) fn random_shard() -> i16 {
    rand::random_range(0..SHARDS)
}

/// Counts a cold create of a pooled `template` (a miss) in the caller's transaction; hits are
/// counted by the claim statement itself (`store::pool`).
pub(super) async fn count_miss(conn: &mut PgConnection, template: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO pool_stats (template, shard, misses) VALUES ($1, $2, 1)
         ON CONFLICT (template, shard) DO UPDATE SET misses = pool_stats.misses + 1",
    )
    .bind(template)
    .bind(random_shard())
    .execute(conn)
    .await?;
    Ok(())
}
