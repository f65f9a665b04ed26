//! A sandbox's Redis ACL user (template option `redis_acl`): `sandbox_<32 hex>`, allowed the
//! keys `~sandbox:{<uuid>}:*` and the pub/sub channels `&sandbox:{<uuid>}:*` and data commands
//! only.
//!
//! The rules start from nothing (`reset`: no commands, keys, channels or passwords) and add the
//! read, write, pub/sub, transaction and connection categories, then take away every command
//! Redis calls dangerous or administrative (`KEYS`, `FLUSHALL`, `FLUSHDB`, `CONFIG`, `ACL`
//! changes, `DEBUG`, `MODULE`, `INFO`, `CLIENT LIST|KILL`, ...) and the few data commands that
//! would reveal other sandboxes' names or move keys out of reach of the key patterns: `SCAN`,
//! `RANDOMKEY`, `DBSIZE`, `PUBSUB` (lists every channel), `SELECT`, `SWAPDB`, `MOVE`. Scripting
//! (`EVAL`, `SCRIPT`, `FUNCTION`) is not in those categories, so it stays denied. The read-only
//! `CLUSTER` subcommands a cluster client needs for its slot map are allowed.
//!
//! On Redis Cluster ACL users are per node (nothing propagates `ACL SETUSER`), so every command
//! here goes to every node of the cluster, primaries and replicas, so a failover keeps the user.
//! A node added to the cluster later does not have the users made before it joined (README,
//! "Isolation between sandboxes").

use redis::{
    Cmd, Value,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
};

use super::{
    RedisNamespace,
    credentials::{AclPassword, acl_user_name, id_of_name},
};
use crate::{error::Result, sandbox::SandboxId};

/// Command rules after the key and channel patterns (see the module docs).
const COMMAND_RULES: &[&str] = &[
    "+@read",
    "+@write",
    "+@pubsub",
    "+@transaction",
    "+@connection",
    "-@dangerous",
    "-@admin",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-pubsub",
    "-select",
    "-swapdb",
    "-move",
    // A cluster client learns the topology from these (no key names in them).
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|nodes",
    "+cluster|info",
    "+cluster|keyslot",
    "+cluster|myid",
];

impl RedisNamespace {
    /// Creates (or replaces, with a new password) the sandbox's ACL user. Replacing does not
    /// end connections already authenticated with the old password: [`Self::delete_acl_user`]
    /// does.
    #[tracing::instrument(name = "redis.acl.set_user", skip_all, fields(sandbox_id = %id))]
    pub async fn set_acl_user(&self, id: SandboxId, password: &AclPassword) -> Result<()> {
        let prefix = id.redis_prefix();
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(acl_user_name(id))
            .arg("reset")
            .arg("on")
            .arg(format!("#{}", password.sha256_hex.expose()))
            .arg(format!("~{prefix}*"))
            .arg("resetchannels")
            .arg(format!("&{prefix}*"))
            .arg(COMMAND_RULES);
        self.on_every_node(cmd).await.map(drop)
    }

    /// Removes the sandbox's ACL user, which also closes every connection authenticated as it.
    /// Removing a user that does not exist is not an error.
    #[tracing::instrument(name = "redis.acl.delete_user", skip_all, fields(sandbox_id = %id))]
    pub async fn delete_acl_user(&self, id: SandboxId) -> Result<()> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DELUSER").arg(acl_user_name(id));
        self.on_every_node(cmd).await.map(drop)
    }

    /// The sandboxes that have an ACL user (on any node), for the orphan sweep.
    pub async fn sandboxes_with_acl_users(&self) -> Result<Vec<SandboxId>> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("USERS");
        let routing = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllNodes,
            Some(ResponsePolicy::CombineArrays),
        ));
        let names: Vec<String> = self
            .on_connection(async |conn| {
                let value = conn.route(cmd, routing).await?;
                Ok(redis::from_redis_value(value)?)
            })
            .await?;
        let mut ids: Vec<SandboxId> = names.iter().filter_map(|name| id_of_name(name)).collect();
        ids.sort_by_key(|id| id.as_uuid());
        ids.dedup();
        Ok(ids)
    }

    async fn on_every_node(&self, cmd: Cmd) -> Result<Value> {
        let routing = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllNodes,
            Some(ResponsePolicy::AllSucceeded),
        ));
        self.on_connection(async |conn| conn.route(cmd, routing).await).await
    }
}
