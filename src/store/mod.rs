//! PostgreSQL access. All SQL of the service lives in this module, one file per table family.

pub mod api_keys;
pub mod artifact_events;
pub mod artifact_removal;
pub mod artifacts;
pub mod audit;
pub mod connect;
pub mod keyspace;
mod metrics;
pub mod pg_codes;
pub mod pool;
mod pool_stats;
pub mod quotas;
pub mod reconcile;
pub mod routes;
pub mod sandbox_create;
pub mod sandbox_listing;
pub mod sandbox_roles;
pub mod sandbox_schema;
pub mod sandbox_transitions;
pub mod sandbox_updates;
pub mod sandboxes;
pub mod workspace_syncs;

use anyhow::Context;
use sqlx::{ConnectOptions, Connection, Executor, PgPool, postgres::PgPoolOptions};

use crate::config::DatabaseConfig;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a pooled connection may sit idle and still be handed out without a ping.
const TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Handle to sandboxd's PostgreSQL database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Builds the pool without connecting: the server starts and reports NOT_SERVING until the
    /// database answers.
    pub fn connect_lazy(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = connect::connect_options(config)?;
        let statement_timeout_ms = config.statement_timeout.as_millis();
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // sqlx pings every connection on release, which closes broken ones; a ping on every
            // acquire as well would cost a round trip per transaction. Only connections idle
            // for a while are pinged again before use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= TRUSTED_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        format!("SET statement_timeout = {statement_timeout_ms}").as_str(),
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a statement whose only parameter, `$1`, is the array of `ids`.
    pub(crate) async fn execute_for_ids(
        &self,
        sql: &str,
        ids: &[crate::sandbox::SandboxId],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(crate::sandbox::SandboxId::as_uuid).collect();
        sqlx::query(sql).bind(ids).execute(&self.pool).await.map(|_| ())
    }

    /// Cheap liveness probe used by the readiness task.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Applies pending migrations. sqlx holds a PostgreSQL advisory lock while migrating, so
    /// replicas starting together apply each migration once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("applying migrations")
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Attempts of a transaction PostgreSQL aborted for contention (deadlock victim, serialization
/// failure) before the caller gets ABORTED.
const CONTENTION_ATTEMPTS: u32 = 3;

/// Runs a self-contained transaction again (after a short, jittered pause) when PostgreSQL
/// aborted it for contention, a bounded number of times.
pub(crate) async fn retry_on_contention<T, F, Fut>(mut transaction: F) -> crate::error::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::error::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(error) if error.is_database_contention() && attempt < CONTENTION_ATTEMPTS => {
                let pause = std::time::Duration::from_millis(
                    rand::random_range(5..25) * u64::from(attempt),
                );
                tracing::debug!(attempt, ?pause, "transaction aborted for contention; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Creates the database named in `database.url` if it does not exist yet (for first runs and
/// `migrate`), connecting to the server's `postgres` database with the same TLS settings.
pub async fn ensure_database(config: &DatabaseConfig) -> anyhow::Result<()> {
    let options = connect::connect_options(config)?;
    let Some(database) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut conn = options
        .database("postgres")
        .connect()
        .await
        .context("connecting to PostgreSQL to check whether the database exists")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .context("checking whether the database exists")?;
    if !exists {
        let quoted = format!("\"{}\"", database.replace('"', "\"\""));
        let created = conn.execute(format!("CREATE DATABASE {quoted}").as_str()).await;
        // Another replica starting at the same moment may have created it first.
        let raced = |error: &sqlx::Error| {
            error.as_database_error().and_then(|db| db.code()).as_deref() == Some("42P04")
        };
        match created {
            Ok(_) => {}
            Err(error) if raced(&error) => {}
            Err(error) => return Err(anyhow::Error::new(error).context("creating the database")),
        }
    }
    conn.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::{DATABASE_CONTENTION, Error};

    fn contention() -> Error {
        Error::Aborted { reason: DATABASE_CONTENTION, message: "deadlock detected".into() }
    }

    #[tokio::test]
    async fn contention_is_retried_a_bounded_number_of_times_then_reported() {
        let attempts = AtomicU32::new(0);
        let outcome: crate::error::Result<()> = retry_on_contention(|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(contention())
        })
        .await;
        assert!(outcome.unwrap_err().is_database_contention());
        assert_eq!(attempts.load(Ordering::Relaxed), CONTENTION_ATTEMPTS);

        let attempts = AtomicU32::new(0);
        let outcome = retry_on_contention(|| async {
            match attempts.fetch_add(1, Ordering::Relaxed) {
                0 => Err(contention()),
                _ => Ok("committed"),
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), "committed");
        assert_eq!(attempts.load(Ordering::Relaxed), 2, "a second attempt that succeeds is kept");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let attempts = AtomicU32::new(0);
        let outcome: crate::error::Result<()> = retry_on_contention(|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(Error::not_found("sandbox", "x"))
        })
        .await;
        assert!(matches!(outcome, Err(Error::NotFound { .. })));
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
    }
}
