//! `sandboxctl bench resolve`: ResolveGuild against N mapped guilds at a fixed concurrency,
//! beside a no-op RPC of the same server (`grpc.health.v1.Health/Check`) driven by the same
//! client over the same connections, as the ceiling. Prints req/s and p50/p99/p999 of both and
//! their ratios.

use std::time::{Duration, Instant};

use clap::Args;
use futures::future::join_all;
use serde_json::json;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Bearer, Connection, stats::percentile_ms};
use crate::proto::{
    EnsureSandboxRequest, ListGuildRoutesRequest, RegisterGuildRequest, ResolveGuildRequest,
    RouteTarget, guild_routing_client::GuildRoutingClient,
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
    /// Unmeasured time before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Name of the sandbox the guilds are routed to (created when missing).
    #[arg(long, default_value = "bench-routes")]
    sandbox: String,
}

struct Measured {
    rpc: &'static str,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    HealthCheck,
    Resolve,
}

pub async fn run(connection: &Connection, args: ResolveArgs, json: bool) -> anyhow::Result<()> {
    set_up_routes(connection, &args).await?;
    let mut channels = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        channels.push(connection.open_channel().await?);
    }
    let noop = measure(Rpc::HealthCheck, &channels, connection.bearer(), &args).await;
    let resolve = measure(Rpc::Resolve, &channels, connection.bearer(), &args).await;
    report(&args, &noop, &resolve, json);
    if noop.errors + resolve.errors > 0 {
        anyhow::bail!("{} requests failed", noop.errors + resolve.errors);
    }
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

async fn measure(rpc: Rpc, channels: &[Channel], bearer: Bearer, args: &ResolveArgs) -> Measured {
    let name = match rpc {
        Rpc::HealthCheck => "grpc.health.v1.Health/Check",
        Rpc::Resolve => "ResolveGuild",
    };
    let warm_until = Instant::now() + args.warmup;
    let stop_at = warm_until + args.duration;
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
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1);
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let ok = match rpc {
                    Rpc::HealthCheck => {
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
    latencies.sort_unstable();
    Measured { rpc: name, requests: latencies.len(), errors, elapsed: args.duration, latencies }
}

fn report(args: &ResolveArgs, noop: &Measured, resolve: &Measured, json: bool) {
    let p99 = |m: &Measured| percentile_ms(&m.latencies, 0.99);
    let throughput_ratio = resolve.rate() / noop.rate();
    let p99_ratio = p99(resolve) / p99(noop);
    if json {
        let row = |m: &Measured| {
            json!({"rpc": m.rpc, "requests": m.requests, "errors": m.errors, "req_per_s": m.rate(),
                   "p50_ms": percentile_ms(&m.latencies, 0.50), "p99_ms": p99(m),
                   "p999_ms": percentile_ms(&m.latencies, 0.999)})
        };
        let report = json!({"concurrency": args.concurrency, "guilds": args.guilds,
                            "connections": args.connections, "duration_s": args.duration.as_secs_f64(),
                            "noop": row(noop), "resolve": row(resolve),
                            "throughput_ratio": throughput_ratio, "p99_ratio": p99_ratio});
        println!("{report:#}");
        return;
    }
    println!(
        "concurrency {}, {} mapped guilds, {} connection(s), {:?} per RPC",
        args.concurrency, args.guilds, args.connections, args.duration
    );
    println!(
        "{:<28} {:>10} {:>8} {:>9} {:>9} {:>9}",
        "RPC", "req/s", "errors", "p50 ms", "p99 ms", "p999 ms"
    );
    for m in [noop, resolve] {
        println!(
            "{:<28} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9.3}",
            m.rpc,
            m.rate(),
            m.errors,
            percentile_ms(&m.latencies, 0.50),
            p99(m),
            percentile_ms(&m.latencies, 0.999)
        );
    }
    println!(
        "throughput ratio {throughput_ratio:.2} (goal >= 0.80)   p99 ratio {p99_ratio:.2} (goal <= 1.50)"
    );
}
