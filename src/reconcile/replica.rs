//! This replica's identity as a worker: the id under which it marks sandboxes it is working on,
//! kept alive by a liveness lock in PostgreSQL (see `store::reconcile`), and the set of sandboxes
//! it is working on right now, so its own reconciler leaves those alone.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{sandbox::SandboxId, store::Store};

#[derive(Default)]
struct Inner {
    /// 0 until registered.
    id: AtomicI32,
    in_flight: Mutex<HashSet<SandboxId>>,
}

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Replica {
    inner: Arc<Inner>,
}

/// Marks a sandbox as being worked on by this replica until dropped.
pub struct InFlight {
    replica: Replica,
    id: SandboxId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight().remove(&self.id);
    }
}

impl Replica {
    /// The worker id to record on sandboxes this replica works on; `None` before registration
    /// (such work is then picked up by any reconciler once abandoned).
    pub fn worker(&self) -> Option<i32> {
        match self.inner.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<SandboxId>> {
        self.inner.in_flight.lock().expect("in-flight lock poisoned")
    }

    /// Marks `id` as in flight here; `None` when it already is (someone here is on it).
    pub fn start(&self, id: SandboxId) -> Option<InFlight> {
        self.in_flight().insert(id).then(|| InFlight { replica: self.clone(), id })
    }

    pub fn is_in_flight(&self, id: SandboxId) -> bool {
        self.in_flight().contains(&id)
    }

    /// Registers the replica and keeps its liveness lock until `shutdown`; when the lock's
    /// connection breaks (PostgreSQL restarted), registers again under a new id, so work marked
    /// with the old one is seen as abandoned and finished by whichever reconciler comes first.
    pub async fn run(&self, store: Store, check_every: Duration, shutdown: CancellationToken) {
        // Until the database answers (and migrations ran), retry often: nothing that records a
        // worker can be finished by this replica's reconciler before it has an id.
        let retry = check_every.min(Duration::from_millis(250));
        let check_every = check_every.min(Duration::from_secs(2));
        let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "sandboxd".into());
        while !shutdown.is_cancelled() {
            let mut lease = match store.register_replica(&hostname).await {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::debug!(%error, "cannot register the replica yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
            };
            self.inner.id.store(lease.id, Ordering::Release);
            tracing::info!(worker = lease.id, "replica registered");
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(check_every) => {}
                }
                if !lease.is_held().await {
                    tracing::warn!(
                        worker = lease.id,
                        "replica liveness lock lost; registering again"
                    );
                    self.inner.id.store(0, Ordering::Release);
                    break;
                }
            }
        }
    }
}
