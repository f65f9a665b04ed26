//! The `sandboxes` table: rows and lookups scoped by tenant (and owner for members). Creation is
//! in `sandbox_create`, state transitions in `sandbox_transitions`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::Store;
use crate::{
    error::Result,
    sandbox::{Sandbox, SandboxId, SandboxState},
};

pub(super) const COLUMNS: &str = "id, tenant, owner, name, template, state, labels, metadata, request_id, \
    request_fingerprint, last_error, destroy_reason, version, created_at, updated_at, expire_at, \
    max_expire_at, last_activity_at, destroyed_at, from_pool";

#[derive(sqlx::FromRow)]
pub(super) struct SandboxRow {
    id: Uuid,
    tenant: String,
    owner: String,
    name: Option<String>,
    template: String,
    state: String,
    labels: Json<BTreeMap<String, String>>,
    metadata: Json<serde_json::Map<String, serde_json::Value>>,
    request_id: Option<String>,
    request_fingerprint: Option<String>,
    last_error: Option<String>,
    destroy_reason: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expire_at: DateTime<Utc>,
    max_expire_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
    destroyed_at: Option<DateTime<Utc>>,
    from_pool: bool,
}

impl SandboxRow {
    pub(super) fn into_domain(self) -> Result<(Sandbox, Option<String>)> {
        let sandbox = Sandbox {
            id: SandboxId::from_uuid(self.id),
            tenant: self.tenant,
            owner: self.owner,
            name: self.name,
            template: self.template,
            state: self.state.parse()?,
            labels: self.labels.0,
            metadata: self.metadata.0,
            request_id: self.request_id,
            last_error: self.last_error,
            destroy_reason: self.destroy_reason,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expire_at: self.expire_at,
            max_expire_at: self.max_expire_at,
            last_activity_at: self.last_activity_at,
            destroyed_at: self.destroyed_at,
            from_pool: self.from_pool,
        };
        Ok((sandbox, self.request_fingerprint))
    }
}

/// Which sandboxes a caller may see: its tenant's, and for members only their own.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub owner: Option<&'a str>,
}

pub(super) fn live_states() -> Vec<&'static str> {
    SandboxState::LIVE.iter().map(SandboxState::as_str).collect()
}

impl Store {
    #[tracing::instrument(name = "store.sandboxes.get", skip(self))]
    pub async fn get_sandbox(&self, scope: Scope<'_>, id: SandboxId) -> Result<Option<Sandbox>> {
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes
             WHERE id = $1 AND tenant = $2 AND ($3::text IS NULL OR owner = $3)"
        ))
        .bind(id.as_uuid())
        .bind(scope.tenant)
        .bind(scope.owner)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| row.into_domain().map(|(sandbox, _)| sandbox)).transpose()
    }

    /// The live sandbox with this name, or else the most recently created one.
    #[tracing::instrument(name = "store.sandboxes.get_by_name", skip(self))]
    pub async fn get_sandbox_by_name(
        &self,
        scope: Scope<'_>,
        name: &str,
    ) -> Result<Option<Sandbox>> {
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes
             WHERE name = $1 AND tenant = $2 AND ($3::text IS NULL OR owner = $3)
             ORDER BY (state = ANY($4)) DESC, created_at DESC, id DESC LIMIT 1"
        ))
        .bind(name)
        .bind(scope.tenant)
        .bind(scope.owner)
        .bind(live_states())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| row.into_domain().map(|(sandbox, _)| sandbox)).transpose()
    }

    /// The sandbox a create with this request id made, with the fingerprint of that request.
    #[tracing::instrument(name = "store.sandboxes.get_by_request_id", skip(self))]
    pub async fn get_sandbox_by_request_id(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<(Sandbox, Option<String>)>> {
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND request_id = $2"
        ))
        .bind(tenant)
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(SandboxRow::into_domain).transpose()
    }
}
