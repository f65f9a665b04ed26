//! Registering, resolving, listing and watching guild routes.

use std::{sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{GuildId, ResolvedRoute, RoutingTable};
use crate::{
    auth::{Principal, Role},
    error::{Error, Result},
    events::{EventHub, Notification},
    sandbox::{
        SandboxId, SandboxManager, SandboxSelector,
        listing::{Page, paginate},
        page_token,
    },
    store::{
        Store,
        reconcile::PrunedLog,
        routes::{ROUTES_CHANNEL, RouteChange, RouteRecord},
    },
};

/// Most guild ids one ResolveGuilds call may ask about.
pub const MAX_RESOLVE_BATCH: usize = 1000;
const SNAPSHOT_BATCH: usize = 500;
const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// One item of a route watch: a snapshot batch (the last one carries the position) or a change.
#[derive(Debug)]
pub enum WatchItem {
    Snapshot { routes: Vec<RouteRecord>, last_batch: bool, position: i64 },
    Change(RouteChange),
}

#[derive(Clone)]
pub struct RoutingService {
    store: Store,
    table: Arc<RoutingTable>,
    sandboxes: SandboxManager,
    events: EventHub,
    max_guilds_per_sandbox: u32,
}

/// Routers resolve and watch every tenant's routes; everyone else only their tenant's.
fn visible_tenant(principal: &Principal) -> Option<&str> {
    match principal.role {
        Role::Router => None,
        Role::Owner | Role::Admin | Role::Member => Some(&principal.tenant),
    }
}

impl RoutingService {
    pub fn new(
        store: Store,
        table: Arc<RoutingTable>,
        sandboxes: SandboxManager,
        events: EventHub,
        max_guilds_per_sandbox: u32,
    ) -> Self {
        Self { store, table, sandboxes, events, max_guilds_per_sandbox }
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    #[tracing::instrument(name = "routing.register", skip_all, fields(%guild, %sandbox_id))]
    pub async fn register(
        &self,
        principal: &Principal,
        guild: GuildId,
        sandbox_id: SandboxId,
    ) -> Result<RouteRecord> {
        // Visibility first: another tenant's (or, for members, another owner's) sandbox is NOT_FOUND.
        self.sandboxes.get(principal, &SandboxSelector::Id(sandbox_id)).await?;
        let registered = self
            .store
            .register_route(
                guild,
                sandbox_id.as_uuid(),
                &principal.tenant,
                &principal.actor(),
                self.max_guilds_per_sandbox,
            )
            .await?;
        self.table.catch_up(&self.store).await?;
        Ok(match registered {
            crate::store::routes::Registered::Added(route)
            | crate::store::routes::Registered::Unchanged(route) => route,
        })
    }

    /// Idempotent: true when a route was removed.
    #[tracing::instrument(name = "routing.unregister", skip_all, fields(%guild))]
    pub async fn unregister(&self, principal: &Principal, guild: GuildId) -> Result<bool> {
        principal.require_manager()?;
        let removed = self
            .store
            .unregister_route(guild, &principal.tenant, principal.owner_scope(), &principal.actor())
            .await?;
        if removed.is_some() {
            self.table.catch_up(&self.store).await?;
        }
        Ok(removed.is_some())
    }

    /// The route of a guild, or `None` for the default (production) route. Never touches
    /// PostgreSQL. Another tenant's route is invisible (default) except to routers.
    pub fn resolve(&self, principal: &Principal, guild: GuildId) -> Option<Arc<ResolvedRoute>> {
        let route = self.table.resolve(guild)?;
        match visible_tenant(principal) {
            Some(tenant) if tenant != route.tenant => None,
            _ => Some(route),
        }
    }

    pub async fn list(
        &self,
        principal: &Principal,
        sandbox_id: Option<SandboxId>,
        page_size: u32,
        token: &str,
    ) -> Result<Page<RouteRecord>> {
        if let Some(id) = sandbox_id
            && principal.role != Role::Router
        {
            self.sandboxes.get(principal, &SandboxSelector::Id(id)).await?;
        }
        let fingerprint = page_token::fingerprint(&page_token::for_caller(
            principal,
            sandbox_id.map(|id| id.to_string()),
        ));
        let after: Option<String> = page_token::decode(token, &fingerprint)?;
        let routes = self
            .store
            .list_routes(
                visible_tenant(principal),
                principal.owner_scope(),
                sandbox_id.map(|id| id.as_uuid()),
                after.as_deref(),
                page_size + 1,
            )
            .await?;
        Ok(paginate(routes, page_size, move |last| {
            page_token::encode(&last.guild_id, &fingerprint)
        }))
    }

    /// A snapshot (unless resuming) and then every change, in order, until shutdown.
    pub async fn watch(
        &self,
        principal: Principal,
        resume_after: Option<i64>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<impl Stream<Item = Result<WatchItem>> + Send + 'static> {
        if principal.role == Role::Member {
            return Err(Error::PermissionDenied(
                "watching routes needs the router, owner or admin role".into(),
            ));
        }
        let mut notifications = self.events.subscribe();
        let tenant = visible_tenant(&principal).map(str::to_string);
        let snapshot = match resume_after {
            Some(after) => {
                self.store.check_resume_token(PrunedLog::RouteChanges, after).await?;
                None
            }
            None => Some(self.store.route_snapshot(tenant.as_deref()).await?),
        };
        let store = self.store.clone();
        Ok(async_stream::try_stream! {
            let mut position = resume_after.unwrap_or(0);
            if let Some((routes, at)) = snapshot {
                position = at;
                let mut batches: Vec<Vec<RouteRecord>> =
                    routes.chunks(SNAPSHOT_BATCH).map(<[RouteRecord]>::to_vec).collect();
                if batches.is_empty() {
                    batches.push(Vec::new());
                }
                let count = batches.len();
                for (index, routes) in batches.into_iter().enumerate() {
                    yield WatchItem::Snapshot { routes, last_batch: index + 1 == count, position };
                }
            }
            loop {
                let changes = store.route_changes_after(position, tenant.as_deref(), 500).await?;
                if changes.is_empty() {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = wait_for_routes(&mut notifications) => {}
                        () = tokio::time::sleep(POLL_FALLBACK) => {}
                    }
                    continue;
                }
                // As in WatchSandboxes: never deliver a change after a pruned gap.
                store.check_resumable(PrunedLog::RouteChanges, position).await?;
                for change in changes {
                    position = change.id;
                    yield WatchItem::Change(change);
                }
            }
        })
    }
}

async fn wait_for_routes(notifications: &mut tokio::sync::broadcast::Receiver<Notification>) {
    loop {
        match notifications.recv().await {
            Ok(Notification::Other { channel, .. }) if channel == ROUTES_CHANNEL => return,
            Ok(Notification::Reconnected) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
