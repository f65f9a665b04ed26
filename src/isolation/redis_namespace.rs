//! A sandbox's Redis key namespace `sandbox:{<uuid>}:`.
//!
//! Key patterns are built only from the validated sandbox id (hex digits and `-`), so no glob
//! character from a request can reach `SCAN MATCH`.

use std::time::Duration;

use redis::{AsyncCommands, RedisResult, aio::MultiplexedConnection};

use super::redis_pool::{PooledRedis, RedisPool, may_have_broken};
use crate::{
    error::{Error, Result},
    sandbox::SandboxId,
};

/// The key sandboxd writes at creation; it marks the namespace as provisioned.
const MARKER_SUFFIX: &str = "__sandboxd";
const SCAN_BATCH: usize = 500;

#[derive(Clone)]
pub struct RedisNamespace {
    pool: RedisPool,
    timeout: Duration,
    /// Names this deployment in every namespace marker (sandboxd's own key prefix), so the
    /// orphan sweep touches only namespaces it made when several deployments share a Redis.
    deployment: String,
}

impl RedisNamespace {
    pub fn new(pool: RedisPool, timeout: Duration, deployment: &str) -> Self {
        Self { pool, timeout, deployment: deployment.to_string() }
    }

    pub fn marker_key(id: SandboxId) -> String {
        format!("{}{MARKER_SUFFIX}", id.redis_prefix())
    }

    /// Writes the namespace marker (tenant and template), proving Redis takes writes for it.
    #[tracing::instrument(name = "redis.namespace.provision", skip(self))]
    pub async fn provision(&self, id: SandboxId, tenant: &str, template: &str) -> Result<()> {
        let fields = [
            ("sandbox_id", id.to_string()),
            ("tenant", tenant.into()),
            ("template", template.into()),
            ("deployment", self.deployment.clone()),
        ];
        self.on_connection(async |conn| conn.hset_multiple(Self::marker_key(id), &fields).await)
            .await
    }

    /// Unlinks every key under the prefix (SCAN + UNLINK in batches); returns how many.
    #[tracing::instrument(name = "redis.namespace.purge", skip(self))]
    pub async fn purge(&self, id: SandboxId) -> Result<u64> {
        let pattern = format!("{}*", id.redis_prefix());
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, unlinked) = self
                .on_connection(async |conn| {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(conn)
                        .await?;
                    let unlinked: u64 = if keys.is_empty() {
                        0
                    } else {
                        redis::cmd("UNLINK").arg(&keys).query_async(conn).await?
                    };
                    Ok((next, unlinked))
                })
                .await?;
            removed += unlinked;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Round-trip probe for readiness.
    pub async fn ping(&self) -> Result<()> {
        self.on_connection(async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .map(|_| ())
    }

    /// Runs `work` on a pooled connection, within the command timeout (per SCAN batch, for a
    /// purge). A connection whose work failed in a way that may have broken it, or did not
    /// answer in time, is discarded instead of going back to the pool, and so are the idle
    /// ones: they were connected to the same server and are likely broken too, and the pool
    /// hands out recently used connections without a ping.
    async fn on_connection<T>(
        &self,
        work: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut conn = self.pool.get().await?;
        let error = match tokio::time::timeout(self.timeout, work(&mut conn)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if !may_have_broken(&error) => return Err(error.into()),
            Ok(Err(error)) => error.into(),
            Err(_elapsed) => {
                Error::unavailable("redis", anyhow::anyhow!("no answer within {:?}", self.timeout))
            }
        };
        drop(PooledRedis::take(conn));
        self.pool.retain(|_, _| false);
        Err(error)
    }
}

impl RedisNamespace {
    /// Writes, reads back and deletes a probe key under the prefix; reports whether the
    /// namespace marker is present.
    pub async fn round_trip(&self, id: SandboxId) -> Result<bool> {
        let probe_key = format!("{}__health", id.redis_prefix());
        let token = uuid::Uuid::new_v4().to_string();
        let (read, marker_present) = self
            .on_connection(async |conn| {
                let () = redis::cmd("SET")
                    .arg(&probe_key)
                    .arg(&token)
                    .arg("PX")
                    .arg(10_000)
                    .query_async(&mut *conn)
                    .await?;
                let read: Option<String> = conn.get(&probe_key).await?;
                let _: u64 = conn.del(&probe_key).await?;
                let marker_present: bool = conn.exists(Self::marker_key(id)).await?;
                Ok((read, marker_present))
            })
            .await?;
        if read.as_deref() != Some(token.as_str()) {
            return Err(Error::Internal(anyhow::anyhow!("redis returned a different value")));
        }
        Ok(marker_present)
    }
}

/// A batch of the keyspace scan behind the orphan sweep.
pub struct ScanBatch {
    pub next_cursor: u64,
    /// The sandbox keys of this batch, by sandbox id.
    pub keys: std::collections::BTreeMap<uuid::Uuid, Vec<String>>,
}

impl RedisNamespace {
    /// One SCAN step over every sandbox key (`sandbox:{*`), grouped by sandbox. The sweep's cost
    /// grows with the whole keyspace; it runs once per orphan interval.
    pub async fn scan_sandbox_keys(&self, cursor: u64, count: usize) -> Result<ScanBatch> {
        let (next_cursor, found): (u64, Vec<String>) = self
            .on_connection(async |conn| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("sandbox:{*")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(conn)
                    .await
            })
            .await?;
        let mut keys = std::collections::BTreeMap::<uuid::Uuid, Vec<String>>::new();
        for key in found {
            if let Some(id) = sandbox_id_of(&key) {
                keys.entry(id).or_default().push(key);
            }
        }
        Ok(ScanBatch { next_cursor, keys })
    }

    /// Unlinks keys the caller found with [`RedisNamespace::scan_sandbox_keys`]; returns how
    /// many existed.
    pub async fn unlink(&self, keys: &[String]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.on_connection(async |conn| redis::cmd("UNLINK").arg(keys).query_async(conn).await)
            .await
    }

    /// Whether the namespace marker of `id` says this deployment made it.
    pub async fn is_ours(&self, id: SandboxId) -> Result<bool> {
        let deployment: Option<String> = self
            .on_connection(async |conn| conn.hget(Self::marker_key(id), "deployment").await)
            .await?;
        Ok(deployment.as_deref() == Some(self.deployment.as_str()))
    }
}

/// The sandbox id in a key `sandbox:{<uuid>}:…`.
fn sandbox_id_of(key: &str) -> Option<uuid::Uuid> {
    let rest = key.strip_prefix("sandbox:{")?;
    let (id, _) = rest.split_once("}:")?;
    (id.len() == 36).then(|| uuid::Uuid::try_parse(id).ok()).flatten()
}
