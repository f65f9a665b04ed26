//! Rate limiting per principal: a token bucket per (tenant, subject, role), with a rate and a
//! burst per role (`[rate_limit.<role>]`; a role without a table is unlimited). A call over the
//! limit answers RESOURCE_EXHAUSTED with `google.rpc.RetryInfo` (the time until the next token)
//! and reason `RATE_LIMITED`.
//!
//! Buckets live in this replica's memory: behind a load balancer with N replicas a principal
//! may get up to N times its rate. A bucket that has refilled completely is the same as no
//! bucket, so such buckets are dropped by a sweep every [`SWEEP_EVERY`]: memory is bounded by
//! the principals active within their bucket's refill time (each needs a valid API key).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    auth::{Principal, Role},
    error::{Error, Result},
};

/// How often each shard drops buckets that are full again.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Independent locks, so concurrent callers rarely wait on each other.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub owner: Option<RoleLimit>,
    pub admin: Option<RoleLimit>,
    pub member: Option<RoleLimit>,
    pub router: Option<RoleLimit>,
}

/// A token bucket's shape: `per_second` tokens are added each second, up to `burst`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLimit {
    pub per_second: f64,
    /// Calls a principal may make at once after being idle [default: `per_second`, at least 1].
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RoleLimit {
    fn burst(&self) -> f64 {
        match self.burst {
            Some(burst) => f64::from(burst),
            None => self.per_second.ceil().max(1.0),
        }
    }
}

impl RateLimitConfig {
    fn for_role(&self, role: Role) -> Option<RoleLimit> {
        match role {
            Role::Owner => self.owner,
            Role::Admin => self.admin,
            Role::Member => self.member,
            Role::Router => self.router,
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let roles = [Role::Owner, Role::Admin, Role::Member, Role::Router];
        let mut problems = Vec::new();
        for role in roles {
            let Some(limit) = self.for_role(role) else { continue };
            let name = role.as_str();
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                problems.push(format!(
                    "rate_limit.{name}.per_second must be a number greater than 0 (leave out [rate_limit.{name}] for no limit)"
                ));
            }
            if limit.burst == Some(0) {
                problems.push(format!("rate_limit.{name}.burst must be at least 1"));
            }
        }
        problems
    }
}

/// The buckets of this replica.
pub struct RateLimiter {
    config: RateLimitConfig,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    buckets: HashMap<BucketKey, Bucket>,
    last_sweep: Instant,
}

#[derive(Hash, PartialEq, Eq)]
struct BucketKey {
    tenant: String,
    subject: String,
    role: Role,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// Tokens after refilling up to `now`.
    fn refilled(&self, limit: &RoleLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * limit.per_second).min(limit.burst())
    }
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let now = Instant::now();
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { buckets: HashMap::new(), last_sweep: now }))
            .collect();
        Self { config, hasher: RandomState::new(), shards }
    }

    /// Takes a token for `principal`, or says how long until one is available.
    pub fn check(&self, principal: &Principal) -> Result<()> {
        let Some(limit) = self.config.for_role(principal.role) else { return Ok(()) };
        let key = BucketKey {
            tenant: principal.tenant.clone(),
            subject: principal.subject.clone(),
            role: principal.role,
        };
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let now = Instant::now();
        let mut shard = shard.lock().expect("rate limit shard poisoned");
        if now.saturating_duration_since(shard.last_sweep) >= SWEEP_EVERY {
            shard.sweep(&self.config, now);
        }
        let burst = limit.burst();
        let bucket = shard.buckets.entry(key).or_insert(Bucket { tokens: burst, updated: now });
        let tokens = bucket.refilled(&limit, now);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            return Ok(());
        }
        bucket.tokens = tokens;
        // Whole milliseconds, rounded up: a caller that waits exactly this long gets a token.
        let wait_ms = ((1.0 - tokens) / limit.per_second * 1000.0).ceil();
        let retry_after = Duration::from_millis(wait_ms.max(1.0) as u64);
        Err(Error::RateLimited { role: principal.role.as_str(), retry_after })
    }

    /// Buckets kept in memory (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().expect("poisoned").buckets.len()).sum()
    }
}

impl Shard {
    /// Drops the buckets that are full again: they behave exactly like new ones.
    fn sweep(&mut self, config: &RateLimitConfig, now: Instant) {
        self.buckets.retain(|key, bucket| match config.for_role(key.role) {
            Some(limit) => bucket.refilled(&limit, now) < limit.burst(),
            None => false,
        });
        self.last_sweep = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(subject: &str) -> Principal {
        Principal { tenant: "acme".into(), subject: subject.into(), role: Role::Member }
    }

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            member: Some(RoleLimit { per_second, burst: Some(burst) }),
            ..RateLimitConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = limiter(10.0, 3);
        for _ in 0..3 {
            limiter.check(&member("alice")).unwrap();
        }
        let Err(Error::RateLimited { retry_after, .. }) = limiter.check(&member("alice")) else {
            panic!("the fourth call is limited");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
        tokio::time::advance(retry_after).await;
        limiter.check(&member("alice")).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_evicted() {
        let limiter = limiter(10.0, 2);
        for subject in ["a", "b", "c"] {
            limiter.check(&member(subject)).unwrap();
        }
        assert_eq!(limiter.tracked(), 3);
        tokio::time::advance(SWEEP_EVERY).await;
        limiter.check(&member("d")).unwrap();
        // Each shard sweeps on its own next use; every shard's buckets are full by now.
        let left: usize = limiter
            .shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap();
                shard.sweep(&limiter.config, Instant::now());
                shard.buckets.len()
            })
            .sum();
        assert_eq!(left, 1, "only the bucket just used stays");
    }

    #[test]
    fn unlimited_roles_and_bad_limits() {
        let limiter = limiter(1.0, 1);
        let owner = Principal { tenant: "acme".into(), subject: "o".into(), role: Role::Owner };
        for _ in 0..100 {
            limiter.check(&owner).unwrap();
        }
        assert_eq!(limiter.tracked(), 0, "unlimited roles keep no bucket");
        let bad = RateLimitConfig {
            router: Some(RoleLimit { per_second: 0.0, burst: Some(0) }),
            ..RateLimitConfig::default()
        };
        assert_eq!(bad.problems().len(), 2);
    }
}
