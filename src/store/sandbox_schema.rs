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

/// The statements that create the schema with the template's tables, leaving the search_path
/// at its default; to run as one simple-query batch in the caller's transaction. The template
/// SQL is the operator's, checked at startup; the separators keep a trailing comment or a
/// missing `;` in it from swallowing the statements around it.
pub(super) fn create_batch(id: SandboxId, template_sql: &str) -> String {
    let schema = quoted(&id.schema_name());
    format!(
        "CREATE SCHEMA {schema};\nSET LOCAL search_path TO {schema};\n{template_sql}\n;\n\
         SET LOCAL search_path TO DEFAULT"
    )
}

/// Runs a batch that contains template SQL; a failure is reported as the template's.
pub(super) async fn execute_template_batch(conn: &mut PgConnection, batch: &str) -> Result<()> {
    conn.execute(batch).await.map_err(template_error)?;
    Ok(())
}

pub(super) async fn drop_in(conn: &mut PgConnection, id: SandboxId) -> Result<()> {
    let schema = quoted(&id.schema_name());
    conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
    Ok(())
}

/// A template SQL failure is a server-side (operator) problem, reported with PostgreSQL's message.
fn template_error(error: sqlx::Error) -> Error {
    use super::pg_codes::{Condition, condition};
    let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
    if code.as_deref().map(condition).is_some_and(|c| c != Condition::Other) {
        // Not the template's fault: the server went away, timed out or lost a race.
        return error.into();
    }
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
