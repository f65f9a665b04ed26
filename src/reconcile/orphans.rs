//! Orphans: sandbox schemas and Redis keys with no live sandbox behind them (left by a crash
//! between provisioning steps, or keys written after a sandbox was destroyed). They are removed
//! only once their sandbox id (a UUIDv7, which carries its creation time) is older than the
//! grace period, so a create still in flight is never touched. Redis keys of ids this database
//! does not know are removed only when their namespace marker names this deployment: other
//! deployments may share the Redis.

use std::time::{Duration, SystemTime};

use super::Reconciler;
use crate::{error::Result, sandbox::SandboxId};

impl Reconciler {
    /// Orphaned schemas. (Orphaned Redis keys are found by the keyspace pass, `keyspace.rs`.)
    pub(super) async fn sweep_orphans(&self) {
        if let Err(error) = self.remove_orphan_schemas().await {
            tracing::warn!(%error, "orphan schema sweep failed; retrying next sweep");
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
}

/// Whether the sandbox id was minted longer than `grace` ago (ids without a timestamp are
/// never old enough: sandboxd did not make them).
pub(super) fn older_than(id: SandboxId, grace: Duration) -> bool {
    let Some(timestamp) = id.as_uuid().get_timestamp() else { return false };
    let (seconds, nanos) = timestamp.to_unix();
    let minted = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
    SystemTime::now().duration_since(minted).is_ok_and(|age| age >= grace)
}
