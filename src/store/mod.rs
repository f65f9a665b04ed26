//! PostgreSQL access. All SQL of the service lives in this module, one file per table family.

pub mod api_keys;
pub mod audit;
pub mod pg_codes;
pub mod pool;
mod pool_stats;
pub mod reconcile;
pub mod routes;
pub mod sandbox_create;
pub mod sandbox_listing;
pub mod sandbox_schema;
pub mod sandbox_transitions;
pub mod sandbox_updates;
pub mod sandboxes;

use std::str::FromStr;

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, Executor, PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

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
        let options = PgConnectOptions::from_str(config.url.expose())
            .context("database.url is not a valid PostgreSQL URL")?
            .application_name("sandboxd")
            .log_statements(tracing::log::LevelFilter::Debug);
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

/// Creates the database named in `url` if it does not exist yet (for first runs and `migrate`).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url).await.context("checking whether the database exists")? {
        Postgres::create_database(url).await.context("creating the database")?;
    }
    Ok(())
}
