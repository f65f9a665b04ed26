//! The `sandboxes` table: inserts under the owner quota, lookups scoped by tenant (and owner for
//! members), and compare-and-set state transitions written together with their audit event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::types::Json;
use uuid::Uuid;

use sqlx::PgConnection;

use super::{Store, audit, pg_codes, routes, sandbox_schema};
use crate::{
    error::{Error, Result},
    sandbox::{Sandbox, SandboxId, SandboxState, state},
};

pub(super) const COLUMNS: &str = "id, tenant, owner, name, template, state, labels, metadata, request_id, \
    request_fingerprint, last_error, destroy_reason, version, created_at, updated_at, expire_at, \
    max_expire_at, last_activity_at, destroyed_at";

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
        };
        Ok((sandbox, self.request_fingerprint))
    }
}

/// A sandbox to insert in state PENDING.
#[derive(Debug)]
pub struct NewSandboxRecord<'a> {
    pub id: SandboxId,
    pub tenant: &'a str,
    pub owner: &'a str,
    pub name: Option<&'a str>,
    pub template: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub metadata: &'a serde_json::Map<String, serde_json::Value>,
    pub request_id: Option<&'a str>,
    pub request_fingerprint: &'a str,
    pub created_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    pub max_expire_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum InsertOutcome {
    Inserted(Sandbox),
    /// A sandbox with the same request id exists already; the fingerprint tells whether the
    /// earlier request was the same.
    SameRequestId {
        existing: Sandbox,
        same_request: bool,
    },
}

/// Which sandboxes a caller may see: its tenant's, and for members only their own.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub owner: Option<&'a str>,
}

/// Optional changes written with a state transition.
#[derive(Debug, Default)]
pub struct TransitionChange<'a> {
    pub reason: &'a str,
    pub last_error: Option<&'a str>,
    pub destroy_reason: Option<&'a str>,
    /// Only transition if the sandbox still has this version (etag check).
    pub expected_version: Option<i64>,
}

pub(super) fn live_states() -> Vec<&'static str> {
    SandboxState::LIVE.iter().map(SandboxState::as_str).collect()
}

impl Store {
    /// Inserts a PENDING sandbox unless the owner already holds `live_quota` live sandboxes.
    /// The quota count and the insert run under a per-owner advisory lock, so concurrent creates
    /// cannot overshoot it.
    #[tracing::instrument(name = "store.sandboxes.insert", skip_all, fields(sandbox_id = %new.id))]
    pub async fn insert_sandbox(
        &self,
        new: &NewSandboxRecord<'_>,
        live_quota: u32,
        actor: &str,
    ) -> Result<InsertOutcome> {
        match self.insert_under_quota(new, live_quota, actor).await {
            // A concurrent duplicate of this request won the insert (it hit the request-id or
            // the name index first): answer with its sandbox.
            Err(error @ Error::AlreadyExists { .. }) if new.request_id.is_some() => {
                let mut conn = self.pool().acquire().await?;
                Ok(find_by_request_id(&mut conn, new).await?.ok_or(error)?)
            }
            other => other,
        }
    }

    async fn insert_under_quota(
        &self,
        new: &NewSandboxRecord<'_>,
        live_quota: u32,
        actor: &str,
    ) -> Result<InsertOutcome> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("sandboxd.owner_quota:{}:{}", new.tenant, new.owner))
            .execute(&mut *tx)
            .await?;
        if let Some(outcome) = find_by_request_id(&mut tx, new).await? {
            return Ok(outcome);
        }
        let (live,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM sandboxes WHERE tenant = $1 AND owner = $2 AND state = ANY($3)",
        )
        .bind(new.tenant)
        .bind(new.owner)
        .bind(live_states())
        .fetch_one(&mut *tx)
        .await?;
        if live >= i64::from(live_quota) {
            return Err(Error::QuotaExceeded {
                subject: format!("owner:{}", new.owner),
                message: format!(
                    "owner {:?} already has {live} live sandboxes (limit {live_quota})",
                    new.owner
                ),
            });
        }
        let inserted = sqlx::query_as::<_, SandboxRow>(&format!(
            "INSERT INTO sandboxes (id, tenant, owner, name, template, state, labels, metadata,
                 request_id, request_fingerprint, created_at, updated_at, expire_at, max_expire_at,
                 last_activity_at)
             VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9, $10, $10, $11, $12, $10)
             RETURNING {COLUMNS}"
        ))
        .bind(new.id.as_uuid())
        .bind(new.tenant)
        .bind(new.owner)
        .bind(new.name)
        .bind(new.template)
        .bind(Json(new.labels))
        .bind(Json(new.metadata))
        .bind(new.request_id)
        .bind(new.request_fingerprint)
        .bind(new.created_at)
        .bind(new.expire_at)
        .bind(new.max_expire_at)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(error) => return Err(map_insert_conflict(error, new)),
        };
        let (sandbox, _) = row.into_domain()?;
        audit::record(
            &mut tx,
            new.tenant,
            Some(new.id.as_uuid()),
            actor,
            audit::event::SANDBOX_CREATED,
            json!({ "template": new.template, "name": new.name, "expire_time": new.expire_at }),
        )
        .await?;
        // Provisioning starts at once: PENDING → CREATING commits with the insert.
        let change = TransitionChange { reason: "provisioning", ..TransitionChange::default() };
        let creating = transition_in(
            &mut tx,
            new.tenant,
            new.id,
            SandboxState::Pending,
            SandboxState::Creating,
            actor,
            change,
        )
        .await?
        .unwrap_or(sandbox);
        tx.commit().await?;
        Ok(InsertOutcome::Inserted(creating))
    }

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

    /// Moves a sandbox from `from` to `to` if it is still in `from` (compare-and-set), and
    /// records the audit event in the same transaction. `None` means another writer changed the
    /// sandbox first (or the etag no longer matches); the caller re-reads and decides.
    pub async fn transition_sandbox(
        &self,
        tenant: &str,
        id: SandboxId,
        from: SandboxState,
        to: SandboxState,
        actor: &str,
        change: TransitionChange<'_>,
    ) -> Result<Option<Sandbox>> {
        self.transition_sandbox_with(tenant, id, from, to, actor, change, SchemaWork::None).await
    }

    /// A transition that also creates or drops the sandbox schema in the same transaction:
    /// CREATING → RUNNING commits together with the template's tables, DESTROYING → DESTROYED
    /// together with the DROP. One commit instead of two, and never one without the other.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "store.sandboxes.transition", skip(self, change, schema_work), fields(%id, %from, %to))]
    pub async fn transition_sandbox_with(
        &self,
        tenant: &str,
        id: SandboxId,
        from: SandboxState,
        to: SandboxState,
        actor: &str,
        change: TransitionChange<'_>,
        schema_work: SchemaWork<'_>,
    ) -> Result<Option<Sandbox>> {
        let mut conn = self.pool().acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        match schema_work {
            SchemaWork::None => {}
            SchemaWork::Create { template_sql } => {
                sandbox_schema::create_in(&mut tx, id, template_sql).await?
            }
            SchemaWork::Drop => sandbox_schema::drop_in(&mut tx, id).await?,
        }
        let transitioned = transition_in(&mut tx, tenant, id, from, to, actor, change).await?;
        if transitioned.is_some() {
            tx.commit().await?;
        }
        Ok(transitioned)
    }
}

/// Schema DDL that commits together with a state transition.
#[derive(Debug, Clone, Copy)]
pub enum SchemaWork<'a> {
    None,
    Create { template_sql: &'a str },
    Drop,
}

/// Compare-and-set of the state plus the audit event (and route removal when leaving
/// RUNNING), inside the caller's transaction. `None` when the sandbox was not in `from`.
async fn transition_in(
    conn: &mut PgConnection,
    tenant: &str,
    id: SandboxId,
    from: SandboxState,
    to: SandboxState,
    actor: &str,
    change: TransitionChange<'_>,
) -> Result<Option<Sandbox>> {
    if !state::is_allowed(from, to) {
        return Err(Error::FailedPrecondition {
            reason: "INVALID_STATE_TRANSITION",
            message: format!("a {from} sandbox cannot become {to}"),
        });
    }
    let row = sqlx::query_as::<_, SandboxRow>(&format!(
        "UPDATE sandboxes SET state = $4, version = version + 1, updated_at = now(),
             last_error = coalesce($5, last_error),
             destroy_reason = coalesce($6, destroy_reason),
             destroyed_at = CASE WHEN $4 = 'DESTROYED' THEN now() ELSE destroyed_at END
         WHERE id = $1 AND tenant = $2 AND state = $3 AND ($7::bigint IS NULL OR version = $7)
         RETURNING {COLUMNS}"
    ))
    .bind(id.as_uuid())
    .bind(tenant)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(change.last_error)
    .bind(change.destroy_reason)
    .bind(change.expected_version)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if from == SandboxState::Running {
        // Only RUNNING sandboxes hold guild routes; they go with the state change.
        routes::remove_routes_of_sandbox(conn, id.as_uuid()).await?;
    }
    let event_type = match to {
        SandboxState::Destroying => audit::event::SANDBOX_DESTROYING,
        SandboxState::Destroyed => audit::event::SANDBOX_DESTROYED,
        _ => audit::event::STATUS_CHANGED,
    };
    let details = json!({
        "from": from.as_str(),
        "to": to.as_str(),
        "reason": change.reason,
        "last_error": change.last_error,
    });
    audit::record(conn, tenant, Some(id.as_uuid()), actor, event_type, details).await?;
    row.into_domain().map(|(sandbox, _)| Some(sandbox))
}

/// The sandbox an earlier create with the same request id made, if any.
async fn find_by_request_id(
    conn: &mut sqlx::PgConnection,
    new: &NewSandboxRecord<'_>,
) -> Result<Option<InsertOutcome>> {
    let Some(request_id) = new.request_id else { return Ok(None) };
    let row = sqlx::query_as::<_, SandboxRow>(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND request_id = $2"
    ))
    .bind(new.tenant)
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (existing, fingerprint) = row.into_domain()?;
    let same_request =
        existing.owner == new.owner && fingerprint.as_deref() == Some(new.request_fingerprint);
    Ok(Some(InsertOutcome::SameRequestId { existing, same_request }))
}

fn map_insert_conflict(error: sqlx::Error, new: &NewSandboxRecord<'_>) -> Error {
    match pg_codes::unique_violation(&error).as_deref() {
        Some("sandboxes_live_name_key") => Error::AlreadyExists {
            reason: "SANDBOX_NAME_TAKEN",
            message: format!(
                "a live sandbox named {:?} already exists in this tenant",
                new.name.unwrap_or_default()
            ),
        },
        Some("sandboxes_request_id_key") => Error::AlreadyExists {
            reason: "REQUEST_ID_TAKEN",
            message: "another create request of this tenant already used this request_id".into(),
        },
        _ => error.into(),
    }
}
