//! `sandboxd.v1.GuildRouting`. Every RPC is part of the API already and answers UNIMPLEMENTED
//! until the routing table lands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ResponseStream, unimplemented};
use crate::{app::App, proto, proto::guild_routing_server::GuildRouting};

pub struct GuildRoutingApi {
    app: Arc<App>,
}

impl GuildRoutingApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;
const ROUTING: &str = "GuildRouting (guild → sandbox routes)";

#[tonic::async_trait]
impl GuildRouting for GuildRoutingApi {
    async fn register_guild(
        &self,
        request: Request<proto::RegisterGuildRequest>,
    ) -> Reply<proto::GuildRoute> {
        unimplemented(&self.app, &request, ROUTING).await
    }

    async fn unregister_guild(
        &self,
        request: Request<proto::UnregisterGuildRequest>,
    ) -> Reply<proto::UnregisterGuildResponse> {
        unimplemented(&self.app, &request, ROUTING).await
    }

    async fn resolve_guild(
        &self,
        request: Request<proto::ResolveGuildRequest>,
    ) -> Reply<proto::ResolveGuildResponse> {
        unimplemented(&self.app, &request, ROUTING).await
    }

    async fn resolve_guilds(
        &self,
        request: Request<proto::ResolveGuildsRequest>,
    ) -> Reply<proto::ResolveGuildsResponse> {
        unimplemented(&self.app, &request, ROUTING).await
    }

    async fn list_guild_routes(
        &self,
        request: Request<proto::ListGuildRoutesRequest>,
    ) -> Reply<proto::ListGuildRoutesResponse> {
        unimplemented(&self.app, &request, ROUTING).await
    }

    type WatchGuildRoutesStream = ResponseStream<proto::WatchGuildRoutesResponse>;

    async fn watch_guild_routes(
        &self,
        request: Request<proto::WatchGuildRoutesRequest>,
    ) -> Reply<Self::WatchGuildRoutesStream> {
        unimplemented(&self.app, &request, ROUTING).await
    }
}
