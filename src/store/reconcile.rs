//! What the reconciler reads and writes besides ordinary transitions: replica registration and
//! liveness, candidates for expiry, idle and boot timeouts, work abandoned by a crashed or failed
//! worker, orphaned schemas, and log retention.
//!
//! Liveness: every replica registers a row in `replicas` and holds the session advisory lock
//! `(REPLICA_LOCK_CLASS, id)` on a connection of its own. PostgreSQL releases it the moment that
//! session ends (the process died, or its connection broke), so "the worker's lock is not held"
//! is an exact, immediate test that a sandbox's worker is gone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{Store, audit};
use crate::{
    error::Result,
    sandbox::{SandboxId, SandboxState},
};

/// First key of every replica's liveness lock (the second is its id).
pub const REPLICA_LOCK_CLASS: i32 = 0x5a9d;

/// SQL: true when the replica whose id is in `column` (e.g. `s.worker`) holds no liveness lock
/// (it is gone).
pub(super) fn worker_gone(column: &str) -> String {
    format!(
        "NOT EXISTS (
             SELECT 1 FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = {REPLICA_LOCK_CLASS}::oid AND l.objid = {column}::oid)"
    )
}

/// SQL: true when nobody but this replica (`$1`) is working on sandbox row `s`.
fn unattended() -> String {
    format!("(s.worker IS NULL OR s.worker = $1 OR {})", worker_gone("s.worker"))
}

/// A connection holding this replica's liveness lock. Dropping it releases the lock.
pub struct ReplicaLease {
    pub id: i32,
    conn: PgConnection,
}

impl ReplicaLease {
    /// Whether the lock is still held (its session answers).
    pub async fn is_held(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }
}

/// Per-template timeouts for a candidate query: template names and seconds, plus the default
/// for templates not listed.
#[derive(Debug, Clone, Default)]
pub struct TimeoutsByTemplate {
    pub templates: Vec<String>,
    pub seconds: Vec<f64>,
    pub default_seconds: f64,
}

/// A sandbox that has been idle for longer than its template allows.
#[derive(Debug, Clone)]
pub struct IdleCandidate {
    pub id: SandboxId,
    pub last_activity_at: DateTime<Utc>,
    /// When the reconciler first saw it idle; `None` the first time.
    pub noticed_at: Option<DateTime<Utc>>,
}

/// A sandbox schema with no live sandbox behind it.
#[derive(Debug, Clone)]
pub struct OrphanSchema {
    pub id: SandboxId,
    /// The tenant of its (destroyed) sandbox; `None` when no sandbox has this id.
    pub tenant: Option<String>,
}

impl Store {
    /// Registers a replica and takes its liveness lock on a connection of its own.
    #[tracing::instrument(name = "store.replicas.register", skip(self))]
    pub async fn register_replica(&self, hostname: &str) -> Result<ReplicaLease> {
        let mut conn = self.pool().acquire().await?.detach();
        let id: i32 =
            sqlx::query_scalar("INSERT INTO replicas (hostname) VALUES ($1) RETURNING id")
                .bind(hostname)
                .fetch_one(&mut conn)
                .await?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(REPLICA_LOCK_CLASS)
            .bind(id)
            .execute(&mut conn)
            .await?;
        Ok(ReplicaLease { id, conn })
    }

    /// RUNNING sandboxes whose TTL has run out, soonest first.
    pub async fn expired_sandboxes(&self, limit: u32) -> Result<Vec<SandboxId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sandboxes WHERE state = 'RUNNING' AND expire_at <= now()
             ORDER BY expire_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// RUNNING sandboxes with no recorded activity for longer than their template's idle
    /// timeout, longest idle first.
    pub async fn idle_sandboxes(
        &self,
        timeouts: &TimeoutsByTemplate,
        limit: u32,
    ) -> Result<Vec<IdleCandidate>> {
        let rows: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT s.id, s.last_activity_at, s.idle_noticed_at
             FROM sandboxes s
             LEFT JOIN unnest($1::text[], $2::float8[]) AS t(template, seconds)
                 ON t.template = s.template
             WHERE s.state = 'RUNNING'
               -- the shortest timeout bounds the index range, so only sandboxes idle that
               -- long are read, not every RUNNING one
               AND s.last_activity_at < now() - make_interval(secs => $5)
               AND s.last_activity_at
                   < now() - make_interval(secs => coalesce(t.seconds, $3))
             ORDER BY s.last_activity_at LIMIT $4",
        )
        .bind(&timeouts.templates)
        .bind(&timeouts.seconds)
        .bind(timeouts.default_seconds)
        .bind(i64::from(limit))
        .bind(timeouts.seconds.iter().copied().fold(timeouts.default_seconds, f64::min))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, last_activity_at, noticed_at)| IdleCandidate {
                id: SandboxId::from_uuid(id),
                last_activity_at,
                noticed_at,
            })
            .collect())
    }

    /// Marks sandboxes as seen idle now (unless already marked); recorded activity clears it.
    pub async fn notice_idle(&self, ids: &[SandboxId]) -> Result<()> {
        let sql = "UPDATE sandboxes SET idle_noticed_at = now()
                   WHERE id = ANY($1) AND state = 'RUNNING' AND idle_noticed_at IS NULL";
        Ok(self.execute_for_ids(sql, ids).await?)
    }

    /// PENDING or CREATING sandboxes past their template's boot timeout, or whose worker died.
    pub async fn overdue_provisioning(
        &self,
        me: i32,
        timeouts: &TimeoutsByTemplate,
        limit: u32,
    ) -> Result<Vec<SandboxId>> {
        let gone = worker_gone("s.worker");
        let sql = format!(
            "SELECT s.id FROM sandboxes s
             LEFT JOIN unnest($2::text[], $3::float8[]) AS t(template, seconds)
                 ON t.template = s.template
             WHERE s.state IN ('PENDING', 'CREATING')
               AND (s.updated_at < now() - make_interval(secs => coalesce(t.seconds, $4))
                    OR (s.worker IS NOT NULL AND s.worker <> $1 AND {gone}))
             ORDER BY s.updated_at LIMIT $5"
        );
        let ids: Vec<Uuid> = sqlx::query_scalar(&sql)
            .bind(me)
            .bind(&timeouts.templates)
            .bind(&timeouts.seconds)
            .bind(timeouts.default_seconds)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// Sandboxes in a state that needs finishing (EXPIRED, DESTROYING, FAILED, or a READY
    /// member whose release did not finish) that nobody is working on: no worker, a dead one,
    /// or this replica (the caller skips what it is doing right now).
    pub async fn unattended_work(&self, me: i32, limit: u32) -> Result<Vec<SandboxId>> {
        let sql = format!(
            "SELECT s.id FROM sandboxes s
             WHERE (s.state IN ('EXPIRED', 'DESTROYING', 'FAILED')
                    OR (s.state = 'READY' AND s.tenant <> ''))
               AND {}
             ORDER BY s.updated_at LIMIT $2",
            unattended()
        );
        let ids: Vec<Uuid> =
            sqlx::query_scalar(&sql).bind(me).bind(i64::from(limit)).fetch_all(self.pool()).await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// Takes on unattended work (see [`Store::unattended_work`]) as `me`: `true` when this
    /// replica is now its worker, `false` when another live replica got there first.
    pub async fn claim_unattended(&self, id: SandboxId, me: i32) -> Result<bool> {
        let sql = format!(
            "UPDATE sandboxes s SET worker = $1
             WHERE s.id = $2
               AND (s.state IN ('EXPIRED', 'DESTROYING', 'FAILED')
                    OR (s.state = 'READY' AND s.tenant <> ''))
               AND {}",
            unattended()
        );
        let result = sqlx::query(&sql).bind(me).bind(id.as_uuid()).execute(self.pool()).await?;
        Ok(result.rows_affected() == 1)
    }

    /// Sandbox schemas (`sandbox_<32 hex>`) whose sandbox is unknown or DESTROYED.
    pub async fn orphan_schemas(&self) -> Result<Vec<OrphanSchema>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT n.nspname::text, s.tenant FROM pg_namespace n
             LEFT JOIN sandboxes s ON s.id = substr(n.nspname, 9)::uuid
             WHERE n.nspname ~ '^sandbox_[0-9a-f]{32}$'
               AND (s.id IS NULL OR s.state = 'DESTROYED')",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(schema, tenant)| {
                let id = Uuid::try_parse(schema.strip_prefix("sandbox_")?).ok()?;
                Some(OrphanSchema { id: SandboxId::from_uuid(id), tenant })
            })
            .collect())
    }

    /// Drops an orphaned schema and audits it, unless a live sandbox owns it by now.
    #[tracing::instrument(name = "store.reconcile.drop_orphan_schema", skip(self))]
    pub async fn drop_orphan_schema(&self, orphan: &OrphanSchema) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let live: Option<String> = sqlx::query_scalar(
            "SELECT state FROM sandboxes WHERE id = $1 AND state <> 'DESTROYED' FOR UPDATE",
        )
        .bind(orphan.id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_some() {
            return Ok(false);
        }
        super::sandbox_schema::drop_in(&mut tx, orphan.id).await?;
        let details = json!({ "resource": "schema", "name": orphan.id.schema_name() });
        record_orphan_removal(&mut tx, orphan.tenant.as_deref(), orphan.id, details).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// State and tenant of each known id (ids unknown to this database are absent).
    pub async fn sandbox_states(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, (SandboxState, String)>> {
        let rows: Vec<(Uuid, String, String)> =
            sqlx::query_as("SELECT id, state, tenant FROM sandboxes WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(self.pool())
                .await?;
        let mut states = HashMap::with_capacity(rows.len());
        for (id, state, tenant) in rows {
            states.insert(id, (state.parse()?, tenant));
        }
        Ok(states)
    }

    /// Audits the removal of a sandbox's orphaned Redis keys.
    pub async fn record_orphan_keys_removed(
        &self,
        tenant: Option<&str>,
        id: SandboxId,
        keys: u64,
    ) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        let details = json!({ "resource": "redis", "prefix": id.redis_prefix(), "keys": keys });
        record_orphan_removal(&mut conn, tenant, id, details).await
    }

    /// Deletes up to `batch` entries of a log older than `before` and moves its horizon past
    /// them; returns how many were deleted.
    #[tracing::instrument(name = "store.reconcile.prune_log", skip(self))]
    pub async fn prune_log(
        &self,
        log: PrunedLog,
        before: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64> {
        let table = log.table();
        let sql = format!(
            "WITH pruned AS (
                 DELETE FROM {table} WHERE id IN (
                     SELECT id FROM {table} WHERE created_at < $1 ORDER BY id LIMIT $2)
                 RETURNING id
             ),
             horizon AS (
                 UPDATE log_horizons SET pruned_through = greatest(pruned_through,
                     (SELECT max(id) FROM pruned))
                 WHERE log = '{table}' AND EXISTS (SELECT 1 FROM pruned)
             )
             SELECT count(*) FROM pruned"
        );
        let (deleted,): (i64,) =
            sqlx::query_as(&sql).bind(before).bind(i64::from(batch)).fetch_one(self.pool()).await?;
        Ok(deleted as u64)
    }

    /// The highest id pruned from a log (0 when nothing was): resuming from a position below it
    /// would miss entries.
    pub async fn log_horizon(&self, log: PrunedLog) -> Result<i64> {
        let horizon = sqlx::query_scalar("SELECT pruned_through FROM log_horizons WHERE log = $1")
            .bind(log.table())
            .fetch_optional(self.pool())
            .await?;
        Ok(horizon.unwrap_or(0))
    }
}

impl Store {
    /// Fails with OUT_OF_RANGE when entries after position `after` of `log` were pruned.
    pub async fn check_resumable(&self, log: PrunedLog, after: i64) -> Result<()> {
        let horizon = self.log_horizon(log).await?;
        if after < horizon {
            return Err(crate::error::Error::OutOfRange {
                reason: "RESUME_TOKEN_EXPIRED",
                message: format!(
                    "the events after this resume token are no longer retained (pruned through {horizon}); watch again without a token and re-read the current state"
                ),
            });
        }
        Ok(())
    }

    /// Checks a client's resume token before a watch starts: OUT_OF_RANGE as
    /// [`Store::check_resumable`], and INVALID_ARGUMENT for a position the log never reached
    /// (compared with the id sequence, which never goes back, even when pruning empties the
    /// log), which only a forged token or one from another deployment can hold: accepting it
    /// would stream nothing, silently, until the log caught up.
    pub async fn check_resume_token(&self, log: PrunedLog, after: i64) -> Result<()> {
        let issued: i64 = sqlx::query_scalar(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')), 0)",
        )
        .bind(log.table())
        .fetch_one(self.pool())
        .await?;
        if after > issued {
            return Err(crate::error::Error::invalid(
                "resume_token",
                "is ahead of this stream's log: it was not issued by this deployment",
            ));
        }
        self.check_resumable(log, after).await
    }
}

/// The logs behind resume tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunedLog {
    AuditEvents,
    RouteChanges,
}

impl PrunedLog {
    fn table(self) -> &'static str {
        match self {
            PrunedLog::AuditEvents => "audit_events",
            PrunedLog::RouteChanges => "guild_route_changes",
        }
    }
}

pub(super) async fn record_orphan_removal(
    conn: &mut PgConnection,
    tenant: Option<&str>,
    id: SandboxId,
    details: serde_json::Value,
) -> Result<()> {
    let event = audit::event::ORPHAN_REMOVED;
    audit::record(conn, tenant.unwrap_or(""), Some(id.as_uuid()), "system", event, details).await
}
