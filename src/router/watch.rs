//! Follows `WatchGuildRoutes` into the [`RouteCache`]: a snapshot, then every change; after a
//! break it reconnects with backoff and resumes after the last resume token, so nothing is
//! missed and no snapshot is needed. A token the server can no longer resume from (pruned, or
//! from another database) is dropped and the next stream starts with a snapshot.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

use super::cache::RouteCache;
use crate::{
    bearer::Bearer,
    proto::{
        GuildRoute, GuildRouteChangeKind, WatchGuildRoutesRequest,
        guild_routing_client::GuildRoutingClient, watch_guild_routes_response::Event,
    },
    routing::GuildId,
};

type Client = GuildRoutingClient<InterceptedService<Channel, Bearer>>;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A lazily connecting client. HTTP/2 keepalive pings detect a dead server within a fraction
/// of the staleness bound even when no route changes flow.
pub fn client(
    addr: &str,
    tls: &crate::tls::grpc_client::GrpcClientTls,
    api_key: &str,
    max_staleness: Duration,
) -> anyhow::Result<Client> {
    let ping = (max_staleness / 4).clamp(Duration::from_millis(250), Duration::from_secs(10));
    let endpoint = crate::tls::grpc_client::endpoint(addr, tls)
        .map_err(|error| anyhow::anyhow!("router.sandboxd_addr: {error:#}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(ping)
        .keep_alive_timeout(ping)
        .keep_alive_while_idle(true);
    let key = (!api_key.is_empty()).then_some(api_key);
    Ok(GuildRoutingClient::with_interceptor(endpoint.connect_lazy(), Bearer::new(key)?))
}

/// Why one stream ended.
enum Ended {
    /// Cancelled: the router is stopping.
    Shutdown,
    /// The server ended or broke the stream (`established`), or refused or could not be
    /// reached.
    Broken { status: Status, established: bool },
}

pub struct Watcher {
    client: Client,
    cache: Arc<RouteCache>,
    resume_token: String,
}

impl Watcher {
    pub fn new(client: Client, cache: Arc<RouteCache>) -> Self {
        Self { client, cache, resume_token: String::new() }
    }

    /// Runs until cancelled. Fails only when the first stream is refused for its credentials
    /// (a router that never gets routes is misconfigured, not unlucky).
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut delay = FIRST_RETRY;
        loop {
            let status = match self.follow(&shutdown).await {
                Ended::Shutdown => return Ok(()),
                Ended::Broken { status, established } => {
                    if established {
                        delay = FIRST_RETRY;
                    }
                    status
                }
            };
            self.cache.set_broken();
            let refused = matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied);
            if refused && self.cache.age().is_none() {
                anyhow::bail!("sandboxd refused the route watch: {}", status.message());
            }
            if matches!(status.code(), Code::OutOfRange | Code::InvalidArgument)
                && !self.resume_token.is_empty()
            {
                tracing::warn!(
                    message = status.message(),
                    "cannot resume the route watch; taking a new snapshot"
                );
                self.resume_token.clear();
                delay = FIRST_RETRY;
            } else {
                tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?delay, "route watch broken");
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(jittered) => {}
            }
            delay = (delay * 2).min(LAST_RETRY);
        }
    }

    /// One stream, from the call until it ends.
    async fn follow(&mut self, shutdown: &CancellationToken) -> Ended {
        let request = WatchGuildRoutesRequest { resume_token: self.resume_token.clone() };
        let resuming = !request.resume_token.is_empty();
        let call = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            call = self.client.watch_guild_routes(request) => call,
        };
        let mut stream = match call {
            Ok(response) => response.into_inner(),
            Err(status) => return Ended::Broken { status, established: false },
        };
        if resuming {
            // The server checked the token before answering: we are current again.
            self.cache.set_live();
            tracing::info!(routes = self.cache.len(), "route watch resumed");
        }
        let mut snapshot: HashMap<u64, Uuid> = HashMap::new();
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return Ended::Shutdown,
                message = stream.next() => message,
            };
            let response = match message {
                Some(Ok(response)) => response,
                Some(Err(status)) => return Ended::Broken { status, established: true },
                None => {
                    let status = Status::unavailable("the server ended the stream");
                    return Ended::Broken { status, established: true };
                }
            };
            match response.event {
                Some(Event::Snapshot(batch)) => {
                    snapshot.extend(
                        batch.routes.iter().filter_map(parse_route).map(|(g, s)| (g.as_u64(), s)),
                    );
                    if batch.last_batch {
                        self.cache.replace(std::mem::take(&mut snapshot));
                        tracing::info!(routes = self.cache.len(), "route snapshot loaded");
                    }
                }
                Some(Event::Change(change)) => {
                    let Some((guild, sandbox)) = change.route.as_ref().and_then(parse_route) else {
                        continue;
                    };
                    match change.kind() {
                        GuildRouteChangeKind::Added => self.cache.add(guild, sandbox),
                        GuildRouteChangeKind::Removed => self.cache.remove(guild, sandbox),
                        GuildRouteChangeKind::Unspecified => {}
                    }
                    tracing::debug!(%guild, %sandbox, kind = ?change.kind(), "route change");
                }
                None => {}
            }
            if !response.resume_token.is_empty() {
                self.resume_token = response.resume_token;
            }
        }
    }
}

/// A route from the wire; one that does not parse (never sent by a sound server) is skipped
/// with a warning rather than guessed at.
fn parse_route(route: &GuildRoute) -> Option<(GuildId, Uuid)> {
    let guild = GuildId::parse("guild_id", &route.guild_id).ok();
    let sandbox = Uuid::parse_str(&route.sandbox_id).ok();
    if guild.is_none() || sandbox.is_none() {
        tracing::warn!(
            guild_id = route.guild_id,
            sandbox_id = route.sandbox_id,
            "ignoring a malformed route"
        );
    }
    Some((guild?, sandbox?))
}
