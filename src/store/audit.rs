//! The audit trail: one row per lifecycle event, written in the same transaction as the change.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;

/// Event types recorded in `audit_events.event_type`.
pub mod event {
    pub const SANDBOX_CREATED: &str = "sandbox_created";
    pub const STATUS_CHANGED: &str = "status_changed";
    pub const SANDBOX_DESTROYING: &str = "sandbox_destroying";
    pub const SANDBOX_DESTROYED: &str = "sandbox_destroyed";
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
    sqlx::query(
        "INSERT INTO audit_events (tenant, sandbox_id, actor, event_type, details)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(sandbox_id)
    .bind(actor)
    .bind(event_type)
    .bind(details)
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
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Events of one sandbox, oldest first (used by tests and, later, ListAuditEvents).
pub async fn for_sandbox(pool: &PgPool, tenant: &str, sandbox_id: Uuid) -> Result<Vec<AuditEvent>> {
    let events = sqlx::query_as::<_, AuditEvent>(
        "SELECT id, tenant, sandbox_id, actor, event_type, details, created_at
         FROM audit_events WHERE tenant = $1 AND sandbox_id = $2 ORDER BY id",
    )
    .bind(tenant)
    .bind(sandbox_id)
    .fetch_all(pool)
    .await?;
    Ok(events)
}
