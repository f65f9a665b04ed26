//! A sandbox's Redis key namespace `sandbox:{<uuid>}:`.
//!
//! Key patterns are built only from the validated sandbox id (hex digits and `-`), so no glob
//! character from a request can reach `SCAN MATCH`.
//!
//! **Removing a sandbox's keys** costs what finding them costs, and that depends on the mode:
//! - On **Redis Cluster** every key of a sandbox carries its hash tag, so all of them live in one
//!   hash slot: [`RedisNamespace::purge`] reads that slot alone (`CLUSTER GETKEYSINSLOT` on its
//!   master, about keyspace / 16384 unrelated keys) and unlinks the sandbox's. A destroy does
//!   this before DESTROYED commits, so there DESTROYED means the keys are gone.
//! - On **one server** only SCAN finds them, and one SCAN pass walks every key. A destroy
//!   therefore does not remove them itself ([`RedisNamespace::purge_if_cheap`] answers `None`):
//!   DESTROYED commits with the keys pending, and one keyspace pass of the reconciler removes the
//!   keys of every sandbox destroyed before it started (see `reconcile::keyspace`). The state
//!   model says so: a DESTROYED sandbox's keys are gone once its `keys_purged_at` is set, within
//!   one pass (≥ `reconcile.purge_interval`) of DESTROYED. A release's reset must finish before
//!   the member is reused, so it still scans ([`RedisNamespace::purge`]).

use std::time::Duration;

use redis::{
    AsyncCommands, RedisResult,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use super::{
    redis_client::{RedisClient, RedisConn},
    redis_keyspace::{self, KeyspaceScan, ScanBatch},
    redis_pool::may_have_broken,
};
use crate::{
    config::RedisMode,
    error::{Error, Result},
    sandbox::SandboxId,
};

/// The key sandboxd writes at creation; it marks the namespace as provisioned.
const MARKER_SUFFIX: &str = "__sandboxd";
const SCAN_BATCH: usize = 500;
/// Keys read per `CLUSTER GETKEYSINSLOT` beyond the unrelated ones already seen in the slot.
const SLOT_BATCH: usize = 1000;

#[derive(Clone)]
pub struct RedisNamespace {
    client: RedisClient,
    timeout: Duration,
    /// Names this deployment in every namespace marker (sandboxd's own key prefix), so the
    /// orphan sweep touches only namespaces it made when several deployments share a Redis.
    deployment: String,
}

impl RedisNamespace {
    pub fn new(client: RedisClient, timeout: Duration, deployment: &str) -> Self {
        Self { client, timeout, deployment: deployment.to_string() }
    }

    pub fn mode(&self) -> RedisMode {
        self.client.mode()
    }

    /// sandboxd's own key prefix (`redis.key_prefix`), for keys that belong to no sandbox.
    pub fn deployment_prefix(&self) -> &str {
        &self.deployment
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

    /// Unlinks every key of the sandbox now; returns how many. On a cluster this reads only the
    /// sandbox's hash slot; on one server it scans the whole keyspace (module docs).
    #[tracing::instrument(name = "redis.namespace.purge", skip(self))]
    pub async fn purge(&self, id: SandboxId) -> Result<u64> {
        match self.mode() {
            RedisMode::Cluster => self.purge_slot(id).await,
            RedisMode::Standalone => self.purge_by_scan(id).await,
        }
    }

    /// The destroy path: removes the keys when that costs only this sandbox's keys (on a
    /// cluster), `None` on one server, where the keyspace pass removes them after DESTROYED.
    pub async fn purge_if_cheap(&self, id: SandboxId) -> Result<Option<u64>> {
        match self.mode() {
            RedisMode::Cluster => self.purge_slot(id).await.map(Some),
            RedisMode::Standalone => Ok(None),
        }
    }

    /// Unlinks the marker of a namespace nobody was given (a create refused after provisioning
    /// it): sandboxd wrote no other key there, and no client knew the prefix.
    pub async fn discard_marker(&self, id: SandboxId) -> Result<()> {
        let marker = Self::marker_key(id);
        self.on_connection(async |conn| conn.unlink::<_, u64>(&marker).await).await.map(|_| ())
    }

    /// The sandbox's keys from its hash slot, read on the slot's master in growing windows
    /// until one window holds the whole slot; unrelated keys of the slot are skipped.
    async fn purge_slot(&self, id: SandboxId) -> Result<u64> {
        let prefix = id.redis_prefix();
        let slot = redis_keyspace::hash_slot(&prefix);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        let (mut unrelated, mut removed) = (0usize, 0u64);
        loop {
            let window = unrelated + SLOT_BATCH;
            let mut get_keys = redis::cmd("CLUSTER");
            get_keys.arg("GETKEYSINSLOT").arg(slot).arg(window);
            let (seen, unlinked, others) = self
                .on_connection(async |conn| {
                    let value = conn.route(get_keys, routing.clone()).await?;
                    let keys: Vec<String> = redis::from_redis_value(value)?;
                    let (ours, others): (Vec<&String>, Vec<&String>) =
                        keys.iter().partition(|key| key.starts_with(&prefix));
                    let unlinked: u64 = if ours.is_empty() {
                        0
                    } else {
                        redis::cmd("UNLINK").arg(&ours).query_async(conn).await?
                    };
                    Ok((keys.len(), unlinked, others.len()))
                })
                .await?;
            removed += unlinked;
            if seen < window {
                return Ok(removed);
            }
            unrelated = others;
        }
    }

    /// SCAN MATCH for the prefix over the whole keyspace, unlinking each batch as it is found.
    async fn purge_by_scan(&self, id: SandboxId) -> Result<u64> {
        let mut scan = self.scan_matching(format!("{}*", id.redis_prefix())).await?;
        let mut removed = 0u64;
        while let Some(batch) = self.next_batch(&mut scan, SCAN_BATCH).await? {
            for keys in batch.keys.values() {
                removed += self.unlink(keys).await?;
            }
        }
        Ok(removed)
    }

    /// Round-trip probe for readiness.
    pub async fn ping(&self) -> Result<()> {
        self.on_connection(async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .map(|_| ())
    }

    /// Runs `work` on a connection, within the command timeout (per batch, for a purge or a
    /// scan). A connection whose work failed in a way that may have broken it, or did not
    /// answer in time, is discarded ([`RedisClient::discard`]).
    #[tracing::instrument(name = "redis.command", skip_all)]
    pub(crate) async fn on_connection<T>(
        &self,
        work: impl AsyncFnOnce(&mut RedisConn) -> RedisResult<T>,
    ) -> Result<T> {
        let mut conn = self.client.get().await?;
        let error = match tokio::time::timeout(self.timeout, work(&mut conn)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if !may_have_broken(&error) => return Err(error.into()),
            Ok(Err(error)) => error.into(),
            Err(_elapsed) => {
                Error::unavailable("redis", anyhow::anyhow!("no answer within {:?}", self.timeout))
            }
        };
        self.client.discard(conn).await;
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

impl RedisNamespace {
    /// Starts a pass over every sandbox key (`sandbox:{*`) of the deployment: the one server,
    /// or every master of the cluster in turn.
    pub async fn scan_sandbox_keys(&self) -> Result<KeyspaceScan> {
        self.scan_matching("sandbox:{*".into()).await
    }

    /// Starts a pass over the keys matching `pattern` on every node that holds keys.
    async fn scan_matching(&self, pattern: String) -> Result<KeyspaceScan> {
        let nodes = match self.mode() {
            RedisMode::Standalone => vec![None],
            RedisMode::Cluster => {
                let listing: String = self
                    .on_connection(async |conn| {
                        redis::cmd("CLUSTER").arg("NODES").query_async(conn).await
                    })
                    .await?;
                redis_keyspace::masters(&listing).into_iter().map(Some).collect()
            }
        };
        Ok(KeyspaceScan::new(nodes, pattern))
    }

    /// The next SCAN step of `scan`, or `None` when the pass is complete. SCAN returns every key
    /// that exists for the whole pass at least once; keys made or removed meanwhile may or may
    /// not appear.
    pub async fn next_batch(
        &self,
        scan: &mut KeyspaceScan,
        count: usize,
    ) -> Result<Option<ScanBatch>> {
        let Some((node, cursor)) = scan.position() else { return Ok(None) };
        let routing = RoutingInfo::SingleNode(match node {
            Some((host, port)) => SingleNodeRoutingInfo::ByAddress { host, port },
            None => SingleNodeRoutingInfo::Random,
        });
        let mut scan_cmd = redis::cmd("SCAN");
        scan_cmd.arg(cursor).arg("MATCH").arg(scan.pattern()).arg("COUNT").arg(count);
        let (next_cursor, found): (u64, Vec<String>) = self
            .on_connection(async |conn| {
                let value = conn.route(scan_cmd, routing).await?;
                Ok(redis::from_redis_value(value)?)
            })
            .await?;
        scan.advance(next_cursor);
        Ok(Some(ScanBatch::of(found)))
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

    /// Whether the namespace of `id` has a marker that names another deployment.
    pub async fn has_foreign_marker(&self, id: SandboxId) -> Result<bool> {
        let deployment: Option<String> = self
            .on_connection(async |conn| conn.hget(Self::marker_key(id), "deployment").await)
            .await?;
        Ok(deployment.is_some_and(|deployment| deployment != self.deployment))
    }

    /// Whether the namespace marker of `id` says this deployment made it.
    pub async fn is_ours(&self, id: SandboxId) -> Result<bool> {
        let deployment: Option<String> = self
            .on_connection(async |conn| conn.hget(Self::marker_key(id), "deployment").await)
            .await?;
        Ok(deployment.as_deref() == Some(self.deployment.as_str()))
    }
}
