//! The audit trail: one row per lifecycle event, written in the same transaction as the change.
//! It doubles as the event log behind `WatchSandboxes`: writers of one tenant serialize on an
//! advisory lock while inserting, so event ids of a tenant become visible in id order and a
//! watcher that resumes after id N misses nothing; each insert also wakes watchers on every
//! replica with `NOTIFY sandboxd_events`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Store,
    sandboxes::{COLUMNS, SandboxRow},
};
use crate::{error::Result, sandbox::Sandbox};

/// The PostgreSQL channel that announces new events; the payload is the tenant.
pub const EVENTS_CHANNEL: &str = "sandboxd_events";

/// Event types recorded in `audit_events.event_type`.
pub mod event {
    pub const SANDBOX_CREATED: &str = "sandbox_created";
    pub const STATUS_CHANGED: &str = "status_changed";
    pub const TTL_EXTENDED: &str = "ttl_extended";
    pub const SANDBOX_DESTROYING: &str = "sandbox_destroying";
    pub const SANDBOX_DESTROYED: &str = "sandbox_destroyed";
    pub const GUILD_REGISTERED: &str = "guild_registered";
    pub const GUILD_UNREGISTERED: &str = "guild_unregistered";

    /// Event types streamed by `WatchSandboxes`.
    pub const LIFECYCLE: [&str; 5] =
        [SANDBOX_CREATED, STATUS_CHANGED, TTL_EXTENDED, SANDBOX_DESTROYING, SANDBOX_DESTROYED];
}

#[tracing::instrument(name = "store.audit.record", skip(conn, details))]
pub async fn record(
    conn: &mut PgConnection,
    tenant: &str,
    sandbox_id: Option<Uuid>,
    actor: &str,
    event_type: &str,
    details: Value,
) -> Result<()> {
    // Lock, insert and notify in one round trip.
    sqlx::query(
        "WITH ordered AS (SELECT pg_advisory_xact_lock(hashtextextended('sandboxd.events:' || $1, 0))),
              inserted AS (INSERT INTO audit_events (tenant, sandbox_id, actor, event_type, details)
                           SELECT $1, $2, $3, $4, $5 FROM ordered RETURNING id)
         SELECT pg_notify($6, $1) FROM inserted",
    )
    .bind(tenant)
    .bind(sandbox_id)
    .bind(actor)
    .bind(event_type)
    .bind(details)
    .bind(EVENTS_CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}

/// One stored audit event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub tenant: String,
    pub sandbox_id: Option<Uuid>,
    pub actor: String,
    pub event_type: String,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// Which events a caller may read: its tenant's; members only those of their own sandboxes.
#[derive(Debug, Clone, Copy)]
pub struct EventScope<'a> {
    pub tenant: &'a str,
    pub owner: Option<&'a str>,
    pub sandbox_id: Option<Uuid>,
}

impl Store {
    /// Audit events, newest first, older than `before_id` when given.
    #[tracing::instrument(name = "store.audit.list", skip(self))]
    pub async fn list_audit_events(
        &self,
        scope: EventScope<'_>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let events = sqlx::query_as::<_, AuditEvent>(
            "SELECT e.id, e.tenant, e.sandbox_id, e.actor, e.event_type, e.details, e.created_at
             FROM audit_events e
             WHERE e.tenant = $1
               AND ($2::uuid IS NULL OR e.sandbox_id = $2)
               AND ($3::text IS NULL OR e.sandbox_id IN
                    (SELECT id FROM sandboxes WHERE tenant = $1 AND owner = $3))
               AND ($4::bigint IS NULL OR e.id < $4)
             ORDER BY e.id DESC
             LIMIT $5",
        )
        .bind(scope.tenant)
        .bind(scope.sandbox_id)
        .bind(scope.owner)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(events)
    }

    /// Lifecycle events after `after_id`, oldest first, each with its sandbox as it is now;
    /// `owner_filter` narrows to one owner's sandboxes.
    #[tracing::instrument(name = "store.audit.lifecycle_after", skip(self))]
    pub async fn lifecycle_events_after(
        &self,
        scope: EventScope<'_>,
        owner_filter: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<(AuditEvent, Sandbox)>> {
        let events = sqlx::query_as::<_, AuditEvent>(
            "SELECT e.id, e.tenant, e.sandbox_id, e.actor, e.event_type, e.details, e.created_at
             FROM audit_events e JOIN sandboxes s ON s.id = e.sandbox_id
             WHERE e.tenant = $1 AND e.id > $2 AND e.event_type = ANY($3)
               AND ($4::uuid IS NULL OR e.sandbox_id = $4)
               AND ($5::text IS NULL OR s.owner = $5)
               AND ($6::text IS NULL OR s.owner = $6)
             ORDER BY e.id
             LIMIT $7",
        )
        .bind(scope.tenant)
        .bind(after_id)
        .bind(&event::LIFECYCLE[..])
        .bind(scope.sandbox_id)
        .bind(scope.owner)
        .bind(owner_filter)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let ids: Vec<Uuid> = events.iter().filter_map(|event| event.sandbox_id).collect();
        let rows = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND id = ANY($2)"
        ))
        .bind(scope.tenant)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let mut sandboxes = std::collections::HashMap::new();
        for row in rows {
            let (sandbox, _) = row.into_domain()?;
            sandboxes.insert(sandbox.id.as_uuid(), sandbox);
        }
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let sandbox = sandboxes.get(&event.sandbox_id?)?.clone();
                Some((event, sandbox))
            })
            .collect())
    }

    /// The newest event id of a tenant (0 when it has none): where a watch "from now" starts.
    pub async fn latest_event_id(&self, tenant: &str) -> Result<i64> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT max(id) FROM audit_events WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(self.pool())
                .await?;
        Ok(id.unwrap_or(0))
    }
}
