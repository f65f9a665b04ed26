//! The router's local copy of the guild routes, fed by `WatchGuildRoutes`, and how current it
//! is. Lookups never wait on sandboxd: they read this map. The cache is *fresh* while the watch
//! stream is open, and for `max_staleness` after it broke; before the first snapshot, or past
//! that bound, it is stale and the consume loop pauses.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use uuid::Uuid;

use crate::routing::GuildId;

/// The state of the route watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No snapshot yet: nothing is known.
    NeverSynced,
    /// The stream is open; the cache follows every change.
    Live,
    /// The stream broke at this instant; the cache holds what was known then.
    Broken(Instant),
}

pub struct RouteCache {
    routes: RwLock<HashMap<u64, Uuid>>,
    link: watch::Sender<Link>,
    max_staleness: Duration,
}

impl RouteCache {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            routes: RwLock::default(),
            link: watch::Sender::new(Link::NeverSynced),
            max_staleness,
        }
    }

    /// The sandbox a guild's events go to, or `None` for production.
    pub fn lookup(&self, guild: GuildId) -> Option<Uuid> {
        self.read().get(&guild.as_u64()).copied()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every route (a complete snapshot) and marks the cache live.
    pub fn replace(&self, routes: HashMap<u64, Uuid>) {
        *self.write() = routes;
        self.set_live();
    }

    pub fn add(&self, guild: GuildId, sandbox: Uuid) {
        self.write().insert(guild.as_u64(), sandbox);
    }

    /// Removes a guild's route if it still points at `sandbox`.
    pub fn remove(&self, guild: GuildId, sandbox: Uuid) {
        let mut routes = self.write();
        if routes.get(&guild.as_u64()) == Some(&sandbox) {
            routes.remove(&guild.as_u64());
        }
    }

    /// A resumed stream: the cache is current again without a snapshot.
    pub fn set_live(&self) {
        self.link.send_replace(Link::Live);
    }

    /// The stream broke; keeps the instant of the first break until it is live again.
    pub fn set_broken(&self) {
        self.link.send_if_modified(|link| match link {
            Link::Live => {
                *link = Link::Broken(Instant::now());
                true
            }
            Link::NeverSynced | Link::Broken(_) => false,
        });
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// How long the cache has gone without being known current: zero while live, `None`
    /// before the first snapshot.
    pub fn age(&self) -> Option<Duration> {
        match self.link() {
            Link::NeverSynced => None,
            Link::Live => Some(Duration::ZERO),
            Link::Broken(at) => Some(at.elapsed()),
        }
    }

    pub fn is_fresh(&self) -> bool {
        self.age().is_some_and(|age| age < self.max_staleness)
    }

    /// Returns once the cache is fresh (at once when it is).
    pub async fn wait_fresh(&self) {
        let mut link = self.link.subscribe();
        while !self.is_fresh() {
            // Only a new link state can make a stale cache fresh again.
            if link.changed().await.is_err() {
                return;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Uuid>> {
        // A panic while holding the lock leaves a map that is still whole (inserts and removes
        // do not unwind halfway), so a poisoned lock is used as it is.
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Uuid>> {
        self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guild(id: u64) -> GuildId {
        GuildId::parse("g", &id.to_string()).unwrap()
    }

    #[tokio::test]
    async fn fresh_only_after_a_snapshot_and_within_the_staleness_bound() {
        let cache = RouteCache::new(Duration::from_millis(50));
        assert!(!cache.is_fresh(), "nothing known before the first snapshot");
        let sandbox = Uuid::now_v7();
        cache.replace(HashMap::from([(1, sandbox)]));
        assert!(cache.is_fresh());
        assert_eq!(cache.lookup(guild(1)), Some(sandbox));
        cache.set_broken();
        assert!(cache.is_fresh(), "still within the bound");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!cache.is_fresh());
        let waiter = cache.wait_fresh();
        cache.set_live();
        waiter.await;
        cache.remove(guild(1), Uuid::now_v7());
        assert_eq!(cache.lookup(guild(1)), Some(sandbox), "a removal for another sandbox");
        cache.remove(guild(1), sandbox);
        assert_eq!(cache.lookup(guild(1)), None);
    }
}
