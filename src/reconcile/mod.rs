//! The reconciler: runs in every replica and makes every sandbox end in a state that matches its
//! resources, whatever happened (crashes, dependency outages, timeouts).
//!
//! Every `interval` it:
//! - expires RUNNING sandboxes past `expire_time` (→ EXPIRED → destroyed, reason `expired`);
//! - destroys RUNNING sandboxes idle past their template's idle timeout (reason
//!   `idle_timeout`), confirmed on a later pass so touches still buffered in any replica's
//!   memory have been written by then;
//! - fails PENDING/CREATING sandboxes past their boot timeout or whose worker died, and
//!   destroys them (reason `boot_timeout`);
//! - finishes unattended work: EXPIRED, DESTROYING and FAILED sandboxes (and READY members whose
//!   release did not finish) whose worker is gone or gave up.
//!
//! Every pass also removes artifacts whose sandbox was destroyed longer than the artifact
//! retention ago, with their objects (`artifacts`).
//!
//! Less often it removes orphaned schemas (`orphans`) and prunes the logs behind resume tokens
//! (`retention`). A separate loop keeps warm pools at `min_ready` (woken early by claims), and
//! another runs the Redis keyspace pass (`keyspace`: keys of destroyed sandboxes on a single
//! server, and orphaned keys), in one replica at a time.
//!
//! Replicas coordinate through PostgreSQL only: a sandbox is changed under its row lock taken
//! with `SKIP LOCKED` (so two replicas never both act on it), unattended work is claimed with a
//! compare-and-set on its worker, and a worker's liveness is its advisory lock. Every action is
//! audited with actor `system`.

mod artifacts;
mod keyspace;
mod orphans;
mod passes;
mod replica;
mod retention;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use replica::{InFlight, Replica};

use crate::{config::ReconcileConfig, sandbox::SandboxManager};

pub struct Reconciler {
    manager: SandboxManager,
    config: ReconcileConfig,
    /// How long artifacts outlive their sandbox (`artifacts.retention`).
    artifact_retention: Duration,
    /// How long an idle sandbox must stay idle after it was first noticed: long enough for
    /// every replica to have flushed the touches it buffers.
    idle_confirmation: Duration,
}

impl Reconciler {
    pub fn new(
        manager: SandboxManager,
        artifact_retention: Duration,
        config: ReconcileConfig,
        flush_interval: Duration,
    ) -> Self {
        let idle_confirmation = flush_interval * 2 + config.interval;
        Self { manager, config, artifact_retention, idle_confirmation }
    }

    /// Runs passes every `interval` until `shutdown`, the first as soon as this replica is
    /// registered as a worker (after a crash, leftovers are finished at once, not an interval
    /// later).
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut next_orphan_sweep = Instant::now();
        let mut next_pruning = Instant::now();
        loop {
            if let Some(me) = self.manager.replica().worker() {
                self.pass(me).await;
                if Instant::now() >= next_orphan_sweep {
                    self.sweep_orphans().await;
                    next_orphan_sweep = Instant::now() + self.config.orphan_interval;
                }
                if Instant::now() >= next_pruning {
                    self.prune_logs().await;
                    next_pruning = Instant::now() + self.config.retention_interval;
                }
            }
            if !self.pause(&shutdown, None).await {
                return;
            }
        }
    }

    /// Keeps pools at `min_ready` until `shutdown`: after every claim or release (woken), and
    /// every `interval` otherwise.
    pub async fn run_pools(&self, shutdown: CancellationToken) {
        let wakeup = self.manager.pool_wakeup.clone();
        loop {
            if self.manager.replica().worker().is_some() {
                self.shrink_pools().await;
                if self.config.pool_refill {
                    match self.manager.refill_pools(self.config.refill_concurrency).await {
                        Ok(0) => {}
                        Ok(added) => tracing::debug!(added, "pools refilled"),
                        Err(error) => tracing::warn!(%error, "pool refill failed"),
                    }
                }
            }
            if !self.pause(&shutdown, Some(&wakeup)).await {
                return;
            }
        }
    }

    /// Runs the keyspace pass (`keyspace.rs`) whenever this replica can claim it, looking every
    /// `interval`, until `shutdown`. A pass in progress at shutdown is abandoned: nothing is
    /// marked, and its claim lapses with this replica's liveness lock.
    pub async fn run_keyspace(&self, shutdown: CancellationToken) {
        loop {
            if let Some(me) = self.manager.replica().worker() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.keyspace_pass_if_due(me) => {}
                }
            }
            if !self.pause(&shutdown, None).await {
                return;
            }
        }
    }

    /// Waits until the next round: `interval` (or until `wakeup` is notified) once this replica
    /// is registered as a worker, soon while it is not (PostgreSQL not answering). `false` when
    /// `shutdown` came first.
    async fn pause(
        &self,
        shutdown: &CancellationToken,
        wakeup: Option<&tokio::sync::Notify>,
    ) -> bool {
        let wait = match self.manager.replica().worker() {
            Some(_) => self.config.interval,
            None => self.config.interval.min(Duration::from_millis(100)),
        };
        let woken = async {
            match wakeup {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = woken => true,
            () = tokio::time::sleep(wait) => true,
        }
    }
}
