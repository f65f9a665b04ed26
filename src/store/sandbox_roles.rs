//! Per-sandbox PostgreSQL login roles (template option `postgres_role`) and the stored
//! credentials of sandboxes (`sandbox_credentials`).
//!
//! The role `sandbox_<32 hex>` (like the schema) may use only its own schema: USAGE and CREATE
//! on it, every privilege on the template's tables and sequences, and default privileges so
//! tables sandboxd creates there later are covered too (tables the role creates itself are its
//! own). It gets nothing anywhere else: other schemas carry no grant to PUBLIC, sandboxd's own
//! tables in `public` none either, and CREATE on `public` is not PUBLIC's (PostgreSQL 15, and
//! migration 0006 for older databases). Its `search_path` is its schema. Roles belong to the
//! whole server, so each carries a comment naming the database it was made for: that is how the
//! orphan sweep (and the test harness) tells this database's roles from other databases' on a
//! shared server. (Not `ALTER ROLE … IN DATABASE`: that locks the database object until the
//! provisioning transaction ends, which a `DROP DATABASE` would then wait for.)
//!
//! Passwords never appear in SQL text: a SCRAM verifier is handed to the server as a bound
//! parameter (`set_config('sandboxd.role_verifier', $1, true)`, transaction-local) and read
//! back by `current_setting` inside the statement that sets it, so neither sqlx's statement
//! log nor PostgreSQL's log ever holds it. Role and schema names come from [`SandboxId`] only
//! (`[a-z0-9_]`), so splicing them is safe.

use sqlx::{Executor, PgConnection};

use super::Store;
use crate::{
    error::Result,
    isolation::credentials::{IssuedCredentials, role_name},
    sandbox::SandboxId,
    secret::Secret,
};

/// The transaction-local setting that carries a verifier from a bound parameter into DDL.
const VERIFIER_SETTING: &str = "sandboxd.role_verifier";
/// The comment of every sandbox role, followed by the name of its database.
pub const ROLE_COMMENT_PREFIX: &str = "sandboxd sandbox role of database ";

/// The login role a new sandbox (or pool member) gets.
#[derive(Debug, Clone, Copy)]
pub struct RoleSpec {
    /// LOGIN with the stashed verifier as password; NOLOGIN without one (a warm-pool member,
    /// which gets its password when claimed).
    pub login: bool,
    pub connection_limit: u32,
}

/// The credentials a sandbox holds, as stored.
#[derive(Debug, Clone, Default)]
pub struct StoredCredentials {
    pub postgres_password: Option<Secret>,
    pub redis_password: Option<Secret>,
}

fn quoted(name: &str) -> String {
    debug_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    format!("\"{name}\"")
}

/// DDL creating the sandbox's role with its privileges on the (already made) schema; part of a
/// simple-query batch in the provisioning transaction.
pub(super) fn create_role_batch(id: SandboxId, role: RoleSpec) -> String {
    let (name, schema) = (quoted(&role_name(id)), quoted(&id.schema_name()));
    let login = if role.login { "LOGIN" } else { "NOLOGIN" };
    let mut batch = format!(
        "CREATE ROLE {name} {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION \
             NOBYPASSRLS CONNECTION LIMIT {limit};\n\
         GRANT USAGE, CREATE ON SCHEMA {schema} TO {name};\n\
         GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {name};\n\
         GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {name};\n\
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON TABLES TO {name};\n\
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO {name};\n\
         ALTER ROLE {name} SET search_path = {schema};\n\
         DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{role}', \
             '{ROLE_COMMENT_PREFIX}' || current_database()); END $$;\n",
        limit = role.connection_limit,
        role = role_name(id),
    );
    if role.login {
        batch.push_str(&set_password_statement(id));
    }
    batch
}

/// Sets the role's password to the verifier stashed in this transaction.
fn set_password_statement(id: SandboxId) -> String {
    format!(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', '{}', \
             current_setting('{VERIFIER_SETTING}')); END $$;\n",
        role_name(id)
    )
}

/// Stores the sandbox's passwords (replacing older ones) and stashes the role's verifier for
/// the DDL that follows in this transaction; one round trip.
pub(super) async fn save_credentials(
    conn: &mut PgConnection,
    id: SandboxId,
    credentials: &IssuedCredentials,
) -> Result<()> {
    let postgres = credentials.role.as_ref().map(|role| role.password.expose());
    let verifier = credentials.role.as_ref().map_or("", |role| role.verifier.expose());
    let redis = credentials.acl.as_ref().map(|acl| acl.password.expose());
    sqlx::query(
        "WITH saved AS (
             INSERT INTO sandbox_credentials (sandbox_id, postgres_password, redis_password)
             VALUES ($1, $2, $3)
             ON CONFLICT (sandbox_id) DO UPDATE SET postgres_password = EXCLUDED.postgres_password,
                 redis_password = EXCLUDED.redis_password, issued_at = now()
         )
         SELECT set_config($4, $5, true)",
    )
    .bind(id.as_uuid())
    .bind(postgres)
    .bind(redis)
    .bind(VERIFIER_SETTING)
    .bind(verifier)
    .execute(conn)
    .await?;
    Ok(())
}

async fn role_exists(conn: &mut PgConnection, id: SandboxId) -> Result<bool> {
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role_name(id))
        .fetch_one(conn)
        .await?;
    Ok(exists)
}

/// At a claim, in the claim's transaction: stores the new passwords and lets the member's role
/// log in with its new one (creating the role when the member was made before its template
/// asked for one).
pub(super) async fn issue_at_claim(
    conn: &mut PgConnection,
    id: SandboxId,
    credentials: &IssuedCredentials,
    connection_limit: u32,
) -> Result<()> {
    save_credentials(conn, id, credentials).await?;
    if credentials.role.is_none() {
        return Ok(());
    }
    let ddl = if role_exists(conn, id).await? {
        set_password_statement(id)
    } else {
        create_role_batch(id, RoleSpec { login: true, connection_limit })
    };
    conn.execute(ddl.as_str()).await?;
    Ok(())
}

/// At a release, in its transaction: the role may no longer log in and has no password, and
/// the stored credentials are gone. (Sessions still open are ended outside the lock:
/// [`Store::end_role_sessions`].)
pub(super) async fn withdraw_in(conn: &mut PgConnection, id: SandboxId) -> Result<()> {
    forget_credentials(conn, id).await?;
    if role_exists(conn, id).await? {
        let ddl = format!("ALTER ROLE {} NOLOGIN PASSWORD NULL", quoted(&role_name(id)));
        conn.execute(ddl.as_str()).await?;
    }
    Ok(())
}

/// With DESTROYED, after the schema is dropped (which took the role's privileges and default
/// privileges with it): the role and the stored credentials go too.
pub(super) async fn drop_role_in(conn: &mut PgConnection, id: SandboxId) -> Result<()> {
    forget_credentials(conn, id).await?;
    if role_exists(conn, id).await? {
        let ddl = format!("DROP ROLE {}", quoted(&role_name(id)));
        conn.execute(ddl.as_str()).await?;
    }
    Ok(())
}

async fn forget_credentials(conn: &mut PgConnection, id: SandboxId) -> Result<()> {
    sqlx::query("DELETE FROM sandbox_credentials WHERE sandbox_id = $1")
        .bind(id.as_uuid())
        .execute(conn)
        .await?;
    Ok(())
}

impl super::sandbox_transitions::LockedSandbox {
    /// A member going back to its pool: its role may no longer log in and its stored
    /// credentials are gone, in this transaction (see [`withdraw_in`]).
    pub async fn withdraw_credentials(&mut self) -> Result<()> {
        let id = self.sandbox().id;
        withdraw_in(self.connection(), id).await
    }
}

impl Store {
    /// The sandbox's stored passwords; `None` when it has none.
    #[tracing::instrument(name = "store.credentials.get", skip(self))]
    pub async fn sandbox_credentials(&self, id: SandboxId) -> Result<Option<StoredCredentials>> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT postgres_password, redis_password FROM sandbox_credentials
             WHERE sandbox_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(postgres, redis)| StoredCredentials {
            postgres_password: postgres.map(Secret::new),
            redis_password: redis.map(Secret::new),
        }))
    }

    /// Whether the sandbox has a login role.
    pub async fn sandbox_role_exists(&self, id: SandboxId) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        role_exists(&mut conn, id).await
    }

    /// Stops the role from logging in and ends its open sessions (a destroy, before the schema
    /// is dropped). Ending sessions needs `pg_signal_backend` (or superuser); without it they
    /// are left to end by themselves, with a warning: they can reach nothing once the schema is
    /// gone. Returns how many sessions were ended.
    #[tracing::instrument(name = "store.roles.lock_out", skip(self))]
    pub async fn lock_out_role(&self, id: SandboxId) -> Result<u64> {
        let mut conn = self.pool().acquire().await?;
        if !role_exists(&mut conn, id).await? {
            return Ok(0);
        }
        let ddl = format!("ALTER ROLE {} NOLOGIN", quoted(&role_name(id)));
        conn.execute(ddl.as_str()).await?;
        drop(conn);
        self.end_role_sessions(id).await
    }

    /// Ends every session of the sandbox's role (waiting up to 5 s for each to exit); see
    /// [`Store::lock_out_role`] for the privilege it needs.
    pub async fn end_role_sessions(&self, id: SandboxId) -> Result<u64> {
        let ended: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
             FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(role_name(id))
        .fetch_one(self.pool())
        .await;
        match ended {
            Ok(ended) => Ok(ended as u64),
            Err(error) if super::pg_codes::insufficient_privilege(&error) => {
                tracing::warn!(sandbox_id = %id, "sandboxd may not end the sessions of sandbox roles (grant it pg_signal_backend); they stay open until they end");
                Ok(0)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Login roles of this database's sandboxes (by their comment) whose sandbox is DESTROYED
    /// or unknown (a crash between the steps of a destroy, or a sandbox row removed).
    #[tracing::instrument(name = "store.roles.orphans", skip(self))]
    pub async fn orphan_roles(&self) -> Result<Vec<(SandboxId, Option<String>)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT r.rolname::text, s.tenant FROM pg_roles r
             JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
                 AND d.description = $1 || current_database()
             LEFT JOIN sandboxes s ON s.id = substr(r.rolname, 9)::uuid
             WHERE r.rolname ~ '^sandbox_[0-9a-f]{32}$' AND (s.id IS NULL OR s.state = 'DESTROYED')",
        )
        .bind(ROLE_COMMENT_PREFIX)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, tenant)| {
                Some((crate::isolation::credentials::id_of_name(&name)?, tenant))
            })
            .collect())
    }

    /// Drops an orphaned role (its sessions ended first) and audits it, unless a sandbox that
    /// is not DESTROYED owns it by now. A role that still holds privileges on a schema (an
    /// orphaned schema not yet past its grace) stays until that schema is gone.
    #[tracing::instrument(name = "store.roles.drop_orphan", skip(self))]
    pub async fn drop_orphan_role(&self, id: SandboxId, tenant: Option<&str>) -> Result<bool> {
        self.end_role_sessions(id).await?;
        let mut tx = self.pool().begin().await?;
        let live: Option<String> = sqlx::query_scalar(
            "SELECT state FROM sandboxes WHERE id = $1 AND state <> 'DESTROYED' FOR UPDATE",
        )
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_some() {
            return Ok(false);
        }
        drop_role_in(&mut tx, id).await?;
        let details = serde_json::json!({ "resource": "postgres_role", "name": role_name(id) });
        super::reconcile::record_orphan_removal(&mut tx, tenant, id, details).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Of `ids` (sandboxes that have a Redis ACL user), those whose sandbox is DESTROYED or
    /// unknown, with the tenant when known.
    pub async fn sandboxes_not_live(
        &self,
        ids: &[SandboxId],
    ) -> Result<Vec<(SandboxId, Option<String>)>> {
        let uuids: Vec<uuid::Uuid> = ids.iter().map(SandboxId::as_uuid).collect();
        let rows: Vec<(uuid::Uuid, Option<String>)> = sqlx::query_as(
            "SELECT i.id, s.tenant FROM unnest($1::uuid[]) AS i(id)
             LEFT JOIN sandboxes s ON s.id = i.id
             WHERE s.id IS NULL OR s.state = 'DESTROYED'",
        )
        .bind(&uuids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id, tenant)| (SandboxId::from_uuid(id), tenant)).collect())
    }

    /// Audits the removal of an orphaned Redis ACL user.
    pub async fn record_orphan_acl_user_removed(
        &self,
        id: SandboxId,
        tenant: Option<&str>,
    ) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        let details = serde_json::json!({ "resource": "redis_acl_user", "name": role_name(id) });
        super::reconcile::record_orphan_removal(&mut conn, tenant, id, details).await
    }

    /// Removes stored credentials whose sandbox is DESTROYED or gone; returns how many.
    pub async fn forget_orphan_credentials(&self) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM sandbox_credentials c WHERE NOT EXISTS (
                 SELECT 1 FROM sandboxes s WHERE s.id = c.sandbox_id AND s.state <> 'DESTROYED')",
        )
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
