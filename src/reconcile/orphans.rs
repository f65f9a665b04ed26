//! Orphans: sandbox schemas and Redis keys with no live sandbox behind them (left by a crash
//! between provisioning steps, or keys written after a sandbox was destroyed). They are removed
//! only once their sandbox id (a UUIDv7, which carries its creation time) is older than the
//! grace period, so a create still in flight is never touched. Redis keys of ids this database
//! does not know are removed only when their namespace marker names this deployment: other
//! deployments may share the Redis.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

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

    /// One pass over the keyspace: every key of an orphaned sandbox is unlinked as the scan
    /// finds it (SCAN returns every key that exists for the whole pass), so the cost is one pass
    /// whatever the number of orphans. Each sandbox is judged once, at its first key, while its
    /// namespace marker is still there; each removal is audited once, at the end.
    async fn remove_orphan_keys(&self) -> Result<()> {
        let redis = self.manager.redis();
        // Sandbox id → `Some(its tenant, if known)` when orphaned, `None` when kept.
        let mut judged: HashMap<uuid::Uuid, Option<Option<String>>> = HashMap::new();
        let mut removed: HashMap<uuid::Uuid, u64> = HashMap::new();
        let mut cursor = 0;
        loop {
            let batch = redis.scan_sandbox_keys(cursor, SCAN_COUNT).await?;
            let unjudged: Vec<uuid::Uuid> =
                batch.keys.keys().filter(|id| !judged.contains_key(id)).copied().collect();
            let states = self.store().sandbox_states(&unjudged).await?;
            for uuid in unjudged {
                let id = SandboxId::from_uuid(uuid);
                let verdict = if !older_than(id, self.config.orphan_grace) {
                    None
                } else {
                    match states.get(&uuid) {
                        Some((SandboxState::Destroyed, tenant)) => Some(Some(tenant.clone())),
                        // Live or being finished by the other passes.
                        Some(_) => None,
                        None if redis.is_ours(id).await? => Some(None),
                        None => None,
                    }
                };
                judged.insert(uuid, verdict);
            }
            for (uuid, keys) in &batch.keys {
                if matches!(judged.get(uuid), Some(Some(_))) {
                    *removed.entry(*uuid).or_default() += redis.unlink(keys).await?;
                }
            }
            if batch.next_cursor == 0 {
                break;
            }
            cursor = batch.next_cursor;
        }
        for (uuid, keys) in removed {
            let Some(Some(tenant)) = judged.get(&uuid) else { continue };
            let id = SandboxId::from_uuid(uuid);
            self.store().record_orphan_keys_removed(tenant.as_deref(), id, keys).await?;
            tracing::info!(sandbox_id = %id, removed = keys, "orphaned redis keys removed");
        }
        Ok(())
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
