//! The in-memory routing table. It is built from a snapshot of `guild_routes` and then kept
//! current by applying `guild_route_changes` in id order — after every NOTIFY from any replica,
//! after local writes, and every few seconds as a safety net. A lost LISTEN connection triggers
//! a full rebuild, since notifications sent meanwhile are gone.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::{
    Mutex,
    broadcast::{self, error::RecvError},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::GuildId;
use crate::{
    error::Result,
    events::{EventHub, Notification},
    sandbox::SandboxId,
    store::{
        Store,
        routes::{ChangeKind, ROUTES_CHANNEL, RouteRecord},
    },
};

const CHANGE_BATCH: u32 = 1000;

/// A route as resolvers need it, with every name precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    pub sandbox_id: String,
    pub tenant: String,
    pub schema: String,
    pub redis_prefix: String,
    pub subject_prefix: String,
}

impl ResolvedRoute {
    fn new(route: &RouteRecord) -> Self {
        let id = SandboxId::from_uuid(route.sandbox_id);
        ResolvedRoute {
            sandbox_id: id.to_string(),
            tenant: route.tenant.clone(),
            schema: id.schema_name(),
            redis_prefix: id.redis_prefix(),
            subject_prefix: id.subject_prefix(),
        }
    }
}

#[derive(Default)]
struct Routes {
    by_guild: HashMap<u64, Arc<ResolvedRoute>>,
    /// The last change id applied.
    position: i64,
}

#[derive(Default)]
pub struct RoutingTable {
    routes: RwLock<Routes>,
    /// Serializes catch-ups so changes are applied once and in order.
    applying: Mutex<()>,
    /// When the table last caught up with PostgreSQL (`None` before the first load).
    synced_at: std::sync::Mutex<Option<Instant>>,
}

impl RoutingTable {
    /// The hot path: a read lock and a hash lookup.
    pub fn resolve(&self, guild: GuildId) -> Option<Arc<ResolvedRoute>> {
        self.routes
            .read()
            .expect("routing table lock poisoned")
            .by_guild
            .get(&guild.as_u64())
            .cloned()
    }

    /// Guild ids the table routes to this sandbox (for health checks).
    pub fn guilds_of(&self, sandbox_id: Uuid) -> Vec<u64> {
        let wanted = sandbox_id.to_string();
        let routes = self.routes.read().expect("routing table lock poisoned");
        let mut guilds: Vec<u64> = routes
            .by_guild
            .iter()
            .filter(|(_, r)| r.sandbox_id == wanted)
            .map(|(g, _)| *g)
            .collect();
        guilds.sort_unstable();
        guilds
    }

    pub fn len(&self) -> usize {
        self.routes.read().expect("routing table lock poisoned").by_guild.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mark_synced(&self) {
        *self.synced_at.lock().expect("routing sync time lock poisoned") = Some(Instant::now());
    }

    /// How long ago the table last caught up with PostgreSQL; `None` before it was loaded.
    pub fn staleness(&self) -> Option<Duration> {
        self.synced_at.lock().expect("routing sync time lock poisoned").map(|at| at.elapsed())
    }

    /// Replaces the table with a fresh snapshot.
    pub async fn rebuild(&self, store: &Store) -> Result<()> {
        let _applying = self.applying.lock().await;
        let (records, position) = store.route_snapshot(None).await?;
        let by_guild = records
            .iter()
            .filter_map(|route| {
                let guild = GuildId::parse("guild_id", &route.guild_id).ok()?;
                Some((guild.as_u64(), Arc::new(ResolvedRoute::new(route))))
            })
            .collect();
        *self.routes.write().expect("routing table lock poisoned") = Routes { by_guild, position };
        self.mark_synced();
        tracing::debug!(routes = records.len(), position, "routing table rebuilt");
        Ok(())
    }

    /// Applies every change committed since the last one applied.
    pub async fn catch_up(&self, store: &Store) -> Result<()> {
        let _applying = self.applying.lock().await;
        loop {
            let position = self.routes.read().expect("routing table lock poisoned").position;
            let changes = store.route_changes_after(position, None, CHANGE_BATCH).await?;
            let Some(last) = changes.last().map(|change| change.id) else {
                self.mark_synced();
                return Ok(());
            };
            let mut routes = self.routes.write().expect("routing table lock poisoned");
            for change in &changes {
                let Ok(guild) = GuildId::parse("guild_id", &change.route.guild_id) else {
                    continue;
                };
                match change.kind {
                    ChangeKind::Added => {
                        routes
                            .by_guild
                            .insert(guild.as_u64(), Arc::new(ResolvedRoute::new(&change.route)));
                    }
                    ChangeKind::Removed => {
                        let current = routes.by_guild.get(&guild.as_u64());
                        if current
                            .is_some_and(|r| r.sandbox_id == change.route.sandbox_id.to_string())
                        {
                            routes.by_guild.remove(&guild.as_u64());
                        }
                    }
                }
            }
            routes.position = last;
        }
    }

    /// Keeps the table current until `shutdown`: catches up on every route NOTIFY, rebuilds
    /// after the LISTEN connection was lost, and catches up every `interval` regardless.
    pub async fn run_sync(
        &self,
        store: Store,
        events: EventHub,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut notifications = events.subscribe();
        let mut ticker = tokio::time::interval(interval);
        let mut needs_rebuild = true;
        loop {
            let result = if needs_rebuild {
                self.rebuild(&store).await
            } else {
                self.catch_up(&store).await
            };
            if let Err(error) = result {
                tracing::warn!(%error, "routing table sync failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            match next_sync(&mut notifications, &mut ticker, &shutdown).await {
                Some(SyncKind::CatchUp) => needs_rebuild = false,
                Some(SyncKind::Rebuild) => needs_rebuild = true,
                None => return,
            }
        }
    }
}

enum SyncKind {
    CatchUp,
    Rebuild,
}

/// Waits for the next reason to sync: a route change, a lost LISTEN connection (rebuild), or
/// the safety-net tick. Other notifications (sandbox lifecycle events, many per second) are
/// skipped here rather than each costing a catch-up query. `None` on shutdown.
async fn next_sync(
    notifications: &mut broadcast::Receiver<Notification>,
    ticker: &mut tokio::time::Interval,
    shutdown: &CancellationToken,
) -> Option<SyncKind> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            _ = ticker.tick() => return Some(SyncKind::CatchUp),
            received = notifications.recv() => match received {
                Ok(Notification::Other { channel, .. }) if channel == ROUTES_CHANNEL => {
                    return Some(SyncKind::CatchUp);
                }
                Ok(Notification::Reconnected) | Err(RecvError::Lagged(_)) => {
                    return Some(SyncKind::Rebuild);
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return None,
            },
        }
    }
}
