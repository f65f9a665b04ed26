//! What the router did, counted after each republish was acknowledged, and the log line that
//! reports it every `stats_interval` (the project has no metrics endpoint yet).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::cache::RouteCache;

#[derive(Debug, Default)]
pub struct Stats {
    sandbox: AtomicU64,
    production: AtomicU64,
    dead_letter: AtomicU64,
    /// Republishes JetStream recognised as duplicates (a redelivery of an event already
    /// routed); also counted in their target.
    duplicates: AtomicU64,
    /// Republishes that failed and were handed back for redelivery.
    retried: AtomicU64,
    paused: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sandbox: u64,
    pub production: u64,
    pub dead_letter: u64,
    pub duplicates: u64,
    pub retried: u64,
}

impl Counts {
    pub fn routed(&self) -> u64 {
        self.sandbox + self.production + self.dead_letter
    }
}

/// Where one event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Sandbox,
    Production,
    DeadLetter,
}

impl Stats {
    pub fn routed(&self, target: Target, duplicate: bool) {
        let counter = match target {
            Target::Sandbox => &self.sandbox,
            Target::Production => &self.production,
            Target::DeadLetter => &self.dead_letter,
        };
        counter.fetch_add(1, Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Relaxed);
        }
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Relaxed);
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sandbox: self.sandbox.load(Relaxed),
            production: self.production.load(Relaxed),
            dead_letter: self.dead_letter.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            retried: self.retried.load(Relaxed),
        }
    }
}

/// Logs the totals, what changed since the last line, and the cache's age, every `interval`
/// and once more when stopping.
pub async fn report(
    stats: Arc<Stats>,
    cache: Arc<RouteCache>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = Counts::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let now = stats.counts();
        tracing::info!(
            sandbox = now.sandbox,
            production = now.production,
            dead_letter = now.dead_letter,
            duplicates = now.duplicates,
            retried = now.retried,
            routed_since_last = now.routed() - last.routed(),
            routes = cache.len(),
            cache_age_ms = cache.age().map(|age| age.as_millis() as u64),
            paused = stats.is_paused(),
            "router stats"
        );
        last = now;
        if stopping {
            return;
        }
    }
}
