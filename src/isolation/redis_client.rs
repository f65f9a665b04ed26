//! The Redis client: a pool of connections to one server (`redis.mode = "standalone"`), or one
//! cluster connection that sends each command to the node owning its key's hash slot
//! (`"cluster"`; redis-rs follows MOVED/ASK and refreshes the slot map itself). Both hand out a
//! [`RedisConn`], so every command sandboxd sends is written once for both.

use std::sync::Arc;

use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value,
    aio::ConnectionLike,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::RoutingInfo,
};
use tokio::sync::Mutex;

use super::redis_pool::{self, PooledRedis, RedisPool};
use crate::{
    config::{RedisConfig, RedisMode},
    error::{Error, Result},
};

#[derive(Clone)]
pub enum RedisClient {
    Standalone(RedisPool),
    Cluster(Arc<ClusterHandle>),
}

/// A cluster connection (itself multiplexed over one connection per node, so it is shared, not
/// pooled), made on first use so sandboxd starts, and reports NOT_SERVING, while the cluster is
/// down.
pub struct ClusterHandle {
    client: ClusterClient,
    timeout: std::time::Duration,
    connection: Mutex<Option<ClusterConnection>>,
}

/// A connection handed out by [`RedisClient::get`].
pub enum RedisConn {
    Single(PooledRedis),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisConn {
    /// Sends `cmd` to the node `routing` names; on a single server, to that server.
    pub async fn route(&mut self, cmd: Cmd, routing: RoutingInfo) -> redis::RedisResult<Value> {
        match self {
            RedisConn::Single(conn) => cmd.query_async(&mut **conn).await,
            RedisConn::Cluster(conn) => conn.route_command(cmd, routing).await,
        }
    }
}

impl RedisClient {
    pub fn build(config: &RedisConfig) -> anyhow::Result<Self> {
        match config.mode {
            RedisMode::Standalone => Ok(Self::Standalone(redis_pool::build_pool(config)?)),
            RedisMode::Cluster => {
                let seed = config
                    .url
                    .expose()
                    .into_connection_info()
                    .map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?;
                let mut builder = ClusterClientBuilder::new(vec![seed])
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .tcp_settings(redis_pool::tcp_settings());
                if let Some(certificates) = super::redis_tls::certificates(config)? {
                    crate::tls::install_crypto_provider();
                    builder = builder.certs(certificates);
                }
                let client = builder
                    .build()
                    .map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?;
                let handle =
                    ClusterHandle { client, timeout: config.timeout, connection: Mutex::new(None) };
                Ok(Self::Cluster(Arc::new(handle)))
            }
        }
    }

    pub fn mode(&self) -> RedisMode {
        match self {
            Self::Standalone(_) => RedisMode::Standalone,
            Self::Cluster(_) => RedisMode::Cluster,
        }
    }

    pub async fn get(&self) -> Result<RedisConn> {
        match self {
            Self::Standalone(pool) => Ok(RedisConn::Single(pool.get().await?)),
            Self::Cluster(handle) => handle.connection().await.map(RedisConn::Cluster),
        }
    }

    /// Forgets a connection whose command failed in a way that may have broken it. On a single
    /// server the idle pooled connections go too: they were connected to the same server and
    /// are likely broken as well, and the pool hands out recently used ones without a ping.
    pub async fn discard(&self, conn: RedisConn) {
        match (self, conn) {
            (Self::Standalone(pool), RedisConn::Single(conn)) => {
                drop(PooledRedis::take(conn));
                pool.retain(|_, _| false);
            }
            (Self::Cluster(handle), _) => *handle.connection.lock().await = None,
            (Self::Standalone(_), RedisConn::Cluster(_)) => {}
        }
    }
}

impl ClusterHandle {
    async fn connection(&self) -> Result<ClusterConnection> {
        let mut connection = self.connection.lock().await;
        if let Some(existing) = connection.as_ref() {
            return Ok(existing.clone());
        }
        let connected = tokio::time::timeout(self.timeout, self.client.get_async_connection())
            .await
            .map_err(|_elapsed| {
                Error::unavailable(
                    "redis",
                    anyhow::anyhow!("the cluster did not answer within {:?}", self.timeout),
                )
            })?
            .map_err(|error| Error::unavailable("redis", error))?;
        *connection = Some(connected.clone());
        Ok(connected)
    }
}
