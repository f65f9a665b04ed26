//! sandboxctl commands over `GuildRouting`: `route add | rm | resolve | list | watch`.

use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Connection, sandboxes::get};
use crate::proto::{
    GuildRoute, ListGuildRoutesRequest, RegisterGuildRequest, ResolveGuildsRequest, Route,
    UnregisterGuildRequest, WatchGuildRoutesRequest, watch_guild_routes_response::Event,
};

#[derive(Subcommand)]
pub enum RouteCommand {
    /// Route a Discord guild's traffic to a sandbox (by id or name).
    Add { guild_id: String, sandbox: String },
    /// Remove a guild's route (idempotent).
    Rm { guild_id: String },
    /// Show where guilds' traffic goes: a sandbox, or the default (production).
    Resolve {
        #[arg(required = true)]
        guild_ids: Vec<String>,
    },
    /// List routes, optionally of one sandbox.
    List {
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// Stream a snapshot, then every route change; `--resume TOKEN` continues a watch.
    Watch {
        #[arg(long)]
        resume: Option<String>,
    },
}

fn route_json(route: &GuildRoute) -> Value {
    json!({"guild_id": route.guild_id, "sandbox_id": route.sandbox_id, "tenant": route.tenant,
           "registered_by": route.registered_by})
}

fn resolved_json(route: &Route) -> Value {
    json!({"guild_id": route.guild_id,
           "target": route.target().as_str_name().trim_start_matches("ROUTE_TARGET_"),
           "sandbox_id": route.sandbox_id, "schema": route.schema,
           "redis_prefix": route.redis_prefix, "subject_prefix": route.subject_prefix})
}

fn print_routes(routes: &[GuildRoute], json: bool) {
    if json {
        println!("{:#}", Value::Array(routes.iter().map(route_json).collect()));
        return;
    }
    println!("{:<22} {:<36}  {:<16} REGISTERED BY", "GUILD", "SANDBOX", "TENANT");
    for r in routes {
        println!("{:<22} {:<36}  {:<16} {}", r.guild_id, r.sandbox_id, r.tenant, r.registered_by);
    }
}

pub async fn run(connection: &Connection, command: RouteCommand, json: bool) -> anyhow::Result<()> {
    let mut routing = connection.routing();
    match command {
        RouteCommand::Add { guild_id, sandbox } => {
            let sandbox_id = get(&mut connection.control(), &sandbox).await?.sandbox_id;
            let route = routing
                .register_guild(RegisterGuildRequest { guild_id, sandbox_id })
                .await?
                .into_inner();
            print_routes(&[route], json);
        }
        RouteCommand::Rm { guild_id } => {
            let removed = routing
                .unregister_guild(UnregisterGuildRequest { guild_id })
                .await?
                .into_inner()
                .removed;
            println!("{}", if removed { "removed" } else { "no such route" });
        }
        RouteCommand::Resolve { guild_ids } => {
            let routes = routing
                .resolve_guilds(ResolveGuildsRequest { guild_ids })
                .await?
                .into_inner()
                .routes;
            if json {
                println!("{:#}", Value::Array(routes.iter().map(resolved_json).collect()));
            } else {
                for route in &routes {
                    let target = route.target().as_str_name().trim_start_matches("ROUTE_TARGET_");
                    println!("{:<22} {:<8} {}", route.guild_id, target, route.sandbox_id);
                }
            }
        }
        RouteCommand::List { sandbox } => {
            let sandbox_id = match sandbox {
                Some(sandbox) => get(&mut connection.control(), &sandbox).await?.sandbox_id,
                None => String::new(),
            };
            let mut request =
                ListGuildRoutesRequest { sandbox_id, page_size: 1000, ..Default::default() };
            let mut all = Vec::new();
            loop {
                let page = routing.list_guild_routes(request.clone()).await?.into_inner();
                all.extend(page.guild_routes);
                if page.next_page_token.is_empty() {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            print_routes(&all, json);
        }
        RouteCommand::Watch { resume } => {
            let request = WatchGuildRoutesRequest { resume_token: resume.unwrap_or_default() };
            let mut stream = routing.watch_guild_routes(request).await?.into_inner();
            eprintln!("watching guild routes (Ctrl-C stops)");
            while let Some(response) = stream.next().await {
                let response = response?;
                let line = match response.event {
                    Some(Event::Snapshot(batch)) => {
                        json!({"snapshot": batch.routes.iter().map(route_json).collect::<Vec<_>>(),
                               "last_batch": batch.last_batch, "resume_token": response.resume_token})
                    }
                    Some(Event::Change(change)) => json!({
                        "change": change.kind().as_str_name().trim_start_matches("GUILD_ROUTE_CHANGE_KIND_"),
                        "route": change.route.as_ref().map(route_json),
                        "resume_token": response.resume_token,
                    }),
                    None => continue,
                };
                println!("{line}");
            }
        }
    }
    Ok(())
}
