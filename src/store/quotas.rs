//! Live-sandbox quotas: per owner (`sandbox.max_live_per_owner`) and per tenant
//! (`sandbox.max_live_per_tenant`, with per-tenant overrides), both checked by the statement
//! that adds a live sandbox (a cold create's insert, a warm claim's update), in the same
//! transaction, under one advisory lock.
//!
//! **Lock order.** Exactly one quota lock per transaction, so there is no order to get wrong:
//! the tenant's lock when the tenant has a limit, the owner's otherwise. The tenant's lock
//! covers the owner's quota too: every sandbox an owner adds is added by a transaction holding
//! its tenant's lock, so under it the owner's count is exact as well. The price is that one
//! tenant's creates serialize on the short tail of the transaction (the insert or claim and the
//! commit; the schema DDL runs before the lock), where they used to serialize per owner. Pool
//! refills take their template's pool lock instead and add no live sandbox of any tenant.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::sandboxes::live_states;
use crate::error::Result;

/// The quotas a new live sandbox is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveQuotas {
    pub per_owner: u32,
    /// `None`: the tenant has no limit.
    pub per_tenant: Option<u32>,
}

/// Which quota refused a create or a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    Owner {
        limit: u32,
    },
    Tenant {
        limit: u32,
    },
    /// A warm pool's bounds (`min_ready`, `max_size`) refused a new member.
    Pool,
}

impl LiveQuotas {
    /// The advisory-lock key to take before counting (module docs). A number computed here
    /// rather than a hash of text in SQL, so it can sit in a simple-query batch without any
    /// caller-supplied text in it.
    pub(super) fn lock_key(&self, tenant: &str, owner: &str) -> i64 {
        match self.per_tenant {
            Some(_) => lock_key(&[b"sandboxd.tenant_quota", tenant.as_bytes()]),
            None => lock_key(&[b"sandboxd.owner_quota", tenant.as_bytes(), owner.as_bytes()]),
        }
    }

    /// The tenant limit as a bind value (`NULL`: none).
    pub(super) fn tenant_limit(&self) -> Option<i64> {
        self.per_tenant.map(i64::from)
    }

    /// After a refusal, still under the lock: which quota is full (the owner's first).
    /// `None` when neither is (the refusal was for another reason).
    pub(super) async fn refusal(
        &self,
        conn: &mut PgConnection,
        tenant: &str,
        owner: &str,
    ) -> Result<Option<QuotaRefusal>> {
        let (owner_live, tenant_live): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE owner = $2), count(*) FROM sandboxes
             WHERE tenant = $1 AND state = ANY($3)",
        )
        .bind(tenant)
        .bind(owner)
        .bind(live_states())
        .fetch_one(conn)
        .await?;
        if owner_live >= i64::from(self.per_owner) {
            return Ok(Some(QuotaRefusal::Owner { limit: self.per_owner }));
        }
        Ok(self
            .per_tenant
            .filter(|&limit| tenant_live >= i64::from(limit))
            .map(|limit| QuotaRefusal::Tenant { limit }))
    }
}

/// SQL: both quotas hold for one more live sandbox of tenant `$tenant`, owner `$owner`, with
/// the owner limit in `$owner_limit` and the tenant limit (or NULL) in `$tenant_limit` (the
/// live states in `$states`).
pub(super) fn quotas_hold(
    tenant: &str,
    owner: &str,
    states: &str,
    owner_limit: &str,
    tenant_limit: &str,
) -> String {
    format!(
        "(SELECT count(*) FROM sandboxes
          WHERE tenant = {tenant} AND owner = {owner} AND state = ANY({states})) < {owner_limit}
         AND ({tenant_limit}::bigint IS NULL
              OR (SELECT count(*) FROM sandboxes WHERE tenant = {tenant} AND state = ANY({states}))
                 < {tenant_limit})"
    )
}

/// The advisory-lock key under which a template's pool members are counted and added.
pub(super) fn pool_lock_key(template: &str) -> i64 {
    lock_key(&[b"sandboxd.pool", template.as_bytes()])
}

fn lock_key(parts: &[&[u8]]) -> i64 {
    // Parts joined by NUL bytes (as keys were always computed, so replicas of different
    // versions agree on them).
    let mut hasher = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update(b"\0");
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}
