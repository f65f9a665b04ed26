//! The audit trail: one row per lifecycle event, written in the same transaction as the change.
//! It doubles as the event log behind `WatchSandboxes`: writers of one tenant serialize on an
//! advisory lock while inserting, so event ids of a tenant become visible in id order and a
//! watcher that resumes after id N misses nothing; each insert also wakes watchers on every
//! replica with `NOTIFY sandboxd_events`. Writers take that lock in their last statement before
//! COMMIT, so it is held for one round trip and the commit.

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
    pub const ORPHAN_REMOVED: &str = "orphan_removed";
    /// A GitPush updated the remote branch (details: commit, fencing token, lock interval).
    pub const GIT_PUSHED: &str = "git_pushed";
    /// A GitPush that held the lock was refused (a stale lease, conflicts, rejections).
    pub const GIT_PUSH_REFUSED: &str = "git_push_refused";
    /// AcquireLock and ReleaseLock (no sandbox; details: resource, fencing token).
    pub const LOCK_ACQUIRED: &str = "lock_acquired";
    pub const LOCK_RELEASED: &str = "lock_released";

    /// An artifact was published, reviewed (details: decision, reviewer, comment) or removed
    /// (retention or tenant purge); details hold the artifact right after the event.
    pub const ARTIFACT_PUBLISHED: &str = "artifact_published";
    pub const ARTIFACT_REVIEWED: &str = "artifact_reviewed";
    pub const ARTIFACT_REMOVED: &str = "artifact_removed";

    /// Event types streamed by `WatchArtifacts`.
    pub const ARTIFACT: [&str; 3] = [ARTIFACT_PUBLISHED, ARTIFACT_REVIEWED, ARTIFACT_REMOVED];

    /// Event types streamed by `WatchSandboxes`.
    pub const LIFECYCLE: [&str; 5] =
        [SANDBOX_CREATED, STATUS_CHANGED, TTL_EXTENDED, SANDBOX_DESTROYING, SANDBOX_DESTROYED];
}

/// The advisory-lock key that orders one tenant's events; every writer uses it.
const ORDER_LOCK_KEY: &str = "'sandboxd.events:' || tenant";

/// Records one event on its own statement (for changes that are not a single statement).
#[tracing::instrument(name = "store.audit.record", skip(conn, details))]
pub async fn record(
    conn: &mut PgConnection,
    tenant: &str,
    sandbox_id: Option<Uuid>,
    actor: &str,
    event_type: &str,
    details: Value,
) -> Result<()> {
    let sql = format!(
        "WITH changed AS (SELECT $1::text AS tenant, $2::uuid AS id), {}
         SELECT count(*) FROM recorded_events",
        recording_ctes("changed", 3)
    );
    let query = sqlx::query_as::<_, (i64,)>(&sql).bind(tenant).bind(sandbox_id);
    Events::new().push(event_type, details).bind_to(query, actor).fetch_one(conn).await?;
    Ok(())
}

type PgQueryAs<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

/// Events to record together with a change, in order.
#[derive(Debug, Default)]
pub(super) struct Events<'a> {
    types: Vec<&'a str>,
    details: Vec<Value>,
}

impl<'a> Events<'a> {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn push(mut self, event_type: &'a str, details: Value) -> Self {
        self.types.push(event_type);
        self.details.push(details);
        self
    }

    /// Binds the actor, the event types and their details, in that order: the three
    /// parameters [`recording_ctes`] expects.
    pub(super) fn bind_to<'q, O>(self, query: PgQueryAs<'q, O>, actor: &'q str) -> PgQueryAs<'q, O>
    where
        'a: 'q,
    {
        query.bind(actor).bind(self.types).bind(self.details)
    }
}

/// CTEs that record events for the row of the CTE named `changed` (columns `tenant` and `id`),
/// to splice into the statement that makes the change: the tenant's ordering lock, one
/// `audit_events` row per event in order, and the NOTIFY. They write nothing and take no lock
/// when `changed` is empty. Parameters from `$first_param`: actor, event types (`text[]`),
/// details (`jsonb[]`), as [`Events::bind_to`] binds them.
///
/// The lock is taken before the first event id is drawn: every inserted row joins the row of
/// `ordered_events`, whose evaluation takes the lock. Identical NOTIFYs of one transaction are
/// delivered once.
pub(super) fn recording_ctes(changed: &str, first_param: usize) -> String {
    let (actor, types, details) = (first_param, first_param + 1, first_param + 2);
    format!(
        "ordered_events AS (
             SELECT pg_advisory_xact_lock(hashtextextended({ORDER_LOCK_KEY}, 0)), tenant, id
             FROM {changed}
         ),
         recorded_events AS (
             INSERT INTO audit_events (tenant, sandbox_id, actor, event_type, details)
             SELECT ordered_events.tenant, ordered_events.id, ${actor}, event.event_type, event.details
             FROM ordered_events,
                  unnest(${types}::text[], ${details}::jsonb[])
                      WITH ORDINALITY AS event (event_type, details, position)
             ORDER BY event.position
             RETURNING pg_notify('{EVENTS_CHANNEL}', tenant)
         )"
    )
}

/// An event that belongs to no sandbox.
#[derive(Debug, Clone)]
pub struct DetachedEvent {
    pub tenant: String,
    pub actor: String,
    pub event_type: &'static str,
    pub details: Value,
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
    /// Records one event of a sandbox on its own (e.g. a git push).
    pub async fn record_sandbox_event(
        &self,
        sandbox: &Sandbox,
        actor: &str,
        event_type: &str,
        details: Value,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record(&mut conn, &sandbox.tenant, Some(sandbox.id.as_uuid()), actor, event_type, details)
            .await
    }

    /// Records events that belong to no sandbox, of any tenants, in one statement (the lock
    /// audit's batches). Tenants' ordering locks are taken in tenant order, so two batches
    /// cannot deadlock; nobody watches these types, so no NOTIFY.
    pub async fn record_detached_events(&self, events: &[DetachedEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let column = |get: fn(&DetachedEvent) -> String| events.iter().map(get).collect::<Vec<_>>();
        let details: Vec<Value> = events.iter().map(|event| event.details.clone()).collect();
        sqlx::query(&format!(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                     WITH ORDINALITY AS e (tenant, actor, event_type, details, position)
             ),
             ordered AS (
                 SELECT count(*) AS locks FROM (
                     SELECT pg_advisory_xact_lock(hashtextextended({ORDER_LOCK_KEY}, 0))
                     FROM (SELECT DISTINCT tenant FROM input ORDER BY tenant) tenants
                 ) taken
             )
             INSERT INTO audit_events (tenant, sandbox_id, actor, event_type, details)
             SELECT input.tenant, NULL, input.actor, input.event_type, input.details
             FROM input, ordered
             ORDER BY input.position"
        ))
        .bind(column(|event| event.tenant.clone()))
        .bind(column(|event| event.actor.clone()))
        .bind(column(|event| event.event_type.to_string()))
        .bind(details)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

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
