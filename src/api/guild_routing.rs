//! `sandboxd.v1.GuildRouting`. Resolves are answered from the in-memory routing table.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{ResponseStream, convert, requests};
use crate::{
    app::App,
    error::Error,
    proto,
    proto::guild_routing_server::GuildRouting,
    routing::{GuildId, service::MAX_RESOLVE_BATCH},
    sandbox::{page_token, validate},
};

pub struct GuildRoutingApi {
    app: Arc<App>,
}

impl GuildRoutingApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn guild_id(field: &str, value: &str) -> Result<GuildId, Error> {
    GuildId::parse(field, value).map_err(|violation| Error::InvalidArgument(vec![violation]))
}

#[tonic::async_trait]
impl GuildRouting for GuildRoutingApi {
    async fn register_guild(
        &self,
        request: Request<proto::RegisterGuildRequest>,
    ) -> Reply<proto::GuildRoute> {
        let principal = self.app.principal(&request).await?;
        let (guild, sandbox) = requests::guild_registration(request.get_ref())?;
        let route = self.app.routing.register(&principal, guild, sandbox).await?;
        Ok(Response::new(convert::guild_route(route)))
    }

    async fn unregister_guild(
        &self,
        request: Request<proto::UnregisterGuildRequest>,
    ) -> Reply<proto::UnregisterGuildResponse> {
        let principal = self.app.principal(&request).await?;
        let guild = guild_id("guild_id", &request.get_ref().guild_id)?;
        let removed = self.app.routing.unregister(&principal, guild).await?;
        Ok(Response::new(proto::UnregisterGuildResponse { removed }))
    }

    async fn resolve_guild(
        &self,
        request: Request<proto::ResolveGuildRequest>,
    ) -> Reply<proto::ResolveGuildResponse> {
        let principal = self.app.routing_principal(&request).await?;
        let raw = request.into_inner().guild_id;
        let guild = guild_id("guild_id", &raw)?;
        let route = self.app.routing.resolve(&principal, guild);
        Ok(Response::new(proto::ResolveGuildResponse {
            route: Some(convert::route(raw, route.as_deref())),
        }))
    }

    async fn resolve_guilds(
        &self,
        request: Request<proto::ResolveGuildsRequest>,
    ) -> Reply<proto::ResolveGuildsResponse> {
        let principal = self.app.routing_principal(&request).await?;
        let ids = request.into_inner().guild_ids;
        if ids.is_empty() || ids.len() > MAX_RESOLVE_BATCH {
            let message =
                format!("between 1 and {MAX_RESOLVE_BATCH} guild ids per call (got {})", ids.len());
            return Err(Error::invalid("guild_ids", message).into());
        }
        let mut guilds = Vec::with_capacity(ids.len());
        let violations =
            validate::check_each("guild_ids", &ids, |index, raw| {
                match GuildId::parse(&format!("guild_ids[{index}]"), raw) {
                    Ok(guild) => {
                        guilds.push(guild);
                        None
                    }
                    Err(violation) => Some(violation),
                }
            });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let routes = ids
            .into_iter()
            .zip(guilds)
            .map(|(raw, guild)| {
                convert::route(raw, self.app.routing.resolve(&principal, guild).as_deref())
            })
            .collect();
        Ok(Response::new(proto::ResolveGuildsResponse { routes }))
    }

    async fn list_guild_routes(
        &self,
        request: Request<proto::ListGuildRoutesRequest>,
    ) -> Reply<proto::ListGuildRoutesResponse> {
        let principal = self.app.principal(&request).await?;
        let request = request.into_inner();
        let sandbox_id = requests::optional_sandbox_id(&request.sandbox_id)?;
        let page_size = page_token::page_size(request.page_size)?;
        let page =
            self.app.routing.list(&principal, sandbox_id, page_size, &request.page_token).await?;
        let (guild_routes, next_page_token) = page.encode_within(
            self.app.page_budget(),
            convert::guild_route,
            prost::Message::encoded_len,
        );
        Ok(Response::new(proto::ListGuildRoutesResponse {
            guild_routes,
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    type WatchGuildRoutesStream = ResponseStream<proto::WatchGuildRoutesResponse>;

    async fn watch_guild_routes(
        &self,
        request: Request<proto::WatchGuildRoutesRequest>,
    ) -> Reply<Self::WatchGuildRoutesStream> {
        let principal = self.app.routing_principal(&request).await?;
        let token = request.into_inner().resume_token;
        let resume_after = match token.as_str() {
            "" => None,
            token => Some(
                convert::decode_resume_token(convert::ROUTE_CHANGES_STREAM, token).ok_or_else(
                    || Error::invalid("resume_token", "is not a resume token of this stream"),
                )?,
            ),
        };
        let items =
            self.app.routing.watch(principal, resume_after, self.app.shutdown.clone()).await?;
        let stream = items.map(|item| item.map(convert::route_watch_item).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
