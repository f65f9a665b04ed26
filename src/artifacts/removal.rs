//! Removing artifacts with their objects, for the retention (the reconciler) and the tenant
//! purge (`sandboxd tenants purge`): claim a batch (one statement, committed), delete each
//! object without holding any database lock, then delete its row with an `artifact_removed`
//! event. An object that cannot be deleted keeps its row (claimed, hidden); the claim lapses and
//! a later run retries.

use chrono::{DateTime, Utc};

use super::{Artifact, ArtifactObjects};
use crate::{
    error::{Error, Result},
    store::Store,
};

/// Why an artifact was removed (the `reason` of its `artifact_removed` event).
pub mod reason {
    pub const RETENTION: &str = "retention";
    pub const TENANT_PURGE: &str = "tenant_purge";
}

/// What to remove.
#[derive(Debug, Clone, Copy)]
pub enum Removal<'a> {
    /// Artifacts of sandboxes destroyed before this time.
    DestroyedBefore(DateTime<Utc>),
    /// Every artifact of this tenant.
    Tenant(&'a str),
}

/// Removes up to `max_batches` batches of `batch` artifacts; returns how many were removed.
pub async fn remove(
    store: &Store,
    objects: &ArtifactObjects,
    what: Removal<'_>,
    batch: u32,
    max_batches: usize,
    actor: &str,
) -> Result<u64> {
    let reason = match what {
        Removal::DestroyedBefore(_) => reason::RETENTION,
        Removal::Tenant(_) => reason::TENANT_PURGE,
    };
    let mut removed = 0;
    for _ in 0..max_batches {
        let claimed: Vec<Artifact> = match what {
            Removal::DestroyedBefore(before) => {
                store.claim_expired_artifacts(before, batch).await?
            }
            Removal::Tenant(tenant) => store.claim_tenant_artifacts(tenant, batch).await?,
        };
        let last_batch = claimed.len() < batch as usize;
        let before = removed;
        for artifact in claimed {
            if let Err(error) = objects.delete(&artifact.object_key()).await {
                tracing::warn!(artifact_id = %artifact.id, %error, "could not delete an artifact's object; retrying later");
                continue;
            }
            if store.delete_claimed_artifact(&artifact, actor, reason).await? {
                removed += 1;
            }
        }
        // A batch that removed nothing (objects not deletable) would be claimed again.
        if last_batch || removed == before {
            break;
        }
    }
    Ok(removed)
}

/// Batches of a tenant purge, at most (it stops early when nothing is left).
const PURGE_BATCHES: usize = 100_000;

/// Removes every artifact of `tenant` with its object (`sandboxd tenants purge`). Refused while
/// the tenant has sandboxes that are not DESTROYED (they could publish meanwhile), and when
/// it has artifacts but the server has no object store (their objects would stay).
pub async fn purge_tenant(
    store: &Store,
    objects: Option<&ArtifactObjects>,
    tenant: &str,
) -> Result<u64> {
    let live = store.live_sandboxes_of_tenant(tenant).await?;
    if live > 0 {
        return Err(Error::FailedPrecondition {
            reason: "TENANT_HAS_LIVE_SANDBOXES",
            message: format!(
                "tenant {tenant:?} has {live} sandboxes that are not destroyed; destroy them first"
            ),
        });
    }
    let Some(objects) = objects else {
        if store.artifacts_of_tenant(tenant).await? == 0 {
            return Ok(0);
        }
        return Err(Error::FailedPrecondition {
            reason: "OBJECT_STORE_NOT_CONFIGURED",
            message: "the tenant has artifacts but no object store is configured (s3.enabled = false) to remove their objects from".into(),
        });
    };
    let removed =
        remove(store, objects, Removal::Tenant(tenant), 500, PURGE_BATCHES, "operator").await?;
    let left = store.artifacts_of_tenant(tenant).await?;
    if left > 0 {
        return Err(Error::unavailable(
            "object store",
            anyhow::anyhow!(
                "{left} artifacts of tenant {tenant:?} could not be removed (their objects could not be deleted); run the purge again"
            ),
        ));
    }
    Ok(removed)
}
