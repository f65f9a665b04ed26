//! `sandboxctl bench router` (run by scripts/bench-router): routes `--events` events through
//! the event router and through a plain consume-and-republish loop (see `bench_router_sides`),
//! in alternating rounds on the same JetStream server, and prints events/s of each, their
//! ratio, and the latency one event adds (publish → arrival at its destination, one event at a
//! time, so no queue is measured).
//!
//! Setup, all through the public API: a sandbox with `--routed` guilds registered (the events'
//! guild ids are uniform over `--guilds`, so about routed/guilds of them go to the sandbox),
//! streams under a fresh namespace (deleted at the end), `--events` preloaded into the source.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self, Context,
    message::PublishMessage,
    stream::{Config, StorageType},
};
use clap::Args;
use futures::{StreamExt, stream::FuturesUnordered};
use rand::Rng;
use serde_json::json;

use super::{
    Connection,
    bench_router_sides::{self as sides, PLAIN_PREFIX, Side},
    stats::{millis, percentile_ms},
};
use crate::{
    config::SecretUrl,
    proto::{CreateSandboxRequest, DestroySandboxRequest, RegisterGuildRequest},
    router::RouterConfig,
};

#[derive(Args)]
pub struct RouterArgs {
    /// NATS server with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Events routed per side and round.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Guild ids of the events: uniform over 1..=N.
    #[arg(long, default_value_t = 1000)]
    guilds: u64,
    /// Guilds 1..=N are registered to the benchmark's sandbox.
    #[arg(long, default_value_t = 100)]
    routed: u64,
    /// Rounds; each runs both sides (the first side alternates).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Republishes in flight, the same for both sides.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Events sent one at a time per side for the latency figures (after 50 unmeasured).
    #[arg(long, default_value_t = 1000)]
    latency_events: usize,
    /// JetStream storage of every stream: file or memory.
    #[arg(long, default_value = "file")]
    storage: String,
}

struct Bench {
    js: Context,
    ns: String,
    storage: StorageType,
    template: RouterConfig,
}

impl Bench {
    fn stream(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.ns.to_uppercase())
    }

    /// (Re)creates a stream, empty and with a fresh duplicate window.
    async fn fresh_stream(&self, suffix: &str, subject: String) -> anyhow::Result<()> {
        let name = self.stream(suffix);
        let _ = self.js.delete_stream(&name).await;
        let config = Config {
            name: name.clone(),
            subjects: vec![subject],
            storage: self.storage,
            ..Default::default()
        };
        self.js.create_stream(config).await.with_context(|| format!("creating stream {name}"))?;
        Ok(())
    }

    /// Empty destination streams for a side.
    async fn fresh_destinations(&self) -> anyhow::Result<()> {
        let ns = &self.ns;
        self.fresh_stream("PROD", format!("prod.{ns}.>")).await?;
        self.fresh_stream("SBX", format!("sandbox.*.{ns}.>")).await?;
        self.fresh_stream("DLQ", format!("{ns}.dead-letter")).await?;
        self.fresh_stream("BASE", format!("{PLAIN_PREFIX}{ns}.>")).await
    }

    fn config(&self, source: &str, phase: &str, durable: String) -> RouterConfig {
        RouterConfig {
            stream: self.stream(source),
            subject: format!("{}.{phase}.>", self.ns),
            durable,
            ..self.template.clone()
        }
    }

    async fn delete_all(&self) {
        for suffix in ["TP", "LAT", "PROD", "SBX", "DLQ", "BASE"] {
            let _ = self.js.delete_stream(self.stream(suffix)).await;
        }
    }
}

fn payload(n: usize, guild: u64) -> Vec<u8> {
    json!({"op": 0, "t": "MESSAGE_CREATE", "s": n, "guild_id": guild.to_string(),
           "d": {"id": format!("{}", 1_000_000_000_000 + n), "channel_id": "1000000000000001",
                 "content": "hello from the router benchmark", "author": {"id": "1000000000000002", "username": "bench"}}})
    .to_string()
    .into_bytes()
}

/// Publishes `count` events (pipelined, every ack awaited).
async fn preload(js: &Context, subject: &str, count: usize, guilds: u64) -> anyhow::Result<()> {
    let mut rng = rand::rng();
    let mut acks = FuturesUnordered::new();
    for n in 0..count {
        let guild = rng.random_range(1..=guilds);
        let message =
            PublishMessage::build().payload(payload(n, guild).into()).message_id(format!("tp-{n}"));
        acks.push(js.send_publish(subject.to_string(), message).await?.into_future());
        if acks.len() >= 1024 {
            acks.next().await.context("an ack")??;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(())
}

/// CPU seconds this process used so far (utime + stime from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5), counted after the ")" that ends the command name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Throughput {
    seconds: f64,
    cpu_seconds: f64,
}

async fn throughput(
    bench: &Bench,
    side: Side,
    round: usize,
    events: usize,
) -> anyhow::Result<Throughput> {
    bench.fresh_destinations().await?;
    let config = bench.config("TP", "tp", format!("{}-{round}", side_name(side)));
    let cpu = cpu_seconds();
    let started = Instant::now();
    let running = sides::start(side, &bench.js, config).await?;
    while running.done() < events as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{} did not finish within 600 s",
            side.label()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds() - cpu;
    running.stop().await?;
    Ok(Throughput { seconds, cpu_seconds })
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Plain => "plain",
        Side::Router => "router",
    }
}

/// Publish → arrival of single events at the side's destination, sorted.
async fn latency(
    bench: &Bench,
    side: Side,
    count: usize,
    guilds: u64,
) -> anyhow::Result<Vec<Duration>> {
    bench.fresh_stream("LAT", format!("{}.lat.>", bench.ns)).await?;
    bench.fresh_destinations().await?;
    let client = bench.js.client();
    let ns = &bench.ns;
    let mut arrivals = futures::stream::select_all([
        client.subscribe(format!("prod.{ns}.>")).await?,
        client.subscribe(format!("sandbox.*.{ns}.>")).await?,
        client.subscribe(format!("{PLAIN_PREFIX}{ns}.>")).await?,
    ]);
    client.flush().await?;
    let running = sides::start(
        side,
        &bench.js,
        bench.config("LAT", "lat", format!("{}-lat", side_name(side))),
    )
    .await?;
    let subject = format!("{ns}.lat.discord.events.MESSAGE_CREATE");
    let mut rng = rand::rng();
    let mut samples = Vec::with_capacity(count);
    for n in 0..count + 50 {
        let guild = rng.random_range(1..=guilds);
        let message = PublishMessage::build()
            .payload(payload(n, guild).into())
            .message_id(format!("lat-{n}"));
        let sent = Instant::now();
        let ack = bench.js.send_publish(subject.clone(), message).await?;
        let arrived = tokio::time::timeout(Duration::from_secs(30), arrivals.next())
            .await
            .context("an event did not arrive within 30 s")?
            .context("the subscription ended")?;
        let elapsed = sent.elapsed();
        ack.await?;
        let id = arrived
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string());
        anyhow::ensure!(
            id.as_deref() == Some(format!("lat-{n}").as_str()),
            "unexpected arrival {id:?}"
        );
        if n >= 50 {
            samples.push(elapsed);
        }
    }
    running.stop().await?;
    samples.sort();
    Ok(samples)
}

pub async fn run(connection: &Connection, args: RouterArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.routed <= args.guilds && args.guilds > 0,
        "--routed must be at most --guilds"
    );
    let storage = match args.storage.as_str() {
        "file" => StorageType::File,
        "memory" => StorageType::Memory,
        other => anyhow::bail!("--storage {other:?}: file or memory"),
    };
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats))?;
    let js = jetstream::new(client);
    let sandbox = connection
        .control()
        .create_sandbox(CreateSandboxRequest {
            template: "discord-guild".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sandbox_id;
    let mut routing = connection.routing();
    for guild in 1..=args.routed {
        let request =
            RegisterGuildRequest { guild_id: guild.to_string(), sandbox_id: sandbox.clone() };
        routing.register_guild(request).await?;
    }
    let ns = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let template = RouterConfig {
        sandboxd_addr: connection.addr().to_string(),
        sandboxd_tls: connection.tls().clone(),
        api_key: connection.api_key().clone(),
        nats_url: SecretUrl::new(args.nats.clone()),
        dead_letter_subject: format!("{ns}.dead-letter"),
        max_in_flight: args.max_in_flight,
        stats_interval: Duration::from_secs(3600),
        ..RouterConfig::default()
    };
    let bench = Bench { js, ns, storage, template };
    let result = measure(&bench, &args, json).await;
    bench.delete_all().await;
    let destroy = DestroySandboxRequest { sandbox_id: sandbox, ..Default::default() };
    connection.control().destroy_sandbox(destroy).await?;
    result
}

async fn measure(bench: &Bench, args: &RouterArgs, json: bool) -> anyhow::Result<()> {
    bench.fresh_stream("TP", format!("{}.tp.>", bench.ns)).await?;
    let subject = format!("{}.tp.discord.events.MESSAGE_CREATE", bench.ns);
    preload(&bench.js, &subject, args.events, args.guilds).await?;
    let mut totals = [(Side::Plain, 0.0, 0.0), (Side::Router, 0.0, 0.0)];
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let order =
            if round % 2 == 1 { [Side::Plain, Side::Router] } else { [Side::Router, Side::Plain] };
        let mut rates = [0.0; 2];
        for side in order {
            let measured = throughput(bench, side, round, args.events).await?;
            let index = usize::from(side == Side::Router);
            totals[index].1 += measured.seconds;
            totals[index].2 += measured.cpu_seconds;
            rates[index] = args.events as f64 / measured.seconds;
            if !json {
                println!(
                    "round {round}: {:<10} {:>9.0} events/s ({:.2} s, {:.1} µs of this process's CPU per event)",
                    side.label(),
                    rates[index],
                    measured.seconds,
                    measured.cpu_seconds * 1e6 / args.events as f64
                );
            }
        }
        rounds.push(rates[1] / rates[0]);
    }
    let events = (args.events * args.rounds) as f64;
    let plain_rate = events / totals[0].1;
    let router_rate = events / totals[1].1;
    let mut latencies = Vec::new();
    for side in [Side::Plain, Side::Router] {
        latencies.push(latency(bench, side, args.latency_events, args.guilds).await?);
    }
    let p50 = |i: usize| percentile_ms(&latencies[i], 0.50);
    let p99 = |i: usize| percentile_ms(&latencies[i], 0.99);
    let mean =
        |i: usize| millis(latencies[i].iter().sum::<Duration>() / latencies[i].len().max(1) as u32);
    let ratio = router_rate / plain_rate;
    if json {
        println!(
            "{:#}",
            json!({"events": args.events, "rounds": args.rounds, "routed_fraction": args.routed as f64 / args.guilds as f64,
                   "max_in_flight": args.max_in_flight, "storage": args.storage,
                   "plain_events_per_s": plain_rate, "router_events_per_s": router_rate, "ratio": ratio, "ratio_per_round": rounds,
                   "plain_cpu_us_per_event": totals[0].2 * 1e6 / events, "router_cpu_us_per_event": totals[1].2 * 1e6 / events,
                   "latency_ms": {"plain": {"p50": p50(0), "p99": p99(0), "mean": mean(0)},
                                  "router": {"p50": p50(1), "p99": p99(1), "mean": mean(1)}},
                   "added_latency_us": {"p50": (p50(1) - p50(0)) * 1000.0, "mean": (mean(1) - mean(0)) * 1000.0}})
        );
        return Ok(());
    }
    println!(
        "throughput over {} rounds of {} events: plain loop {plain_rate:.0} events/s, router {router_rate:.0} events/s, ratio {ratio:.2} (per round: {})",
        args.rounds,
        args.events,
        rounds.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ")
    );
    println!(
        "CPU of this process per event: plain loop {:.1} µs, router {:.1} µs",
        totals[0].2 * 1e6 / events,
        totals[1].2 * 1e6 / events
    );
    println!(
        "latency, {} events one at a time (publish → arrival): plain loop p50 {:.3} ms p99 {:.3} ms mean {:.3} ms; router p50 {:.3} ms p99 {:.3} ms mean {:.3} ms",
        args.latency_events,
        p50(0),
        p99(0),
        mean(0),
        p50(1),
        p99(1),
        mean(1)
    );
    println!(
        "added latency per event: {:.0} µs at p50, {:.0} µs mean",
        (p50(1) - p50(0)) * 1000.0,
        (mean(1) - mean(0)) * 1000.0
    );
    Ok(())
}
