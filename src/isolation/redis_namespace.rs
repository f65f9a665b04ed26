//! A sandbox's Redis key namespace `sandbox:{<uuid>}:`.
//!
//! Key patterns are built only from the validated sandbox id (hex digits and `-`), so no glob
//! character from a request can reach `SCAN MATCH`.

use std::time::Duration;

use deadpool_redis::Pool;
use redis::AsyncCommands;

use crate::{
    error::{Error, Result},
    sandbox::SandboxId,
};

/// The key sandboxd writes at creation; it marks the namespace as provisioned.
const MARKER_SUFFIX: &str = "__sandboxd";
const SCAN_BATCH: usize = 500;

#[derive(Clone)]
pub struct RedisNamespace {
    pool: Pool,
    timeout: Duration,
}

impl RedisNamespace {
    pub fn new(pool: Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    pub fn marker_key(id: SandboxId) -> String {
        format!("{}{MARKER_SUFFIX}", id.redis_prefix())
    }

    /// Writes the namespace marker (tenant and template), proving Redis takes writes for it.
    #[tracing::instrument(name = "redis.namespace.provision", skip(self))]
    pub async fn provision(&self, id: SandboxId, tenant: &str, template: &str) -> Result<()> {
        self.with_timeout(async {
            let mut conn = self.pool.get().await?;
            let fields = [
                ("sandbox_id", id.to_string()),
                ("tenant", tenant.into()),
                ("template", template.into()),
            ];
            let () = conn.hset_multiple(Self::marker_key(id), &fields).await?;
            Ok(())
        })
        .await
    }

    /// Unlinks every key under the prefix (SCAN + UNLINK in batches); returns how many.
    #[tracing::instrument(name = "redis.namespace.purge", skip(self))]
    pub async fn purge(&self, id: SandboxId) -> Result<u64> {
        let pattern = format!("{}*", id.redis_prefix());
        let mut conn = self.pool.get().await?;
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .with_timeout(async {
                    Ok(redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            if !keys.is_empty() {
                let unlinked: u64 = self
                    .with_timeout(async {
                        Ok(redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?)
                    })
                    .await?;
                removed += unlinked;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Round-trip probe for readiness.
    pub async fn ping(&self) -> Result<()> {
        self.with_timeout(async {
            let mut conn = self.pool.get().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    async fn with_timeout<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| {
            Err(Error::unavailable("redis", anyhow::anyhow!("no answer within {:?}", self.timeout)))
        })
    }
}

/// Builds the pool with explicit timeouts (deadpool-redis has none by default, and `get()`
/// could then wait forever) and TCP_NODELAY (redis-rs leaves it off, so every small command
/// would wait on Nagle's algorithm and delayed ACKs, ~40 ms).
pub fn build_pool(config: &crate::config::RedisConfig) -> anyhow::Result<Pool> {
    use redis::IntoConnectionInfo;
    let info = config
        .url
        .expose()
        .into_connection_info()
        .map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let manager = deadpool_redis::Manager::new(info)
        .map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?;
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|error| anyhow::anyhow!("building the Redis pool: {error}"))
}

impl RedisNamespace {
    /// Writes, reads back and deletes a probe key under the prefix; reports whether the
    /// namespace marker is present.
    pub async fn round_trip(&self, id: SandboxId) -> Result<bool> {
        self.with_timeout(async {
            let mut conn = self.pool.get().await?;
            let probe_key = format!("{}__health", id.redis_prefix());
            let token = uuid::Uuid::new_v4().to_string();
            let () = redis::cmd("SET")
                .arg(&probe_key)
                .arg(&token)
                .arg("PX")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            let read: Option<String> = conn.get(&probe_key).await?;
            let _: u64 = conn.del(&probe_key).await?;
            if read.as_deref() != Some(token.as_str()) {
                return Err(Error::Internal(anyhow::anyhow!("redis returned a different value")));
            }
            Ok(conn.exists(Self::marker_key(id)).await?)
        })
        .await
    }
}
