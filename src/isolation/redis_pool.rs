//! The Redis connection pool: deadpool over multiplexed connections, with explicit timeouts
//! (deadpool has none by default, and a checkout could then wait forever) and TCP_NODELAY
//! (redis-rs leaves it off, so every small command would wait on Nagle's algorithm and delayed
//! ACKs, ~40 ms).
//!
//! A checkout pings only a connection unused for [`TRUSTED_FOR`]: a busy server would otherwise
//! spend a round trip per command on pings. A connection broken while in use is not trusted
//! either way: [`super::RedisNamespace`] discards every connection whose command failed in a way
//! that may have broken it, instead of returning it to the pool.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::{RedisError, aio::MultiplexedConnection};

/// How long after its last checkout a connection is handed out again without a ping.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

pub type RedisPool = managed::Pool<RedisConnector>;
pub type PooledRedis = managed::Object<RedisConnector>;

/// Opens multiplexed connections and checks idle ones before reuse.
pub struct RedisConnector {
    client: redis::Client,
    ping_number: AtomicU64,
}

impl managed::Manager for RedisConnector {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.client.get_multiplexed_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        let token = self.ping_number.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING").arg(&token).query_async(conn).await?;
        if echoed == token { Ok(()) } else { Err(RecycleError::message("unexpected PING answer")) }
    }
}

pub fn build_pool(config: &crate::config::RedisConfig) -> anyhow::Result<RedisPool> {
    use redis::IntoConnectionInfo;
    let info = config
        .url
        .expose()
        .into_connection_info()
        .map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?
        .set_tcp_settings(tcp_settings());
    let client = super::redis_tls::client(info, super::redis_tls::certificates(config)?)?;
    let connector = RedisConnector { client, ping_number: AtomicU64::new(0) };
    managed::Pool::builder(connector)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|error| anyhow::anyhow!("building the Redis pool: {error}"))
}

/// TCP_NODELAY on (see the module docs), for single-server and cluster connections alike.
pub fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Whether a failed command may have left its connection unusable.
pub fn may_have_broken(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
}
