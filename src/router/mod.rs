//! The event router (`sandboxd route-events`): the Discord path over NATS JetStream.
//!
//! A Discord bot publishes every gateway event to JetStream. The router consumes them with a
//! durable pull consumer, reads each event's guild id, and republishes the unchanged payload
//! to `sandbox.<uuid>.<original subject>` when the guild is routed to a sandbox, to the
//! production subject otherwise, and to a dead-letter subject when it has no usable guild id.
//! It acks an event only after JetStream stored the republish (at-least-once; message ids let
//! the destination streams drop redeliveries).
//!
//! Routes come from sandboxd's `WatchGuildRoutes` into a local cache ([`cache`], fed by
//! [`watch`]), so no routing decision waits for sandboxd; while the watch is broken for longer
//! than `max_staleness`, consumption pauses instead of routing on stale data ([`consume`]).

pub mod cache;
pub mod config;
pub mod consume;
pub mod event;
pub mod stats;
pub mod subject;
mod watch;

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::RouterConfig;

use self::{
    cache::RouteCache, consume::ConsumeLoop, event::GuildField, stats::Stats, watch::Watcher,
};

/// A running router. Stop it with [`RunningRouter::shutdown`] (or cancel its token and
/// [`RunningRouter::wait`]).
pub struct RunningRouter {
    pub stats: Arc<Stats>,
    pub cache: Arc<RouteCache>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    consume: JoinHandle<anyhow::Result<()>>,
    watch: JoinHandle<anyhow::Result<()>>,
    nats: async_nats::Client,
}

/// Connects to NATS and binds the durable consumer (failing at once, with the reason, when
/// either is impossible), then starts following the routes and consuming.
pub async fn start(config: RouterConfig) -> anyhow::Result<RunningRouter> {
    config.validate()?;
    let nats = async_nats::ConnectOptions::new()
        .name("sandboxd-router")
        .connect(config.nats_url.expose())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))?;
    let js = async_nats::jetstream::new(nats.clone());
    let consumer = consume::bind(&js, &config).await?;
    let client = watch::client(
        &config.sandboxd_addr,
        &config.sandboxd_tls,
        config.api_key.expose(),
        config.max_staleness,
    )?;

    let cache = Arc::new(RouteCache::new(config.max_staleness));
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let watch = tasks.spawn({
        let (watcher, shutdown) = (Watcher::new(client, cache.clone()), shutdown.clone());
        async move {
            let result = watcher.run(shutdown.clone()).await;
            // A router that can never get routes stops as a whole.
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    let consume = tasks.spawn({
        let consume = ConsumeLoop {
            js,
            consumer,
            cache: cache.clone(),
            stats: stats.clone(),
            field: GuildField::new(&config.guild_field),
            production_prefix: config.production_prefix.clone(),
            dead_letter_subject: config.dead_letter_subject.clone(),
            max_in_flight: config.max_in_flight,
            retry_delay: config.retry_delay,
        };
        let shutdown = shutdown.clone();
        async move {
            let result = consume.run(shutdown.clone()).await;
            shutdown.cancel();
            result
        }
    });
    tasks.spawn(stats::report(
        stats.clone(),
        cache.clone(),
        config.stats_interval,
        shutdown.clone(),
    ));
    tasks.close();
    Ok(RunningRouter { stats, cache, shutdown, tasks, consume, watch, nats })
}

impl RunningRouter {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every task stopped (after the token is cancelled, or a fatal error), then
    /// flushes the last acks to NATS.
    pub async fn wait(self) -> anyhow::Result<()> {
        let consumed = self.consume.await.context("the consume loop panicked")?;
        let watched = self.watch.await.context("the route watch panicked")?;
        self.tasks.wait().await;
        if let Err(error) = self.nats.flush().await {
            tracing::warn!(%error, "flushing the last acks to NATS");
        }
        watched.and(consumed)
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}
