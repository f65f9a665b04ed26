//! DDL for sandbox schemas. Schema names come only from [`SandboxId::schema_name`] (or a
//! generated scratch name), which are `[a-z0-9_]` by construction, so splicing them into DDL is
//! safe; nothing from a request reaches these statements.

use sqlx::{Executor, PgConnection};

use super::Store;
use crate::{
    error::{Error, Result},
    sandbox::SandboxId,
};

/// Double-quotes an identifier that is already known to be `[a-z0-9_]`.
fn quoted(schema: &str) -> String {
    debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    format!("\"{schema}\"")
}

impl Store {
    /// Table names of a sandbox schema, sorted; empty when the schema does not exist.
    pub async fn sandbox_tables(&self, id: SandboxId) -> Result<Vec<String>> {
        let tables = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(id.schema_name())
        .fetch_all(self.pool())
        .await?;
        Ok(tables)
    }

    /// Runs a template's SQL in a scratch schema and rolls back: proves the SQL works on this
    /// PostgreSQL and tells which tables it creates.
    #[tracing::instrument(name = "store.schema.check_template", skip(self, template_sql))]
    pub async fn check_template_sql(&self, template_sql: &str) -> Result<Vec<String>> {
        let scratch = format!("sandboxd_template_check_{}", uuid::Uuid::new_v4().simple());
        let mut tx = self.pool().begin().await?;
        tx.execute(
            format!("CREATE SCHEMA {0}; SET LOCAL search_path TO {0}", quoted(&scratch)).as_str(),
        )
        .await?;
        tx.execute(template_sql).await.map_err(template_error)?;
        let tables = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(&scratch)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(tables)
    }
}

/// Creates the schema and the template's tables inside the caller's transaction; the
/// transaction's search_path is back to the default afterwards.
pub(super) async fn create_in(
    conn: &mut PgConnection,
    id: SandboxId,
    template_sql: &str,
) -> Result<()> {
    let schema = quoted(&id.schema_name());
    conn.execute(format!("CREATE SCHEMA {schema}; SET LOCAL search_path TO {schema}").as_str())
        .await?;
    if !template_sql.trim().is_empty() {
        conn.execute(template_sql).await.map_err(template_error)?;
    }
    conn.execute("SET LOCAL search_path TO DEFAULT").await?;
    Ok(())
}

pub(super) async fn drop_in(conn: &mut PgConnection, id: SandboxId) -> Result<()> {
    let schema = quoted(&id.schema_name());
    conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
    Ok(())
}

/// A template SQL failure is a server-side (operator) problem, reported with PostgreSQL's message.
fn template_error(error: sqlx::Error) -> Error {
    match error.as_database_error() {
        Some(db_error) => Error::Internal(anyhow::anyhow!(
            "template SQL failed: {} (SQLSTATE {})",
            db_error.message(),
            db_error.code().unwrap_or_default()
        )),
        None => error.into(),
    }
}

/// Quotes an identifier read from the catalog (double quotes doubled), for DDL/queries.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Store {
    /// Exact row counts of every table of a sandbox schema, in one consistent statement;
    /// `None` when the schema does not exist.
    #[tracing::instrument(name = "store.schema.row_counts", skip(self))]
    pub async fn sandbox_row_counts(&self, id: SandboxId) -> Result<Option<Vec<(String, i64)>>> {
        let schema = id.schema_name();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema)
                .fetch_one(self.pool())
                .await?;
        if !exists {
            return Ok(None);
        }
        let tables = self.sandbox_tables(id).await?;
        if tables.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let counts: Vec<String> = tables
            .iter()
            .enumerate()
            .map(|(index, table)| {
                format!(
                    "SELECT ${} AS table_name, count(*) AS row_count FROM {}.{}",
                    index + 1,
                    quoted(&schema),
                    quote_identifier(table)
                )
            })
            .collect();
        let sql = counts.join(" UNION ALL ");
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for table in &tables {
            query = query.bind(table);
        }
        let mut rows = query.fetch_all(self.pool()).await?;
        rows.sort();
        Ok(Some(rows))
    }
}
