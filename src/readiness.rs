//! Flips health from real dependency probes: SERVING only while PostgreSQL and Redis answer.
//! The first time PostgreSQL answers, migrations run and every template's SQL is checked; a
//! template that fails is fatal (the server stops with that error logged). The routing table is
//! loaded before the first SERVING.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{app::App, server::set_all};

/// Returns an error only for a fatal startup problem, after asking the server to stop.
pub async fn run(
    app: Arc<App>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = app.config.server.readiness_interval;
    let mut initialized = false;
    let mut last_ready = None;
    loop {
        if !initialized {
            match initialize(&app).await {
                Ok(()) => initialized = true,
                Err(Fatal(error)) => {
                    tracing::error!(error = format!("{error:#}"), "startup check failed; stopping");
                    shutdown.cancel();
                    return Err(error);
                }
                Err(Retry(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "PostgreSQL not ready yet");
                }
            }
        }
        let ready = initialized && probe(&app).await;
        if last_ready != Some(ready) && !shutdown.is_cancelled() {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            app.set_ready(ready);
            set_all(&reporter, status).await;
            tracing::info!(ready, "readiness changed");
            last_ready = Some(ready);
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                app.set_ready(false);
                return Ok(());
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

enum InitError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}
use InitError::{Fatal, Retry};

async fn initialize(app: &App) -> Result<(), InitError> {
    app.store.ping().await.map_err(|error| Retry(error.into()))?;
    app.store.migrate().await.map_err(Fatal)?;
    app.check_templates().await.map_err(Fatal)?;
    // Serving before the routing table is loaded would send every guild to production.
    app.routing.table().rebuild(&app.store).await.map_err(|error| Retry(error.into()))
}

async fn probe(app: &App) -> bool {
    let (postgres, redis) = tokio::join!(app.store.ping(), app.redis.ping());
    if let Err(error) = &postgres {
        tracing::warn!(%error, "PostgreSQL probe failed");
    }
    if let Err(error) = &redis {
        tracing::warn!(%error, "Redis probe failed");
    }
    postgres.is_ok() && redis.is_ok()
}
