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

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::{
    clock,
    error::{Error, Result},
    isolation::RedisNamespace,
};

/// The first pause between attempts of a waiting acquisition; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return {1, fence}
";

const RENEW: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return {0, 0} end
local bar = string.find(value, '|', 1, true)
if not bar or string.sub(value, 1, bar - 1) ~= ARGV[1] then return {0, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, tonumber(string.sub(value, bar + 1))}
";

const RELEASE: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local bar = string.find(value, '|', 1, true)
if not bar or string.sub(value, 1, bar - 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
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
}

impl Locks {
    pub fn new(redis: RedisNamespace) -> Self {
        Self { redis }
    }

    /// The lock's key and its fencing counter, in one hash slot.
    fn keys(&self, tenant: &str, resource: &str) -> (String, String) {
        let mut hasher = Sha256::new();
        hasher.update(tenant.as_bytes());
        hasher.update(b"\0");
        hasher.update(resource.as_bytes());
        let digest = hex::encode(&hasher.finalize()[..16]);
        let lock = format!("{}lock:{{{digest}}}", self.redis.deployment_prefix());
        let fence = format!("{lock}:fence");
        (lock, fence)
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
        let (lock, fence) = self.keys(tenant, resource);
        let owner_token = hex::encode(rand::random::<[u8; 16]>());
        let deadline = tokio::time::Instant::now() + wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let ttl_ms = millis(ttl);
            let (acquired, value): (i64, i64) = self
                .redis
                .on_connection(async |conn| {
                    eval(ACQUIRE, &[&lock, &fence])
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
        let (lock, _) = self.keys(tenant, resource);
        let ttl_ms = millis(ttl);
        let (renewed, fencing): (i64, i64) = self
            .redis
            .on_connection(async |conn| {
                eval(RENEW, &[&lock]).arg(owner_token).arg(ttl_ms).query_async(conn).await
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
        let (lock, _) = self.keys(tenant, resource);
        let released: i64 = self
            .redis
            .on_connection(async |conn| {
                eval(RELEASE, &[&lock]).arg(owner_token).query_async(conn).await
            })
            .await?;
        Ok(released == 1)
    }
}

/// `EVAL script numkeys keys...`; the caller adds the arguments. (A cluster routes it by its
/// first key; all of a lock's keys share one slot.)
fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}
