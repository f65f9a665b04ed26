//! The in-memory routing table. It is built from a snapshot of `guild_routes` and then kept
//! current by applying `guild_route_changes` in id order — after every NOTIFY from any replica,
//! after local writes, and every few seconds as a safety net. A lost LISTEN connection triggers
//! a full rebuild, since notifications sent meanwhile are gone.

use std::{
    collections::{BTreeSet, HashMap},
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

/// A route as resolvers need it, with every name precomputed. One is shared by every guild of
/// a sandbox, so a route costs the table a map entry, not five strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    pub sandbox_uuid: Uuid,
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
            sandbox_uuid: route.sandbox_id,
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
    /// Each routed sandbox's guilds and the one route they all share.
    by_sandbox: HashMap<Uuid, SandboxRoutes>,
    /// The last change id applied.
    position: i64,
}

struct SandboxRoutes {
    route: Arc<ResolvedRoute>,
    guilds: BTreeSet<u64>,
}

impl Routes {
    fn add(&mut self, guild: u64, record: &RouteRecord) {
        if let Some(previous) = self.by_guild.get(&guild).map(|route| route.sandbox_uuid) {
            self.remove(guild, previous);
        }
        let sandbox = self.by_sandbox.entry(record.sandbox_id).or_insert_with(|| SandboxRoutes {
            route: Arc::new(ResolvedRoute::new(record)),
            guilds: BTreeSet::new(),
        });
        sandbox.guilds.insert(guild);
        self.by_guild.insert(guild, sandbox.route.clone());
    }

    /// Removes the guild's route if it still points at `sandbox`.
    fn remove(&mut self, guild: u64, sandbox: Uuid) {
        if self.by_guild.get(&guild).is_none_or(|route| route.sandbox_uuid != sandbox) {
            return;
        }
        self.by_guild.remove(&guild);
        if let Some(routes) = self.by_sandbox.get_mut(&sandbox) {
            routes.guilds.remove(&guild);
            if routes.guilds.is_empty() {
                self.by_sandbox.remove(&sandbox);
            }
        }
    }
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

    /// Guild ids the table routes to this sandbox, in order (for health checks).
    pub fn guilds_of(&self, sandbox_id: Uuid) -> Vec<u64> {
        let routes = self.routes.read().expect("routing table lock poisoned");
        routes
            .by_sandbox
            .get(&sandbox_id)
            .map(|sandbox| sandbox.guilds.iter().copied().collect())
            .unwrap_or_default()
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
        let mut fresh = Routes::default();
        fresh.position = store
            .each_route(None, |record| {
                if let Ok(guild) = GuildId::parse("guild_id", &record.guild_id) {
                    fresh.add(guild.as_u64(), &record);
                }
            })
            .await?;
        let (routes, position) = (fresh.by_guild.len(), fresh.position);
        *self.routes.write().expect("routing table lock poisoned") = fresh;
        self.mark_synced();
        tracing::debug!(routes, position, "routing table rebuilt");
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
                    ChangeKind::Added => routes.add(guild.as_u64(), &change.route),
                    ChangeKind::Removed => routes.remove(guild.as_u64(), change.route.sandbox_id),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(guild: u64, sandbox: Uuid) -> RouteRecord {
        RouteRecord {
            guild_id: guild.to_string(),
            sandbox_id: sandbox,
            tenant: "acme".into(),
            registered_by: "alice".into(),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn guilds_of_a_sandbox_share_one_route_and_follow_moves_and_removals() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut routes = Routes::default();
        routes.add(1, &record(1, a));
        routes.add(2, &record(2, a));
        assert!(Arc::ptr_eq(&routes.by_guild[&1], &routes.by_guild[&2]), "one shared route");

        routes.add(1, &record(1, b));
        assert_eq!(routes.by_guild[&1].sandbox_uuid, b);
        assert_eq!(routes.by_sandbox[&a].guilds.iter().copied().collect::<Vec<_>>(), [2]);

        routes.remove(2, b);
        assert!(routes.by_guild.contains_key(&2), "a removal for another sandbox is ignored");
        routes.remove(2, a);
        assert!(!routes.by_guild.contains_key(&2));
        assert!(!routes.by_sandbox.contains_key(&a), "a sandbox without guilds is forgotten");
        assert_eq!(routes.by_sandbox[&b].guilds.len(), 1);
    }
}
