//! Distributed lock tools. The owner token in a lease is a secret of its holder: it is returned
//! to the model that acquired the lock (it needs it to release) and never logged.

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    SandboxdMcp,
    convert::{duration, time},
    errors::{ToolError, cancellable},
};
use crate::proto::{AcquireLockRequest, ReleaseLockRequest};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireArgs {
    /// Name of the lock (1-256 characters), shared by everyone in your tenant.
    resource: String,
    /// How long the lease lasts, e.g. "30s" (default 30s).
    #[serde(default)]
    ttl: Option<String>,
    /// How long to wait while someone else holds it, e.g. "5s" (default 5s; "0" tries once).
    #[serde(default)]
    wait: Option<String>,
    /// Who holds it, for diagnostics.
    #[serde(default)]
    owner: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct LeaseView {
    resource: String,
    /// Proof of ownership: pass it to lock_release. Keep it to yourself.
    owner_token: String,
    /// Grows with every acquisition: pass it to what the lock protects so writes from an
    /// expired holder (smaller token) can be refused.
    fencing_token: u64,
    expire_time: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseArgs {
    /// Name of the lock.
    resource: String,
    /// The owner_token lock_acquire returned.
    owner_token: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReleaseResult {
    /// False when the lease had already expired or been released.
    released: bool,
}

#[tool_router(router = lock_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "Acquire a distributed lock (a lease with an owner token and a fencing \
        token), waiting a while if someone else holds it. Fails with ABORTED/LOCK_NOT_ACQUIRED \
        when it stays held; retry later.")]
    async fn lock_acquire(
        &self,
        Parameters(args): Parameters<AcquireArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<LeaseView>, ToolError> {
        let request = AcquireLockRequest {
            resource: args.resource,
            ttl: duration("ttl", args.ttl.as_deref())?,
            wait: duration("wait", args.wait.as_deref())?,
            owner: args.owner.unwrap_or_default(),
        };
        let lease = cancellable(&cancel, self.sync().acquire_lock(request)).await?.into_inner();
        Ok(Json(LeaseView {
            expire_time: time(&lease.expire_time),
            resource: lease.resource,
            owner_token: lease.owner_token,
            fencing_token: lease.fencing_token,
        }))
    }

    #[tool(description = "Release a lock acquired with lock_acquire. Idempotent: released is \
        false when the lease had already expired or been released.")]
    async fn lock_release(
        &self,
        Parameters(args): Parameters<ReleaseArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ReleaseResult>, ToolError> {
        let request = ReleaseLockRequest { resource: args.resource, owner_token: args.owner_token };
        let released = cancellable(&cancel, self.sync().release_lock(request)).await?.into_inner();
        Ok(Json(ReleaseResult { released: released.released }))
    }
}
