//! `sandboxctl bench`: load generators against a running server, over the public API only.
//!
//! `bench lifecycle` runs N concurrent clients, each looping CreateSandbox → DestroySandbox
//! for a fixed time over one shared HTTP/2 channel, and reports the cycle rate and the
//! create-start → destroy-done latency. `scripts/bench-lifecycle` sets up a server for it and
//! compares the figures with pgbench on the same PostgreSQL (see BENCHMARKS.md).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};
use serde_json::json;
use tonic::Status;

use super::stats::{millis, percentile_ms};
use super::{Client, Connection};
use crate::proto::{CreateSandboxRequest, DestroySandboxRequest};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Create → destroy cycles at one or more concurrencies: cycles/s and latency percentiles.
    Lifecycle(LifecycleArgs),
    /// ResolveGuild over N mapped guilds beside a no-op RPC (health Check) as the ceiling.
    Resolve(super::bench_resolve::ResolveArgs),
    /// Warm-pool claims: latency and claims/s at several concurrencies beside cold creates,
    /// bursts as wide as the pool, and a steady claim → use → release loop with its reuse rate.
    Claims(super::bench_pool::ClaimsArgs),
    /// ListSandboxes: the first page beside a page far down (1,000 pages deep by default).
    Listing(super::bench_listing::ListingArgs),
    /// Exec round trip of `true` beside spawning the same bubblewrap command directly (run on
    /// the server's host).
    Exec(super::bench_exec::ExecArgs),
    /// Lock acquire + release cycles through gRPC and the library, distinct keys and one hot key.
    Locks(super::bench_locks::LocksArgs),
    /// Many sandboxes pushing to a few repositories at once (the GitPush load run).
    Git(super::bench_git::GitArgs),
    /// The event router over NATS JetStream beside a plain consume-and-republish loop.
    Router(super::bench_router::RouterArgs),
}

#[derive(Args)]
pub struct LifecycleArgs {
    /// Template to create the sandboxes from.
    #[arg(long, default_value = "discord-guild")]
    template: String,
    /// Concurrent clients, comma-separated; each level runs separately, in this order.
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: Vec<u32>,
    /// Measured time per concurrency level, e.g. 15s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    duration: Duration,
    /// Unmeasured time before each level (connections, caches, pools warm up), e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// With --json: also list every cycle's latencies, so runs can be merged and percentiles
    /// taken over all of them (scripts/bench-lifecycle does).
    #[arg(long)]
    samples: bool,
}

pub async fn run(connection: &Connection, command: BenchCommand, json: bool) -> anyhow::Result<()> {
    match command {
        BenchCommand::Lifecycle(args) => lifecycle(connection.control(), args, json).await,
        BenchCommand::Resolve(args) => super::bench_resolve::run(connection, args, json).await,
        BenchCommand::Claims(args) => super::bench_pool::run(connection, args, json).await,
        BenchCommand::Listing(args) => super::bench_listing::run(connection, args, json).await,
        BenchCommand::Exec(args) => super::bench_exec::run(connection, args, json).await,
        BenchCommand::Locks(args) => super::bench_locks::run(connection, args, json).await,
        BenchCommand::Git(args) => super::bench_git::run(connection, args, json).await,
        BenchCommand::Router(args) => super::bench_router::run(connection, args, json).await,
    }
}

/// What one create → destroy cycle of a client produced.
struct Cycle {
    started: Instant,
    finished: Instant,
    outcome: Result<(Duration, Duration), String>,
}

/// Figures of one concurrency level.
struct LevelResult {
    concurrency: u32,
    cycles: usize,
    elapsed: Duration,
    /// Sorted, per successful cycle.
    total: Vec<Duration>,
    create: Vec<Duration>,
    destroy: Vec<Duration>,
    /// Failed cycles by gRPC code.
    errors: BTreeMap<String, u64>,
    /// The first message seen per gRPC code.
    first_error: BTreeMap<String, String>,
}

impl LevelResult {
    fn cycles_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.cycles as f64 / seconds } else { 0.0 }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

async fn lifecycle(client: Client, args: LifecycleArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be positive");
    let mut results = Vec::new();
    if !json {
        eprintln!(
            "bench lifecycle: template {:?}, {} per level after {} warmup",
            args.template,
            humantime::format_duration(args.duration),
            humantime::format_duration(args.warmup)
        );
        print_header();
    }
    for &concurrency in &args.concurrency {
        let result = run_level(&client, &args, concurrency).await?;
        if !json {
            print_row(&result);
        }
        results.push(result);
    }
    if json {
        let levels: Vec<_> =
            results.iter().map(|result| level_json(result, args.samples)).collect();
        let report = json!({
            "benchmark": "lifecycle",
            "template": args.template,
            "duration_seconds": args.duration.as_secs_f64(),
            "warmup_seconds": args.warmup.as_secs_f64(),
            "levels": levels,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let failed: u64 = results.iter().map(LevelResult::error_count).sum();
    for result in &results {
        for (code, message) in &result.first_error {
            eprintln!("concurrency {}: first {code} error: {message}", result.concurrency);
        }
    }
    anyhow::ensure!(failed == 0, "{failed} create → destroy cycles failed");
    Ok(())
}

/// Runs `concurrency` clients until warmup + duration has passed. Cycles that start during the
/// warmup are not counted; a cycle that starts before the end runs to completion (a sandbox is
/// never left behind), and the measured time runs until the last of those finishes.
async fn run_level(
    client: &Client,
    args: &LifecycleArgs,
    concurrency: u32,
) -> anyhow::Result<LevelResult> {
    let begin = Instant::now();
    let measure_from = begin + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let template = args.template.clone();
        tasks.spawn(async move {
            let mut cycles = Vec::new();
            while Instant::now() < end {
                let cycle = one_cycle(&mut client, &template).await;
                let failed = cycle.outcome.is_err();
                if cycle.started >= measure_from {
                    cycles.push(cycle);
                }
                if failed {
                    // Do not spin on a server that refuses every request.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            cycles
        });
    }
    let mut result = LevelResult {
        concurrency,
        cycles: 0,
        elapsed: Duration::ZERO,
        total: Vec::new(),
        create: Vec::new(),
        destroy: Vec::new(),
        errors: BTreeMap::new(),
        first_error: BTreeMap::new(),
    };
    let mut last_finish = measure_from;
    while let Some(cycles) = tasks.join_next().await {
        for cycle in cycles? {
            last_finish = last_finish.max(cycle.finished);
            match cycle.outcome {
                Ok((create, destroy)) => {
                    result.cycles += 1;
                    result.total.push(cycle.finished - cycle.started);
                    result.create.push(create);
                    result.destroy.push(destroy);
                }
                Err(code_and_message) => {
                    let (code, message) =
                        code_and_message.split_once('\n').unwrap_or((&code_and_message, ""));
                    *result.errors.entry(code.to_string()).or_default() += 1;
                    result.first_error.entry(code.to_string()).or_insert_with(|| message.into());
                }
            }
        }
    }
    result.elapsed = last_finish - measure_from;
    result.total.sort_unstable();
    result.create.sort_unstable();
    result.destroy.sort_unstable();
    Ok(result)
}

async fn one_cycle(client: &mut Client, template: &str) -> Cycle {
    let started = Instant::now();
    let outcome = create_and_destroy(client, template, started).await.map_err(|status| {
        format!("{:?}\n{}", status.code(), super::output::describe_status(&status))
    });
    Cycle { started, finished: Instant::now(), outcome }
}

async fn create_and_destroy(
    client: &mut Client,
    template: &str,
    started: Instant,
) -> Result<(Duration, Duration), Status> {
    let create = CreateSandboxRequest { template: template.to_string(), ..Default::default() };
    let sandbox = client.create_sandbox(create).await?.into_inner();
    let created = Instant::now();
    let destroy = DestroySandboxRequest {
        sandbox_id: sandbox.sandbox_id,
        reason: "sandboxctl bench".into(),
        ..Default::default()
    };
    client.destroy_sandbox(destroy).await?;
    Ok((created - started, created.elapsed()))
}

fn mean_ms(values: &[Duration]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    millis(values.iter().sum::<Duration>()) / values.len() as f64
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".into();
    }
    errors.iter().map(|(code, count)| format!("{code}:{count}")).collect::<Vec<_>>().join(",")
}

fn print_header() {
    println!(
        "{:>11} {:>8} {:>9} {:>8} {:>8} {:>8} {:>10} {:>11}  errors",
        "concurrency",
        "cycles",
        "cycles/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "create p50",
        "destroy p50"
    );
}

fn print_row(result: &LevelResult) {
    println!(
        "{:>11} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>11.2}  {}",
        result.concurrency,
        result.cycles,
        result.cycles_per_second(),
        percentile_ms(&result.total, 0.50),
        percentile_ms(&result.total, 0.99),
        result.total.last().copied().map(millis).unwrap_or(0.0),
        percentile_ms(&result.create, 0.50),
        percentile_ms(&result.destroy, 0.50),
        errors_text(&result.errors),
    );
}

fn level_json(result: &LevelResult, with_samples: bool) -> serde_json::Value {
    let mut level = json!({
        "concurrency": result.concurrency,
        "cycles": result.cycles,
        "elapsed_seconds": result.elapsed.as_secs_f64(),
        "cycles_per_second": result.cycles_per_second(),
        "latency_ms": {
            "mean": mean_ms(&result.total),
            "p50": percentile_ms(&result.total, 0.50),
            "p90": percentile_ms(&result.total, 0.90),
            "p99": percentile_ms(&result.total, 0.99),
            "max": result.total.last().copied().map(millis).unwrap_or(0.0),
        },
        "create_ms": {
            "p50": percentile_ms(&result.create, 0.50),
            "p99": percentile_ms(&result.create, 0.99),
        },
        "destroy_ms": {
            "p50": percentile_ms(&result.destroy, 0.50),
            "p99": percentile_ms(&result.destroy, 0.99),
        },
        "errors": result.errors,
        "first_errors": result.first_error,
    });
    if with_samples {
        let in_ms = |values: &[Duration]| values.iter().copied().map(millis).collect::<Vec<_>>();
        level["samples_ms"] = json!({
            "total": in_ms(&result.total),
            "create": in_ms(&result.create),
            "destroy": in_ms(&result.destroy),
        });
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&values, 0.50), 50.0);
        assert_eq!(percentile_ms(&values, 0.99), 99.0);
        assert_eq!(percentile_ms(&values, 1.0), 100.0);
        assert_eq!(percentile_ms(&[Duration::from_millis(7)], 0.99), 7.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn error_summary() {
        let mut errors = BTreeMap::new();
        assert_eq!(errors_text(&errors), "0");
        errors.insert("Unavailable".to_string(), 2);
        errors.insert("Aborted".to_string(), 1);
        assert_eq!(errors_text(&errors), "Aborted:1,Unavailable:2");
    }
}
