//! `sandboxctl bench resolve`: ResolveGuild against N mapped guilds at a fixed concurrency,
//! beside a no-op RPC of the same server (`grpc.health.v1.Health/Check`) driven by the same
//! client over the same connections, as the ceiling. With `--bare-addr`, the same Health/Check
//! on a bare tonic server (`sandboxctl bench-bare-server`) is measured first, as a second
//! ceiling without sandboxd's per-RPC layers. Prints req/s and p50/p99/p999 of each and their
//! ratios.

use std::time::{Duration, Instant};

use clap::Args;
use futures::future::{join_all, try_join_all};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod report;

use report::{Measured, report};

use super::{Bearer, Connection};
use crate::proto::{
    EnsureSandboxRequest, ListGuildRoutesRequest, RegisterGuildRequest, ResolveGuildRequest,
    ResolveGuildsRequest, RouteTarget, guild_routing_client::GuildRoutingClient,
};

#[derive(Args)]
pub struct ResolveArgs {
    /// Guilds to map (ids 1..=N) before measuring; the server's routing.max_guilds_per_sandbox
    /// must allow this many.
    #[arg(long, default_value_t = 10_000)]
    guilds: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the workers share (round robin).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Measured time per RPC.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured time before each RPC's first slice.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Slices each RPC's measured time is cut into, taken in turn (bare, Health/Check,
    /// ResolveGuild, bare, ...), so that load from other processes on a shared machine, which
    /// drifts over seconds, falls on every RPC alike and leaves the ratios less noisy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Name of the sandbox the guilds are routed to (created when missing).
    #[arg(long, default_value = "bench-routes")]
    sandbox: String,
    /// Guilds 1..=N were mapped out of band (scripts/bench-cost-resolve inserts them into
    /// PostgreSQL in bulk, since registering a million through the RPC would take hours):
    /// register nothing, only check that guilds 1 and N resolve to a sandbox.
    #[arg(long)]
    preloaded: bool,
    /// A bare tonic Health server (`sandboxctl bench-bare-server`) to measure first, over as
    /// many connections of its own, e.g. http://127.0.0.1:50099.
    #[arg(long)]
    bare_addr: Option<String>,
}

#[derive(Clone, Copy)]
enum Rpc {
    /// Health/Check of the bare tonic server.
    BareHealthCheck,
    HealthCheck,
    Resolve,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::BareHealthCheck => "bare tonic Health/Check",
            Rpc::HealthCheck => "grpc.health.v1.Health/Check",
            Rpc::Resolve => "ResolveGuild",
        }
    }
}

pub async fn run(connection: &Connection, args: ResolveArgs, json: bool) -> anyhow::Result<()> {
    if args.preloaded {
        check_preloaded(connection, args.guilds).await?;
    } else {
        set_up_routes(connection, &args).await?;
    }
    let connections = args.connections.max(1);
    let channels = try_join_all((0..connections).map(|_| connection.open_channel())).await?;
    let bare_channels = match &args.bare_addr {
        Some(addr) => {
            let endpoint = Endpoint::from_shared(addr.clone())?;
            try_join_all((0..connections).map(|_| endpoint.connect())).await?
        }
        None => Vec::new(),
    };
    let mut plan = vec![(Rpc::HealthCheck, &channels), (Rpc::Resolve, &channels)];
    if !bare_channels.is_empty() {
        plan.insert(0, (Rpc::BareHealthCheck, &bare_channels));
    }
    let mut measured: Vec<Measured> =
        plan.iter().map(|&(rpc, _)| Measured::new(rpc.name())).collect();
    let slice = args.duration / args.rounds;
    for round in 0..args.rounds {
        let warmup = if round == 0 { args.warmup } else { Duration::ZERO };
        for (total, &(rpc, channels)) in measured.iter_mut().zip(&plan) {
            let bearer = connection.bearer();
            total.add(measure(rpc, channels, bearer, &args, round, warmup, slice).await);
        }
    }
    for total in &mut measured {
        total.latencies.sort_unstable();
    }
    let resolve = measured.pop().expect("ResolveGuild is measured");
    let noop = measured.pop().expect("Health/Check is measured");
    let bare = measured.pop();
    report(&args, bare.as_ref(), &noop, &resolve, json);
    let errors = bare.map_or(0, |bare| bare.errors) + noop.errors + resolve.errors;
    anyhow::ensure!(errors == 0, "{errors} requests failed");
    Ok(())
}

/// With `--preloaded`: the first and the last guild must resolve to a sandbox (the table is
/// loaded whole, so both mean all are there).
async fn check_preloaded(connection: &Connection, guilds: u64) -> anyhow::Result<()> {
    let request = ResolveGuildsRequest { guild_ids: vec!["1".into(), guilds.to_string()] };
    let routes = connection.routing().resolve_guilds(request).await?.into_inner().routes;
    let unrouted: Vec<String> = routes
        .into_iter()
        .filter(|route| route.target() != RouteTarget::Sandbox)
        .map(|route| route.guild_id)
        .collect();
    anyhow::ensure!(
        unrouted.is_empty(),
        "--preloaded, but guild(s) {} resolve to no sandbox; map guilds 1..={guilds} first",
        unrouted.join(", ")
    );
    Ok(())
}

/// Maps guilds 1..=N to one sandbox (registering is idempotent, so reruns are quick to verify).
async fn set_up_routes(connection: &Connection, args: &ResolveArgs) -> anyhow::Result<()> {
    let ensure = EnsureSandboxRequest {
        template: "discord-guild".into(),
        name: args.sandbox.clone(),
        ..Default::default()
    };
    let sandbox =
        connection.control().ensure_sandbox(ensure).await?.into_inner().sandbox.unwrap_or_default();
    if count_routes(connection, &sandbox.sandbox_id).await? >= args.guilds {
        eprintln!("{} guilds are mapped already", args.guilds);
        return Ok(());
    }
    let started = Instant::now();
    let workers = 32u64;
    let tasks = (0..workers).map(|worker| {
        let (mut routing, sandbox_id, guilds) =
            (connection.routing(), sandbox.sandbox_id.clone(), args.guilds);
        async move {
            let mut guild = worker + 1;
            while guild <= guilds {
                let request = RegisterGuildRequest {
                    guild_id: guild.to_string(),
                    sandbox_id: sandbox_id.clone(),
                };
                routing.register_guild(request).await?;
                guild += workers;
            }
            Ok::<_, tonic::Status>(())
        }
    });
    for result in join_all(tasks).await {
        result?;
    }
    eprintln!(
        "mapped {} guilds to {} in {:.1}s",
        args.guilds,
        sandbox.sandbox_id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn count_routes(connection: &Connection, sandbox_id: &str) -> anyhow::Result<u64> {
    let mut request = ListGuildRoutesRequest {
        sandbox_id: sandbox_id.to_string(),
        page_size: 1000,
        ..Default::default()
    };
    let mut count = 0;
    loop {
        let page = connection.routing().list_guild_routes(request.clone()).await?.into_inner();
        count += page.guild_routes.len() as u64;
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        request.page_token = page.next_page_token;
    }
}

/// One slice: `args.concurrency` workers call `rpc` back to back for `warmup + duration`; the
/// latencies of calls started after the warmup are kept (unsorted). `round` varies the guilds
/// asked for, so no slice repeats another's lookups.
async fn measure(
    rpc: Rpc,
    channels: &[Channel],
    bearer: Bearer,
    args: &ResolveArgs,
    round: u32,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let warm_until = Instant::now() + warmup;
    let stop_at = warm_until + duration;
    let workers = (0..args.concurrency).map(|worker| {
        let channel = channels[worker % channels.len()].clone();
        let mut health = HealthClient::new(channel.clone());
        let mut routing: GuildRoutingClient<InterceptedService<Channel, Bearer>> =
            GuildRoutingClient::with_interceptor(channel, bearer.clone());
        let guilds = args.guilds.max(1);
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            // xorshift: cheap, deterministic per worker, spreads lookups over every guild.
            let mut state =
                0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1 + u64::from(round) * (1 << 32));
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let ok = match rpc {
                    Rpc::BareHealthCheck | Rpc::HealthCheck => {
                        health.check(HealthCheckRequest { service: String::new() }).await.is_ok()
                    }
                    Rpc::Resolve => {
                        let request =
                            ResolveGuildRequest { guild_id: (state % guilds + 1).to_string() };
                        routing.resolve_guild(request).await.is_ok_and(|response| {
                            response
                                .into_inner()
                                .route
                                .is_some_and(|route| route.target() == RouteTarget::Sandbox)
                        })
                    }
                };
                if now >= warm_until {
                    latencies.push(now.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }
    });
    let results = join_all(workers).await;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for (worker_latencies, worker_errors) in results {
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    Measured { rpc: rpc.name(), requests: latencies.len(), errors, elapsed: duration, latencies }
}
