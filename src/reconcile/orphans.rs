//! Orphans: sandbox schemas and Redis keys with no live sandbox behind them (left by a crash
//! between provisioning steps, or keys written after a sandbox was destroyed). They are removed
//! only once their sandbox id (a UUIDv7, which carries its creation time) is older than the
//! grace period, so a create still in flight is never touched. Redis keys of ids this database
//! does not know are removed only when their namespace marker names this deployment: other
//! deployments may share the Redis.
//!
//! Sandbox login roles are found by their comment, which names this database (other databases
//! of a shared server have their own), after the schemas (a role is dropped only once
//! it holds no privilege on a schema). Redis ACL users (when a template makes them) whose
//! sandbox is DESTROYED are removed; of ids this database does not know, only those whose
//! namespace marker names this deployment or is gone (a live sandbox always has its marker).

use std::time::{Duration, SystemTime};

use super::Reconciler;
use crate::{error::Result, sandbox::SandboxId};

impl Reconciler {
    /// Orphaned schemas. (Orphaned Redis keys are found by the keyspace pass, `keyspace.rs`.)
    pub(super) async fn sweep_orphans(&self) {
        if let Err(error) = self.remove_orphan_schemas().await {
            tracing::warn!(%error, "orphan schema sweep failed; retrying next sweep");
        }
        if let Err(error) = self.remove_orphan_roles().await {
            tracing::warn!(%error, "orphan role sweep failed; retrying next sweep");
        }
        if self.manager.templates().any_redis_acl()
            && let Err(error) = self.remove_orphan_acl_users().await
        {
            tracing::warn!(%error, "orphan ACL user sweep failed; retrying next sweep");
        }
        match self.store().forget_orphan_credentials().await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "credentials of gone sandboxes removed"),
            Err(error) => tracing::warn!(%error, "orphan credentials sweep failed"),
        }
    }

    async fn remove_orphan_roles(&self) -> Result<()> {
        for (id, tenant) in self.store().orphan_roles().await? {
            if !older_than(id, self.config.orphan_grace) {
                continue;
            }
            match self.store().drop_orphan_role(id, tenant.as_deref()).await {
                Ok(true) => tracing::info!(sandbox_id = %id, "orphaned login role dropped"),
                Ok(false) => {}
                // One role that cannot go yet (still privileged on a schema) stops no other.
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, %error, "orphaned login role not dropped yet")
                }
            }
        }
        Ok(())
    }

    async fn remove_orphan_acl_users(&self) -> Result<()> {
        let redis = self.manager.redis();
        let with_users = redis.sandboxes_with_acl_users().await?;
        for (id, tenant) in self.store().sandboxes_not_live(&with_users).await? {
            if !older_than(id, self.config.orphan_grace) {
                continue;
            }
            let unknown = tenant.is_none();
            if unknown && redis.has_foreign_marker(id).await? {
                continue;
            }
            redis.delete_acl_user(id).await?;
            self.store().record_orphan_acl_user_removed(id, tenant.as_deref()).await?;
            tracing::info!(sandbox_id = %id, "orphaned redis ACL user removed");
        }
        Ok(())
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
