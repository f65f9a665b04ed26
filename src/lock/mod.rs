//! Distributed locks with fencing tokens, in Redis (AcquireLock, RenewLock, ReleaseLock).
//!
//! A lock is one key holding `<owner token>|<fencing token>`, set with `NX` and a TTL; beside it,
//! in the same hash slot (so the scripts run on Redis Cluster too), a counter that every
//! acquisition increments: the fencing token, which only grows, so a resource that remembers the
//! largest token it saw can refuse a holder whose lease ran out. Acquire, renew and release are
//! Lua scripts, so each check-and-change is atomic; renew and release compare the owner token
//! first (a holder that lost its lease cannot extend or delete its successor's).
//!
//! Names are scoped by tenant: the key is derived from a hash of the tenant and the name, so
//! tenants cannot block each other and a name cannot break the hash tag. Counters outlive their
//! locks (one small key per name ever used), so tokens keep growing across expiries.

pub mod audit;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::{
    clock,
    error::{Error, Result},
    isolation::RedisNamespace,
    metrics::{LockWaitOutcome, Metrics},
};

/// The first pause between attempts of a waiting acquisition; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// KEYS: lock, fence, since (when the lease was acquired, by Redis's clock, for the hold-time
/// metric; a key of its own, so the lock's value keeps the format older servers parse). Scripts
/// are replicated by their effects, so reading `TIME` is allowed.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
redis.call('SET', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), 'PX', ARGV[2])
return {1, fence}
";

/// KEYS: lock, since.
const RENEW: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return {0, 0} end
local bar = string.find(value, '|', 1, true)
if not bar or string.sub(value, 1, bar - 1) ~= ARGV[1] then return {0, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, tonumber(string.sub(value, bar + 1))}
";

/// KEYS: lock, since. Answers {released, milliseconds held or -1}.
const RELEASE: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return {0, -1} end
local bar = string.find(value, '|', 1, true)
if not bar or string.sub(value, 1, bar - 1) ~= ARGV[1] then return {0, -1} end
redis.call('DEL', KEYS[1])
local since = tonumber(redis.call('GET', KEYS[2]))
redis.call('DEL', KEYS[2])
if not since then return {1, -1} end
local t = redis.call('TIME')
return {1, t[1] * 1000 + math.floor(t[2] / 1000) - since}
";

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub resource: String,
    /// Proves ownership; needed to renew or release.
    pub owner_token: String,
    pub fencing_token: u64,
    pub expire_at: DateTime<Utc>,
}

/// The lock service of one server.
#[derive(Clone)]
pub struct Locks {
    redis: RedisNamespace,
    /// Where waits and holds are recorded, and under which `scope` label.
    metrics: Option<(Arc<Metrics>, &'static str)>,
}

/// A lock's keys, all in one hash slot.
struct LockKeys {
    lock: String,
    fence: String,
    since: String,
}

impl Locks {
    pub fn new(redis: RedisNamespace) -> Self {
        Self { redis, metrics: None }
    }

    /// The same locks, with waits and holds recorded under `scope` (`api`, `git_push`).
    pub fn observed(&self, metrics: Arc<Metrics>, scope: &'static str) -> Self {
        Self { redis: self.redis.clone(), metrics: Some((metrics, scope)) }
    }

    fn keys(&self, tenant: &str, resource: &str) -> LockKeys {
        let mut hasher = Sha256::new();
        hasher.update(tenant.as_bytes());
        hasher.update(b"\0");
        hasher.update(resource.as_bytes());
        let digest = hex::encode(&hasher.finalize()[..16]);
        let lock = format!("{}lock:{{{digest}}}", self.redis.deployment_prefix());
        LockKeys { fence: format!("{lock}:fence"), since: format!("{lock}:since"), lock }
    }

    /// Acquires `resource` for `ttl`, retrying with exponential backoff and jitter for up to
    /// `wait` while someone else holds it. `ABORTED` (`LOCK_NOT_ACQUIRED`) when it is still held
    /// then, naming when the holder's lease ends.
    #[tracing::instrument(name = "lock.acquire", skip(self), fields(tenant = %tenant))]
    pub async fn acquire(
        &self,
        tenant: &str,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        let started = std::time::Instant::now();
        let result = self.acquire_waiting(tenant, resource, ttl, wait).await;
        if let Some((metrics, scope)) = &self.metrics {
            let outcome = match &result {
                Ok(_) => LockWaitOutcome::Acquired,
                Err(Error::Aborted { .. }) => LockWaitOutcome::NotAcquired,
                Err(_) => LockWaitOutcome::Error,
            };
            metrics.record_lock_wait(scope, outcome, started.elapsed());
        }
        result
    }

    async fn acquire_waiting(
        &self,
        tenant: &str,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        let keys = self.keys(tenant, resource);
        let owner_token = hex::encode(rand::random::<[u8; 16]>());
        let deadline = tokio::time::Instant::now() + wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let ttl_ms = millis(ttl);
            let (acquired, value): (i64, i64) = self
                .redis
                .on_connection(async |conn| {
                    eval(ACQUIRE, &[&keys.lock, &keys.fence, &keys.since])
                        .arg(&owner_token)
                        .arg(ttl_ms)
                        .query_async(conn)
                        .await
                })
                .await?;
            if acquired == 1 {
                return Ok(Lease {
                    resource: resource.to_string(),
                    owner_token,
                    fencing_token: u64::try_from(value).unwrap_or(0),
                    expire_at: clock::later_saturating(Utc::now(), ttl),
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let holder_ends = clock::later_saturating(
                    Utc::now(),
                    Duration::from_millis(u64::try_from(value).unwrap_or(0)),
                );
                return Err(Error::Aborted {
                    reason: "LOCK_NOT_ACQUIRED",
                    message: format!(
                        "lock {resource:?} is held by another owner until about {}; retry with backoff",
                        holder_ends.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    ),
                });
            }
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
            tokio::time::sleep(jittered.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Extends a held lease to `ttl` from now. `FAILED_PRECONDITION` (`LOCK_NOT_HELD`) when the
    /// token no longer holds it.
    #[tracing::instrument(name = "lock.renew", skip(self, owner_token), fields(tenant = %tenant))]
    pub async fn renew(
        &self,
        tenant: &str,
        resource: &str,
        owner_token: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let keys = self.keys(tenant, resource);
        let ttl_ms = millis(ttl);
        let (renewed, fencing): (i64, i64) = self
            .redis
            .on_connection(async |conn| {
                let keys = [&keys.lock, &keys.since];
                eval(RENEW, &keys).arg(owner_token).arg(ttl_ms).query_async(conn).await
            })
            .await?;
        if renewed != 1 {
            return Err(Error::FailedPrecondition {
                reason: "LOCK_NOT_HELD",
                message: format!(
                    "lock {resource:?} is not held with this owner token (it expired or was released): stop using it"
                ),
            });
        }
        Ok(Lease {
            resource: resource.to_string(),
            owner_token: owner_token.to_string(),
            fencing_token: u64::try_from(fencing).unwrap_or(0),
            expire_at: clock::later_saturating(Utc::now(), ttl),
        })
    }

    /// Releases a held lease; `false` when the token no longer held it (idempotent).
    #[tracing::instrument(name = "lock.release", skip(self, owner_token), fields(tenant = %tenant))]
    pub async fn release(&self, tenant: &str, resource: &str, owner_token: &str) -> Result<bool> {
        let keys = self.keys(tenant, resource);
        let (released, held_ms): (i64, i64) = self
            .redis
            .on_connection(async |conn| {
                let keys = [&keys.lock, &keys.since];
                eval(RELEASE, &keys).arg(owner_token).query_async(conn).await
            })
            .await?;
        if let (Some((metrics, scope)), Ok(held_ms)) = (&self.metrics, u64::try_from(held_ms)) {
            metrics.record_lock_hold(scope, Duration::from_millis(held_ms));
        }
        Ok(released == 1)
    }
}

/// `EVAL script numkeys keys...`; the caller adds the arguments. (A cluster routes it by its
/// first key; all of a lock's keys share one slot.)
fn eval(script: &str, keys: &[&String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}
