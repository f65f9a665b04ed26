//! Orphans: sandbox schemas and Redis keys with no live sandbox behind them (left by a crash
//! between provisioning steps, or keys written after a sandbox was destroyed). They are removed
//! only once their sandbox id (a UUIDv7, which carries its creation time) is older than the
//! grace period, so a create still in flight is never touched. Redis keys of ids this database
//! does not know are removed only when their namespace marker names this deployment: other
//! deployments may share the Redis.

use std::time::{Duration, SystemTime};

use super::Reconciler;
use crate::{error::Result, sandbox::SandboxId, sandbox::SandboxState};

/// Keys looked at per SCAN step.
const SCAN_COUNT: usize = 1000;

impl Reconciler {
    pub(super) async fn sweep_orphans(&self) {
        if let Err(error) = self.remove_orphan_schemas().await {
            tracing::warn!(%error, "orphan schema sweep failed; retrying next sweep");
        }
        if let Err(error) = self.remove_orphan_keys().await {
            tracing::warn!(%error, "orphan key sweep failed; retrying next sweep");
        }
    }

    async fn remove_orphan_schemas(&self) -> Result<()> {
        for orphan in self.store().orphan_schemas().await? {
            if !older_than(orphan.id, self.config.orphan_grace) {
                continue;
            }
            if self.store().drop_orphan_schema(&orphan).await? {
                tracing::info!(schema = %orphan.id.schema_name(), "orphaned schema dropped");
            }
        }
        Ok(())
    }

    async fn remove_orphan_keys(&self) -> Result<()> {
        let redis = self.manager.redis();
        let mut cursor = 0;
        loop {
            let batch = redis.scan_sandbox_ids(cursor, SCAN_COUNT).await?;
            let old: Vec<uuid::Uuid> = batch
                .ids
                .into_iter()
                .filter(|id| older_than(SandboxId::from_uuid(*id), self.config.orphan_grace))
                .collect();
            let states = self.store().sandbox_states(&old).await?;
            for uuid in old {
                let id = SandboxId::from_uuid(uuid);
                let tenant = match states.get(&uuid) {
                    Some((SandboxState::Destroyed, tenant)) => Some(tenant.as_str()),
                    // Live or being finished by the other passes.
                    Some(_) => continue,
                    None if redis.is_ours(id).await? => None,
                    None => continue,
                };
                let removed = redis.purge(id).await?;
                self.store().record_orphan_keys_removed(tenant, id, removed).await?;
                tracing::info!(sandbox_id = %id, removed, "orphaned redis keys removed");
            }
            if batch.next_cursor == 0 {
                return Ok(());
            }
            cursor = batch.next_cursor;
        }
    }
}

/// Whether the sandbox id was minted longer than `grace` ago (ids without a timestamp are
/// never old enough: sandboxd did not make them).
fn older_than(id: SandboxId, grace: Duration) -> bool {
    let Some(timestamp) = id.as_uuid().get_timestamp() else { return false };
    let (seconds, nanos) = timestamp.to_unix();
    let minted = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
    SystemTime::now().duration_since(minted).is_ok_and(|age| age >= grace)
}
