//! The keyspace pass: one SCAN walk over every sandbox key of the deployment (the single server,
//! or each master of a cluster) that removes, in the same walk,
//! - the keys of every DESTROYED sandbox still pending removal (on a single server a destroy
//!   leaves them to this pass: `isolation::redis_namespace` explains why), and
//! - every `orphan_interval`, orphaned keys: of destroyed sandboxes whose keys reappeared, or of
//!   ids this database does not know whose marker names this deployment, once older than
//!   `orphan_grace` (see `orphans.rs`).
//!
//! **Cost.** A pass costs one walk of the keyspace, about 0.9 s of Redis time per million keys
//! here, whatever the number of destroyed sandboxes, so a destroy's cost does not depend on
//! unrelated keys. Only one replica runs it at a time (the claim in `store::keyspace`), passes
//! start at most every `purge_interval` (1 s), and after a pass the next waits at least 9× the
//! time its SCAN steps took, so the walks take at most a tenth of Redis' time however large the
//! keyspace grows; the delay until a destroyed sandbox's keys are gone grows with the keyspace
//! instead. (The pass's own PostgreSQL work, judging and auditing orphans, does not count.)
//!
//! **Correctness.** SCAN returns every key that exists for the whole walk. The pending list is
//! read after the claim and before the walk, and a pending sandbox was DESTROYED before that
//! (nobody is given its prefix any more), so each of its keys is found and removed; only then is
//! `keys_purged_at` set. A pass that fails midway marks nothing and the next one starts over.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

use super::{Reconciler, orphans::older_than};
use crate::{
    error::Result,
    isolation::RedisNamespace,
    sandbox::{SandboxId, SandboxState},
    store::keyspace::ClaimedPass,
};

/// Keys looked at per SCAN step.
const SCAN_COUNT: usize = 1000;
/// Pending sandboxes handled per pass (the rest by the next).
const PENDING_PER_PASS: u32 = 50_000;

/// What the pass does with a sandbox's keys.
enum Verdict {
    Keep,
    /// Destroyed, keys pending removal.
    Purge,
    /// Orphaned; the tenant of its destroyed sandbox, if this database knows it.
    Orphan(Option<String>),
}

impl Reconciler {
    /// Runs a keyspace pass when this replica can claim one (it is due and has work).
    pub(super) async fn keyspace_pass_if_due(&self, me: i32) {
        let claimed = match self.store().claim_keyspace_pass(me).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "could not claim the keyspace pass; retrying next pass");
                return;
            }
        };
        let mut scanning = Duration::ZERO;
        let outcome = self.keyspace_pass(claimed, &mut scanning).await;
        let gap = self.config.purge_interval.max(scanning * 9);
        let orphans_searched =
            (claimed.orphans_due && outcome.is_ok()).then_some(self.config.orphan_interval);
        if let Err(error) = outcome {
            tracing::warn!(%error, "keyspace pass failed; the next one starts over");
        }
        if let Err(error) = self.store().finish_keyspace_pass(me, gap, orphans_searched).await {
            tracing::warn!(%error, "could not record the end of the keyspace pass");
        }
    }

    /// One pass; adds the time Redis spent on its SCAN steps to `scanning`.
    async fn keyspace_pass(&self, claimed: ClaimedPass, scanning: &mut Duration) -> Result<()> {
        let redis = self.manager.redis();
        let pending = self.store().keys_pending_purge(PENDING_PER_PASS).await?;
        if pending.is_empty() && !claimed.orphans_due {
            return Ok(());
        }
        let mut judged: HashMap<uuid::Uuid, Verdict> =
            pending.iter().map(|id| (id.as_uuid(), Verdict::Purge)).collect();
        let mut orphan_keys: HashMap<uuid::Uuid, u64> = HashMap::new();
        let mut scan = redis.scan_sandbox_keys().await?;
        loop {
            let step = Instant::now();
            let Some(batch) = redis.next_batch(&mut scan, SCAN_COUNT).await? else { break };
            *scanning += step.elapsed();
            if claimed.orphans_due {
                let unjudged: Vec<uuid::Uuid> =
                    batch.keys.keys().filter(|id| !judged.contains_key(id)).copied().collect();
                self.judge_orphans(redis, &unjudged, &mut judged).await?;
            }
            for (uuid, keys) in &batch.keys {
                match judged.get(uuid) {
                    Some(Verdict::Purge) => {
                        redis.unlink(keys).await?;
                    }
                    Some(Verdict::Orphan(_)) => {
                        *orphan_keys.entry(*uuid).or_default() += redis.unlink(keys).await?;
                    }
                    Some(Verdict::Keep) | None => {}
                }
            }
        }
        self.store().mark_keys_purged(&pending).await?;
        if !pending.is_empty() {
            tracing::debug!(sandboxes = pending.len(), "keys of destroyed sandboxes removed");
        }
        for (uuid, keys) in orphan_keys {
            let Some(Verdict::Orphan(tenant)) = judged.get(&uuid) else { continue };
            let id = SandboxId::from_uuid(uuid);
            self.store().record_orphan_keys_removed(tenant.as_deref(), id, keys).await?;
            tracing::info!(sandbox_id = %id, removed = keys, "orphaned redis keys removed");
        }
        Ok(())
    }

    /// Judges each sandbox once, at its first key, while its namespace marker is still there.
    async fn judge_orphans(
        &self,
        redis: &RedisNamespace,
        unjudged: &[uuid::Uuid],
        judged: &mut HashMap<uuid::Uuid, Verdict>,
    ) -> Result<()> {
        let states = self.store().sandbox_states(unjudged).await?;
        for &uuid in unjudged {
            let id = SandboxId::from_uuid(uuid);
            let verdict = if !older_than(id, self.config.orphan_grace) {
                Verdict::Keep
            } else {
                match states.get(&uuid) {
                    Some((SandboxState::Destroyed, tenant)) => {
                        Verdict::Orphan(Some(tenant.clone()))
                    }
                    // Live or being finished by the other passes.
                    Some(_) => Verdict::Keep,
                    None if redis.is_ours(id).await? => Verdict::Orphan(None),
                    None => Verdict::Keep,
                }
            };
            judged.insert(uuid, verdict);
        }
        Ok(())
    }
}
