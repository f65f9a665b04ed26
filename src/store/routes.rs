//! Guild routes and their change log. Every change takes one global advisory lock while it
//! writes the log, so change ids become visible in id order and a reader that resumes after id N
//! misses nothing; each change also `NOTIFY`s every replica.
//!
//! Lock order, the same for every writer so none can deadlock another: (1) an owner's quota
//! advisory lock (creates and claims), (2) the sandbox row (`FOR UPDATE`), (3) guild route rows,
//! (4) the tenant's event-ordering lock (`store::audit`), (5) the route change-log lock.
//! Transitions that remove routes take 2, 3, 4, 5; registrations 2, 4, 5; unregistrations 2, 3,
//! 4, 5.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use super::{Store, audit, pg_codes};
use crate::{
    error::{Error, Result},
    routing::GuildId,
};

/// The PostgreSQL channel announcing route changes; the payload is the change id.
pub const ROUTES_CHANNEL: &str = "sandboxd_routes";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct RouteRecord {
    pub guild_id: String,
    pub sandbox_id: Uuid,
    pub tenant: String,
    pub registered_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub id: i64,
    pub kind: ChangeKind,
    pub route: RouteRecord,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    id: i64,
    kind: String,
    guild_id: String,
    sandbox_id: Uuid,
    tenant: String,
    registered_by: String,
    route_created_at: DateTime<Utc>,
}

impl From<ChangeRow> for RouteChange {
    fn from(row: ChangeRow) -> Self {
        RouteChange {
            id: row.id,
            kind: if row.kind == "ADDED" { ChangeKind::Added } else { ChangeKind::Removed },
            route: RouteRecord {
                guild_id: row.guild_id,
                sandbox_id: row.sandbox_id,
                tenant: row.tenant,
                registered_by: row.registered_by,
                created_at: row.route_created_at,
            },
        }
    }
}

/// Outcome of a registration.
#[derive(Debug)]
pub enum Registered {
    Added(RouteRecord),
    /// The same guild → sandbox route existed already.
    Unchanged(RouteRecord),
}

async fn log_change(conn: &mut PgConnection, kind: ChangeKind, route: &RouteRecord) -> Result<()> {
    let kind = match kind {
        ChangeKind::Added => "ADDED",
        ChangeKind::Removed => "REMOVED",
    };
    let (id,): (i64,) = sqlx::query_as(
        "WITH ordered AS (SELECT pg_advisory_xact_lock(hashtextextended('sandboxd.route_changes', 0)))
         INSERT INTO guild_route_changes (kind, guild_id, sandbox_id, tenant, registered_by, route_created_at)
         SELECT $1, $2, $3, $4, $5, $6 FROM ordered RETURNING id",
    )
    .bind(kind)
    .bind(&route.guild_id)
    .bind(route.sandbox_id)
    .bind(&route.tenant)
    .bind(&route.registered_by)
    .bind(route.created_at)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ROUTES_CHANNEL)
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Logs routes a sandbox lost by leaving RUNNING (deleted by the transition's own statement):
/// one change per route for the replicas' routing tables, and a `guild_unregistered` event each.
/// Runs inside the transition's transaction.
pub(super) async fn record_removed_routes(
    conn: &mut PgConnection,
    sandbox_id: Uuid,
    removed: &[RouteRecord],
) -> Result<()> {
    for route in removed {
        let details = json!({ "guild_id": route.guild_id, "reason": "sandbox left RUNNING" });
        audit::record(
            conn,
            &route.tenant,
            Some(sandbox_id),
            "system",
            audit::event::GUILD_UNREGISTERED,
            details,
        )
        .await?;
        log_change(conn, ChangeKind::Removed, route).await?;
    }
    Ok(())
}

impl Store {
    /// Maps `guild` to a RUNNING sandbox of `tenant`, holding at most `limit` guilds per
    /// sandbox. The sandbox row is locked, so a concurrent destroy waits for this to commit
    /// (and then removes the route with the state change).
    /// Retried when PostgreSQL aborts it for contention (see [`super::retry_on_contention`]).
    pub async fn register_route(
        &self,
        guild: GuildId,
        sandbox_id: Uuid,
        tenant: &str,
        actor: &str,
        limit: u32,
    ) -> Result<Registered> {
        super::retry_on_contention(|| {
            self.register_route_once(guild, sandbox_id, tenant, actor, limit)
        })
        .await
    }

    /// One attempt of [`Store::register_route`], in one transaction.
    #[tracing::instrument(name = "store.routes.register", skip(self))]
    async fn register_route_once(
        &self,
        guild: GuildId,
        sandbox_id: Uuid,
        tenant: &str,
        actor: &str,
        limit: u32,
    ) -> Result<Registered> {
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM sandboxes WHERE id = $1 AND tenant = $2 FOR UPDATE",
        )
        .bind(sandbox_id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        match state.as_deref() {
            None => return Err(Error::not_found("sandbox", sandbox_id.to_string())),
            Some("RUNNING") => {}
            Some(other) => {
                return Err(Error::FailedPrecondition {
                    reason: "SANDBOX_NOT_RUNNING",
                    message: format!("only RUNNING sandboxes take routes; this one is {other}"),
                });
            }
        }
        let existing = sqlx::query_as::<_, RouteRecord>(
            "SELECT guild_id, sandbox_id, tenant, registered_by, created_at FROM guild_routes WHERE guild_id = $1",
        )
        .bind(guild.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return if existing.sandbox_id == sandbox_id {
                Ok(Registered::Unchanged(existing))
            } else {
                Err(guild_taken(guild))
            };
        }
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM guild_routes WHERE sandbox_id = $1")
                .bind(sandbox_id)
                .fetch_one(&mut *tx)
                .await?;
        if count >= i64::from(limit) {
            return Err(Error::QuotaExceeded {
                subject: format!("sandbox:{sandbox_id}"),
                message: format!(
                    "sandbox {sandbox_id} already routes {count} guilds (limit {limit})"
                ),
            });
        }
        let inserted = sqlx::query_as::<_, RouteRecord>(
            "INSERT INTO guild_routes (guild_id, sandbox_id, tenant, registered_by)
             VALUES ($1, $2, $3, $4)
             RETURNING guild_id, sandbox_id, tenant, registered_by, created_at",
        )
        .bind(guild.as_str())
        .bind(sandbox_id)
        .bind(tenant)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await;
        let route = match inserted {
            Ok(route) => route,
            // A concurrent registration of the same guild won.
            Err(error) if pg_codes::unique_violation(&error).is_some() => {
                return Err(guild_taken(guild));
            }
            Err(error) => return Err(error.into()),
        };
        // Lock order (see the module docs): the tenant's event lock, then the change-log lock.
        let details = json!({ "guild_id": route.guild_id });
        audit::record(
            &mut tx,
            tenant,
            Some(sandbox_id),
            actor,
            audit::event::GUILD_REGISTERED,
            details,
        )
        .await?;
        log_change(&mut tx, ChangeKind::Added, &route).await?;
        tx.commit().await?;
        Ok(Registered::Added(route))
    }

    /// Removes a route of `tenant` (for members, only of their own sandboxes); `None` when there
    /// was none to remove.
    /// Retried when PostgreSQL aborts it for contention (see [`super::retry_on_contention`]).
    pub async fn unregister_route(
        &self,
        guild: GuildId,
        tenant: &str,
        owner: Option<&str>,
        actor: &str,
    ) -> Result<Option<RouteRecord>> {
        super::retry_on_contention(|| self.unregister_route_once(guild, tenant, owner, actor)).await
    }

    /// One attempt of [`Store::unregister_route`], in one transaction.
    #[tracing::instrument(name = "store.routes.unregister", skip(self))]
    async fn unregister_route_once(
        &self,
        guild: GuildId,
        tenant: &str,
        owner: Option<&str>,
        actor: &str,
    ) -> Result<Option<RouteRecord>> {
        // Lock order: the sandbox row first (as a transition, which may remove the same route),
        // then the route row, the tenant's event lock and the change-log lock.
        let sandbox_id: Option<Uuid> = sqlx::query_scalar(
            "SELECT sandbox_id FROM guild_routes WHERE guild_id = $1 AND tenant = $2",
        )
        .bind(guild.as_str())
        .bind(tenant)
        .fetch_optional(self.pool())
        .await?;
        let Some(sandbox_id) = sandbox_id else { return Ok(None) };
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM sandboxes WHERE id = $1 FOR UPDATE")
            .bind(sandbox_id)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query_as::<_, RouteRecord>(
            "DELETE FROM guild_routes r WHERE r.guild_id = $1 AND r.tenant = $2 AND r.sandbox_id = $4
               AND ($3::text IS NULL OR r.sandbox_id IN (SELECT id FROM sandboxes WHERE owner = $3))
             RETURNING guild_id, sandbox_id, tenant, registered_by, created_at",
        )
        .bind(guild.as_str())
        .bind(tenant)
        .bind(owner)
        .bind(sandbox_id)
        .fetch_optional(&mut *tx)
        .await?;
        // Gone meanwhile (or moved to another sandbox, which a retry handles).
        let Some(route) = removed else { return Ok(None) };
        let details = json!({ "guild_id": route.guild_id });
        audit::record(
            &mut tx,
            tenant,
            Some(route.sandbox_id),
            actor,
            audit::event::GUILD_UNREGISTERED,
            details,
        )
        .await?;
        log_change(&mut tx, ChangeKind::Removed, &route).await?;
        tx.commit().await?;
        Ok(Some(route))
    }

    /// Every route and the change id they reflect, read from one snapshot.
    #[tracing::instrument(name = "store.routes.snapshot", skip(self))]
    pub async fn route_snapshot(&self, tenant: Option<&str>) -> Result<(Vec<RouteRecord>, i64)> {
        let mut routes = Vec::new();
        let position = self.each_route(tenant, |route| routes.push(route)).await?;
        Ok((routes, position))
    }

    /// Like [`Store::route_snapshot`], handing each route to `each` as it arrives instead of
    /// collecting them (so loading a million routes never holds them all as rows at once).
    pub async fn each_route(
        &self,
        tenant: Option<&str>,
        mut each: impl FnMut(RouteRecord),
    ) -> Result<i64> {
        use futures::TryStreamExt;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let position: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM guild_route_changes")
            .fetch_one(&mut *tx)
            .await?;
        {
            let mut rows = sqlx::query_as::<_, RouteRecord>(
                "SELECT guild_id, sandbox_id, tenant, registered_by, created_at FROM guild_routes
                 WHERE $1::text IS NULL OR tenant = $1 ORDER BY guild_id",
            )
            .bind(tenant)
            .fetch(&mut *tx);
            while let Some(route) = rows.try_next().await? {
                each(route);
            }
        }
        tx.commit().await?;
        Ok(position.unwrap_or(0))
    }

    /// Changes after `after_id`, oldest first.
    pub async fn route_changes_after(
        &self,
        after_id: i64,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RouteChange>> {
        let rows = sqlx::query_as::<_, ChangeRow>(
            "SELECT id, kind, guild_id, sandbox_id, tenant, registered_by, route_created_at
             FROM guild_route_changes WHERE id > $1 AND ($2::text IS NULL OR tenant = $2)
             ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(RouteChange::from).collect())
    }

    /// Routes ordered by guild id (as text), after `after_guild`, optionally of one sandbox.
    pub async fn list_routes(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        sandbox_id: Option<Uuid>,
        after_guild: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RouteRecord>> {
        let routes = sqlx::query_as::<_, RouteRecord>(
            "SELECT r.guild_id, r.sandbox_id, r.tenant, r.registered_by, r.created_at FROM guild_routes r
             WHERE ($1::text IS NULL OR r.tenant = $1)
               AND ($2::text IS NULL OR r.sandbox_id IN (SELECT id FROM sandboxes WHERE owner = $2))
               AND ($3::uuid IS NULL OR r.sandbox_id = $3)
               AND ($4::text IS NULL OR r.guild_id > $4)
             ORDER BY r.guild_id LIMIT $5",
        )
        .bind(tenant)
        .bind(owner)
        .bind(sandbox_id)
        .bind(after_guild)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(routes)
    }
}

fn guild_taken(guild: GuildId) -> Error {
    Error::AlreadyExists {
        reason: "GUILD_ALREADY_REGISTERED",
        message: format!("guild {guild} is already routed to another sandbox"),
    }
}
