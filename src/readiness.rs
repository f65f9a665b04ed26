//! Flips health from real dependency probes, per service by what it needs: SandboxControl,
//! SyncService and ArtifactService (and the overall status) are SERVING only while PostgreSQL and Redis answer;
//! GuildRouting, whose resolves are served from memory, while its routing table is loaded and
//! caught up within `routing.max_staleness` (so a Redis outage does not take routing down, and a
//! PostgreSQL outage only after that bound). The first time PostgreSQL answers, migrations run
//! and every template's SQL is checked; a template that fails is fatal (the server stops with
//! that error logged). The routing table is loaded before the first SERVING.

use std::{collections::HashMap, sync::Arc};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::app::App;

/// Services reported by `grpc.health.v1.Health`, besides the overall status `""`.
pub const SERVICE_NAMES: [&str; 4] = [
    "sandboxd.v1.SandboxControl",
    GUILD_ROUTING,
    "sandboxd.v1.SyncService",
    "sandboxd.v1.ArtifactService",
];
/// The service whose health follows the routing table rather than every dependency.
pub const GUILD_ROUTING: &str = "sandboxd.v1.GuildRouting";

/// Sets the overall status and every service's.
pub(crate) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Returns an error only for a fatal startup problem, after asking the server to stop.
pub async fn run(
    app: Arc<App>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = app.config.server.readiness_interval;
    let mut initialized = false;
    let mut reported: HashMap<&'static str, ServingStatus> = HashMap::new();
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
        let (postgres, redis) = probe(&app).await;
        if !shutdown.is_cancelled() {
            app.set_readiness(initialized, postgres, redis);
            let everything = status(app.is_ready());
            let routing = status(app.routing_is_ready());
            for service in std::iter::once("").chain(SERVICE_NAMES) {
                let wanted = if service == GUILD_ROUTING { routing } else { everything };
                if reported.get(service) != Some(&wanted) {
                    reporter.set_service_status(service, wanted).await;
                    tracing::info!(service, status = ?wanted, postgres, redis, "readiness changed");
                    reported.insert(service, wanted);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                app.set_readiness(false, false, false);
                set_all(&reporter, ServingStatus::NotServing).await;
                return Ok(());
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn status(ready: bool) -> ServingStatus {
    if ready { ServingStatus::Serving } else { ServingStatus::NotServing }
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

async fn probe(app: &App) -> (bool, bool) {
    let (postgres, redis) = tokio::join!(app.store.ping(), app.redis.ping());
    if let Err(error) = &postgres {
        tracing::warn!(%error, "PostgreSQL probe failed");
    }
    if let Err(error) = &redis {
        tracing::warn!(%error, "Redis probe failed");
    }
    (postgres.is_ok(), redis.is_ok())
}
