//! Metrics of the work behind the RPCs, recorded where it happens on this replica:
//!
//! - `sandboxd_lock_wait_seconds{scope,outcome}`: how long an acquisition waited, from the call
//!   to the lease or the give-up (`outcome` `acquired`, `not_acquired` or `error`); `scope` is
//!   `api` (AcquireLock) or `git_push` (the push locks of GitPush).
//! - `sandboxd_lock_hold_seconds{scope}`: how long a lease was held, from its acquisition to
//!   its release, both read from Redis's clock (so a lease acquired on one replica and released
//!   on another is measured right). Leases that run out without a release are not observed.
//! - `sandboxd_sync_files_total{direction,action}` (`scanned`, `transferred`, `deleted`,
//!   `skipped`) and `sandboxd_sync_bytes_total{direction}`: what workspace pushes and pulls
//!   moved (`direction` `push` or `pull`; a pull skipped as fresh moves nothing).
//! - `sandboxd_pool_claim_seconds{template,outcome}`: the claim of a create from a pooled
//!   template, `hit` (a ready member was claimed) or `miss` (none was ready; the create then
//!   provisions).

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::workspace::sync::SyncReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockWaitLabels {
    scope: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncFileLabels {
    direction: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    template: String,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Waits and claims: 1 ms to a minute.
fn wait_histogram() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0])
}

/// Holds: 10 ms to an hour.
fn hold_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0])
}

/// How a lock acquisition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWaitOutcome {
    Acquired,
    NotAcquired,
    Error,
}

pub(super) struct WorkMetrics {
    lock_wait: Histograms<LockWaitLabels>,
    lock_hold: Histograms<ScopeLabels>,
    sync_files: Family<SyncFileLabels, Counter>,
    sync_bytes: Family<DirectionLabels, Counter>,
    pool_claim: Histograms<ClaimLabels>,
}

impl WorkMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let lock_wait = Histograms::<LockWaitLabels>::new_with_constructor(wait_histogram);
        registry.register(
            "sandboxd_lock_wait_seconds",
            "Time a lock acquisition waited, by scope and outcome",
            lock_wait.clone(),
        );
        let lock_hold = Histograms::<ScopeLabels>::new_with_constructor(hold_histogram);
        registry.register(
            "sandboxd_lock_hold_seconds",
            "Time a released lease was held, from acquisition to release",
            lock_hold.clone(),
        );
        let sync_files = Family::<SyncFileLabels, Counter>::default();
        registry.register(
            "sandboxd_sync_files",
            "Files of workspace syncs, by direction and what happened to them",
            sync_files.clone(),
        );
        let sync_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "sandboxd_sync_bytes",
            "Content bytes workspace syncs uploaded (push) or downloaded (pull)",
            sync_bytes.clone(),
        );
        let pool_claim = Histograms::<ClaimLabels>::new_with_constructor(wait_histogram);
        registry.register(
            "sandboxd_pool_claim_seconds",
            "Time a create spent claiming a warm-pool member, by hit or miss",
            pool_claim.clone(),
        );
        Self { lock_wait, lock_hold, sync_files, sync_bytes, pool_claim }
    }
}

impl super::Metrics {
    /// Records how long an acquisition in `scope` waited.
    pub fn record_lock_wait(
        &self,
        scope: &'static str,
        outcome: LockWaitOutcome,
        waited: Duration,
    ) {
        let outcome = match outcome {
            LockWaitOutcome::Acquired => "acquired",
            LockWaitOutcome::NotAcquired => "not_acquired",
            LockWaitOutcome::Error => "error",
        };
        let labels = LockWaitLabels { scope, outcome };
        self.work.lock_wait.get_or_create(&labels).observe(waited.as_secs_f64());
    }

    /// Records how long a released lease in `scope` was held.
    pub fn record_lock_hold(&self, scope: &'static str, held: Duration) {
        self.work.lock_hold.get_or_create(&ScopeLabels { scope }).observe(held.as_secs_f64());
    }

    /// Records what one push (`pushed`) or pull moved.
    pub fn record_sync(&self, pushed: bool, figures: &SyncReport) {
        let direction = if pushed { "push" } else { "pull" };
        for (action, count) in [
            ("scanned", figures.files_scanned),
            ("transferred", figures.files_transferred),
            ("deleted", figures.files_deleted),
            ("skipped", figures.files_skipped),
        ] {
            self.work.sync_files.get_or_create(&SyncFileLabels { direction, action }).inc_by(count);
        }
        let labels = DirectionLabels { direction };
        self.work.sync_bytes.get_or_create(&labels).inc_by(figures.bytes_transferred);
    }

    /// Records one claim attempt of a create from a pooled `template`.
    pub fn record_pool_claim(&self, template: &str, hit: bool, took: Duration) {
        let outcome = if hit { "hit" } else { "miss" };
        let labels = ClaimLabels { template: template.to_string(), outcome };
        self.work.pool_claim.get_or_create(&labels).observe(took.as_secs_f64());
    }
}
