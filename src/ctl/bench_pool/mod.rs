//! `sandboxctl bench claims`: warm-pool claims against a running server, over the public API.
//!
//! Four parts, each printed as it finishes (or all as one JSON object with `--json`):
//!
//! - **warm**: at each concurrency N, rounds of B CreateSandbox calls on the pooled template (B
//!   defaults to the pool's `min_ready`): N clients take calls from a shared budget of B until it
//!   is spent, then every sandbox of the round is given back (ReleaseSandbox, or DestroySandbox
//!   with `--give-back destroy`; untimed, `--give-back-concurrency` at a time), and the next
//!   round starts once the pool holds B ready members again. Only the CreateSandbox calls are
//!   timed; claims/s is the round's claims over the round's time (first call sent → last
//!   answer), so the giving back does not dilute it. In release mode the pool is topped up by
//!   the releases; in destroy mode the reconciler's refill rebuilds it between rounds and is
//!   still provisioning while the next round claims.
//! - **cold**: the same rounds on a template without a pool (every create provisions), given
//!   back with DestroySandbox: the cold-create figures beside the warm ones.
//! - **burst**: as many simultaneous CreateSandbox calls as the pool holds ready (trimmed to its
//!   min_ready first), released at once behind a barrier, several times; p50/p99/max over all
//!   calls.
//! - **steady**: A agents loop claim → GetSandbox → ReleaseSandbox for a fixed time; the reuse
//!   rate is the change of the pool's hits and misses (GetPoolStatus) over the loop.
//!
//! Every part reports how many creates were answered `from_pool`, so a reader sees the pool was
//! really in play. Clients spread over several HTTP/2 connections and over the API keys of
//! `--keys-file` (one tenant/owner each), so neither an owner's quota lock nor a tenant's event
//! lock is shared by all clients. `scripts/bench-pool` sets up a server for it and measures the
//! raw claim UPDATE with pgbench on the same PostgreSQL (see BENCHMARKS.md).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tonic::Status;

use super::{Bearer, Client, Connection, output::describe_status, stats::percentile_ms};
use crate::proto::{
    CreateSandboxRequest, DestroySandboxRequest, GetPoolStatusRequest, GetSandboxRequest,
    PoolStatus, ReleaseSandboxRequest, SandboxState, get_sandbox_request::Selector,
    sandbox_control_client::SandboxControlClient,
};

mod report;
use report::*;

#[derive(Args)]
pub struct ClaimsArgs {
    /// Pooled template to claim from (its `[pool]` must be enabled).
    #[arg(long, default_value = "discord-guild")]
    template: String,
    /// Template without a pool, for the cold-create part; empty skips that part.
    #[arg(long, default_value = "")]
    cold_template: String,
    /// Concurrent clients of the warm and cold parts, comma-separated; each level runs separately.
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Vec<u32>,
    /// Creates per round (default: the pool's min_ready, so a round can be served from the pool).
    #[arg(long)]
    round_claims: Option<usize>,
    /// How the warm part gives a round's sandboxes back; comma-separated runs every mode in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "release")]
    give_back: Vec<GiveBack>,
    /// Measured time per warm level (rounds, including giving back and waiting for the pool).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    duration: Duration,
    /// Measured time per cold level.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    cold_duration: Duration,
    /// Unmeasured rounds before each warm and cold level.
    #[arg(long, default_value_t = 1)]
    warmup_rounds: u32,
    /// Bursts to run.
    #[arg(long, default_value_t = 5)]
    bursts: u32,
    /// Calls per burst: the pool is trimmed to this many ready members first (surplus members
    /// claimed and destroyed, untimed), and the burst fires one call per ready member. Default:
    /// the pool's min_ready; 0: no trimming, as many calls as happen to be ready.
    #[arg(long)]
    burst_width: Option<usize>,
    /// Give-backs (releases, destroys) in flight at once after a round or burst (untimed).
    /// Keep it below the server's database.max_connections (default 20): a release holds one
    /// pooled connection while it acquires a second, so as many concurrent releases as the
    /// pool has connections wait on each other until the acquire timeout.
    #[arg(long, default_value_t = 8)]
    give_back_concurrency: usize,
    /// Agents of the steady claim → use → release loop.
    #[arg(long, default_value_t = 16)]
    agents: u32,
    /// Length of the steady loop.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    steady_duration: Duration,
    /// Parts to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "warm,cold,burst,steady")]
    parts: Vec<Part>,
    /// API keys, one per line (`#` comments allowed); clients use them round robin. Give keys of
    /// different tenants/owners with a high enough quota. Default: only --api-key.
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// HTTP/2 connections the clients share (round robin).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Longest wait for the pool to hold enough ready members before a round or burst.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    refill_timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Warm,
    Cold,
    Burst,
    Steady,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum GiveBack {
    /// ReleaseSandbox: the sandbox goes back to the pool, reset.
    Release,
    /// DestroySandbox: the pool's refill has to provision a replacement.
    Destroy,
}

impl GiveBack {
    fn name(self) -> &'static str {
        match self {
            GiveBack::Release => "release",
            GiveBack::Destroy => "destroy",
        }
    }
}

/// A sandbox a client created, to be given back by that client (other tenants cannot see it).
struct Claimed {
    client: usize,
    sandbox_id: String,
}

/// Latencies of successful creates, split by whether the pool served them, and the failures.
#[derive(Default)]
struct Tally {
    from_pool: Vec<Duration>,
    provisioned: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    first_error: BTreeMap<String, String>,
}

impl Tally {
    fn record(&mut self, latency: Duration, outcome: &Result<(String, bool), Status>) {
        match outcome {
            Ok((_, true)) => self.from_pool.push(latency),
            Ok((_, false)) => self.provisioned.push(latency),
            Err(status) => self.error(status),
        }
    }

    fn error(&mut self, status: &Status) {
        let code = format!("{:?}", status.code());
        *self.errors.entry(code.clone()).or_default() += 1;
        self.first_error.entry(code).or_insert_with(|| describe_status(status));
    }

    fn merge(&mut self, other: Tally) {
        self.from_pool.extend(other.from_pool);
        self.provisioned.extend(other.provisioned);
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (code, message) in other.first_error {
            self.first_error.entry(code).or_insert(message);
        }
    }

    fn sort(&mut self) {
        self.from_pool.sort_unstable();
        self.provisioned.sort_unstable();
    }

    fn creates(&self) -> usize {
        self.from_pool.len() + self.provisioned.len()
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn all(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> =
            self.from_pool.iter().chain(&self.provisioned).copied().collect();
        all.sort_unstable();
        all
    }
}

/// What giving sandboxes back produced.
#[derive(Default)]
struct Returned {
    /// Released and back in the pool (READY).
    pooled: usize,
    /// Destroyed (asked for, or the release destroyed it: pool full or unhealthy).
    destroyed: usize,
    /// Give-backs that failed (each was then destroyed, so nothing is left behind).
    failed: Tally,
    elapsed: Duration,
}

impl Returned {
    fn merge(&mut self, other: Returned) {
        self.pooled += other.pooled;
        self.destroyed += other.destroyed;
        self.failed.merge(other.failed);
        self.elapsed += other.elapsed;
    }
}

/// The clients: `clients[i]` talks over connection `i % connections` with key `i % keys`.
struct Bench {
    clients: Vec<Client>,
    status: Client,
    keys: usize,
    args: ClaimsArgs,
}

pub async fn run(connection: &Connection, args: ClaimsArgs, json: bool) -> anyhow::Result<()> {
    let keys = match &args.keys_file {
        Some(path) => read_keys(path)?,
        None => vec![connection.bearer()],
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connection.open_channel().await?);
    }
    let max_level = args.concurrency.iter().copied().max().unwrap_or(1);
    let count = max_level.max(args.agents).max(1) as usize;
    let clients = (0..count)
        .map(|i| {
            SandboxControlClient::with_interceptor(
                channels[i % channels.len()].clone(),
                keys[i % keys.len()].clone(),
            )
        })
        .collect();
    let bench = Bench { clients, status: connection.control(), keys: keys.len(), args };
    bench.run(json).await
}

fn read_keys(path: &std::path::Path) -> anyhow::Result<Vec<Bearer>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keys file {}", path.display()))?;
    let keys: Vec<Bearer> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|key| Bearer::new(Some(key)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!keys.is_empty(), "the keys file {} holds no key", path.display());
    Ok(keys)
}

impl Bench {
    async fn run(&self, json: bool) -> anyhow::Result<()> {
        let args = &self.args;
        let pool = self.pool_status(&args.template).await?;
        anyhow::ensure!(
            pool.enabled,
            "template {:?} has no warm pool (its [pool] is not enabled)",
            args.template
        );
        let budget = args.round_claims.unwrap_or(pool.min_ready.max(1) as usize).max(1);
        if !json {
            eprintln!(
                "bench claims: template {:?} (pool min_ready {}, max_size {}, {} ready now), \
                 {budget} creates per round, {} clients over {} keys",
                args.template,
                pool.min_ready,
                pool.max_size,
                pool.ready_count,
                self.clients.len(),
                self.keys
            );
        }
        let mut report = json!({
            "benchmark": "claims",
            "template": args.template,
            "cold_template": args.cold_template,
            "pool": {"min_ready": pool.min_ready, "max_size": pool.max_size},
            "round_claims": budget,
            "keys": self.keys,
            "connections": args.connections.max(1),
        });
        let mut failures = 0;
        if args.parts.contains(&Part::Warm) {
            let mut levels = Vec::new();
            for &mode in &args.give_back {
                if !json {
                    println!("\nwarm claims ({} after each round):", mode.name());
                    print_rounds_header();
                }
                for &n in &args.concurrency {
                    let level = self.rounds(&args.template, true, n as usize, budget, mode).await?;
                    failures += level.tally.error_count() + level.returned.failed.error_count();
                    if !json {
                        print_rounds_row(&level);
                    }
                    levels.push(level.json());
                }
            }
            report["warm"] = Value::Array(levels);
        }
        if args.parts.contains(&Part::Cold) && !args.cold_template.is_empty() {
            let mut levels = Vec::new();
            if !json {
                let template = &args.cold_template;
                println!("\ncold creates (template {template:?}, destroyed after each round):");
                print_rounds_header();
            }
            for &n in &args.concurrency {
                let level = self
                    .rounds(&args.cold_template, false, n as usize, budget, GiveBack::Destroy)
                    .await?;
                failures += level.tally.error_count() + level.returned.failed.error_count();
                if !json {
                    print_rounds_row(&level);
                }
                levels.push(level.json());
            }
            report["cold"] = Value::Array(levels);
        }
        if args.parts.contains(&Part::Burst) && args.bursts > 0 {
            let width = self.args.burst_width.unwrap_or(pool.min_ready.max(1) as usize);
            let burst = self.bursts(pool.min_ready.max(1) as usize, width).await?;
            failures += burst.tally.error_count() + burst.returned.failed.error_count();
            if !json {
                burst.print();
            }
            report["burst"] = burst.json();
        }
        if args.parts.contains(&Part::Steady) && args.agents > 0 {
            let steady = self.steady().await?;
            failures += steady.tally.error_count() + steady.returned.failed.error_count();
            if !json {
                steady.print(args.agents);
            }
            report["steady"] = steady.json(args.agents);
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        print_first_errors(&report);
        anyhow::ensure!(failures == 0, "{failures} calls failed (see the first errors above)");
        Ok(())
    }

    async fn pool_status(&self, template: &str) -> anyhow::Result<PoolStatus> {
        let request = GetPoolStatusRequest { template: template.to_string() };
        let mut status = self.status.clone();
        let pools = status.get_pool_status(request).await?.into_inner().pools;
        pools
            .into_iter()
            .find(|pool| pool.template == template)
            .with_context(|| format!("GetPoolStatus did not report template {template:?}"))
    }

    /// Waits until the pool holds at least `ready` ready members.
    async fn wait_for_ready(&self, template: &str, ready: usize) -> anyhow::Result<PoolStatus> {
        let deadline = Instant::now() + self.args.refill_timeout;
        loop {
            let pool = self.pool_status(template).await?;
            if pool.ready_count as usize >= ready {
                return Ok(pool);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pool of {template:?} held {} ready members, not {ready}, after {} \
                 (is pool_refill on and min_ready ≥ {ready}?)",
                pool.ready_count,
                humantime::format_duration(self.args.refill_timeout)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rounds of `budget` creates by `concurrency` clients, for the warm or the cold part.
    async fn rounds(
        &self,
        template: &str,
        pooled: bool,
        concurrency: usize,
        budget: usize,
        mode: GiveBack,
    ) -> anyhow::Result<Rounds> {
        let clients = &self.clients[..concurrency.min(self.clients.len())];
        let duration = if pooled { self.args.duration } else { self.args.cold_duration };
        let mut level = Rounds {
            template: template.to_string(),
            concurrency,
            mode,
            rounds: 0,
            measured: Duration::ZERO,
            tally: Tally::default(),
            returned: Returned::default(),
        };
        let mut round = 0u32;
        let mut deadline = None;
        loop {
            if round == self.args.warmup_rounds {
                deadline = Some(Instant::now() + duration);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            if pooled {
                self.wait_for_ready(template, budget).await?;
            }
            let (tally, claimed, elapsed) = create_round(clients, template, budget).await;
            let returned = give_back(clients, claimed, mode, self.args.give_back_concurrency).await;
            if round >= self.args.warmup_rounds {
                level.rounds += 1;
                level.measured += elapsed;
                level.tally.merge(tally);
                level.returned.merge(returned);
            }
            round += 1;
        }
        level.tally.sort();
        Ok(level)
    }

    /// `width` 0: as many calls as are ready, else the pool is trimmed to `width` ready first.
    async fn bursts(&self, min_ready: usize, width: usize) -> anyhow::Result<Burst> {
        let mut burst = Burst {
            sizes: Vec::new(),
            elapsed: Vec::new(),
            tally: Tally::default(),
            returned: Returned::default(),
        };
        for _ in 0..self.args.bursts {
            let wanted = if width == 0 { min_ready } else { width.min(min_ready) };
            self.wait_for_ready(&self.args.template, wanted).await?;
            // Let provisionings already under way land, then fire as many calls as are ready.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut size = self.pool_status(&self.args.template).await?.ready_count.max(1) as usize;
            if width > 0 && size > width {
                let trimmers = &self.clients[..self.clients.len().min(8)];
                let (_, surplus, _) =
                    create_round(trimmers, &self.args.template, size - width).await;
                give_back(trimmers, surplus, GiveBack::Destroy, self.args.give_back_concurrency)
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                size = self.pool_status(&self.args.template).await?.ready_count.max(1) as usize;
            }
            let barrier = Arc::new(tokio::sync::Barrier::new(size));
            let mut tasks = tokio::task::JoinSet::new();
            for call in 0..size {
                let index = call % self.clients.len();
                let mut client = self.clients[index].clone();
                let (template, barrier) = (self.args.template.clone(), barrier.clone());
                tasks.spawn(async move {
                    barrier.wait().await;
                    let started = Instant::now();
                    let outcome = create(&mut client, &template).await;
                    (index, started, Instant::now(), outcome)
                });
            }
            let (mut first, mut last) = (None::<Instant>, None::<Instant>);
            let mut claimed = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (client, started, finished, outcome) = joined?;
                first = Some(first.map_or(started, |first| first.min(started)));
                last = Some(last.map_or(finished, |last| last.max(finished)));
                burst.tally.record(finished - started, &outcome);
                if let Ok((sandbox_id, _)) = outcome {
                    claimed.push(Claimed { client, sandbox_id });
                }
            }
            burst.sizes.push(size);
            burst.elapsed.push(last.zip(first).map(|(l, f)| l - f).unwrap_or_default());
            let returned = give_back(
                &self.clients,
                claimed,
                GiveBack::Release,
                self.args.give_back_concurrency,
            )
            .await;
            burst.returned.merge(returned);
        }
        burst.tally.sort();
        Ok(burst)
    }

    async fn steady(&self) -> anyhow::Result<Steady> {
        let agents = (self.args.agents as usize).min(self.clients.len());
        let before = self.pool_status(&self.args.template).await?;
        let end = Instant::now() + self.args.steady_duration;
        // The pool's ready count, sampled through the loop.
        let sampler = {
            let (mut status, template) = (self.status.clone(), self.args.template.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < end {
                    let request = GetPoolStatusRequest { template: template.clone() };
                    if let Ok(response) = status.get_pool_status(request).await
                        && let Some(pool) = response.into_inner().pools.first()
                    {
                        samples.push(pool.ready_count);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                samples
            })
        };
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for client in &self.clients[..agents] {
            let (mut client, template) = (client.clone(), self.args.template.clone());
            tasks.spawn(async move {
                let mut agent = SteadyAgent::default();
                while Instant::now() < end {
                    agent.cycle(&mut client, &template).await;
                }
                agent
            });
        }
        let mut steady = Steady {
            cycles: 0,
            elapsed: Duration::ZERO,
            tally: Tally::default(),
            release: Vec::new(),
            returned: Returned::default(),
            before: before.clone(),
            after: before,
            ready_samples: Vec::new(),
        };
        while let Some(agent) = tasks.join_next().await {
            let agent = agent?;
            steady.cycles += agent.cycles;
            steady.tally.merge(agent.tally);
            steady.release.extend(agent.release);
            steady.returned.merge(agent.returned);
        }
        steady.elapsed = started.elapsed();
        steady.after = self.pool_status(&self.args.template).await?;
        steady.ready_samples = sampler.await?;
        steady.tally.sort();
        steady.release.sort_unstable();
        Ok(steady)
    }
}

/// One CreateSandbox; the sandbox id and whether the pool served it.
async fn create(client: &mut Client, template: &str) -> Result<(String, bool), Status> {
    let request = CreateSandboxRequest { template: template.to_string(), ..Default::default() };
    let sandbox = client.create_sandbox(request).await?.into_inner();
    Ok((sandbox.sandbox_id, sandbox.from_pool))
}

/// `clients.len()` clients create until `budget` creates have been sent; returns the tally,
/// what was created, and the time from the first call sent to the last answer.
async fn create_round(
    clients: &[Client],
    template: &str,
    budget: usize,
) -> (Tally, Vec<Claimed>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let (mut client, template, next) = (client.clone(), template.to_string(), next.clone());
        tasks.spawn(async move {
            let (mut tally, mut claimed, mut last) = (Tally::default(), Vec::new(), None);
            while next.fetch_add(1, Ordering::Relaxed) < budget {
                let sent = Instant::now();
                let outcome = create(&mut client, &template).await;
                let answered = Instant::now();
                last = Some(answered);
                tally.record(answered - sent, &outcome);
                if let Ok((sandbox_id, _)) = outcome {
                    claimed.push(Claimed { client: index, sandbox_id });
                }
            }
            (tally, claimed, last)
        });
    }
    let (mut tally, mut claimed, mut last) = (Tally::default(), Vec::new(), started);
    while let Some(joined) = tasks.join_next().await {
        let Ok((one_tally, one_claimed, one_last)) = joined else { continue };
        tally.merge(one_tally);
        claimed.extend(one_claimed);
        last = last.max(one_last.unwrap_or(started));
    }
    (tally, claimed, last - started)
}

/// Gives sandboxes back, each through the client that created it, the clients in parallel.
/// At most `concurrency` give-backs are in flight at once.
async fn give_back(
    clients: &[Client],
    claimed: Vec<Claimed>,
    mode: GiveBack,
    concurrency: usize,
) -> Returned {
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut per_client: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
    for claim in claimed {
        per_client[claim.client].push(claim.sandbox_id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (client, ids) in clients.iter().zip(per_client).filter(|(_, ids)| !ids.is_empty()) {
        let (mut client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let mut returned = Returned::default();
            for id in ids {
                let Ok(_permit) = permits.acquire().await else { break };
                return_one(&mut client, id, mode, &mut returned).await;
            }
            returned
        });
    }
    let mut returned = Returned::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(one) = joined {
            returned.merge(one);
        }
    }
    returned.elapsed = started.elapsed();
    returned
}

/// Releases or destroys one sandbox; a failed release is followed by a destroy so nothing is
/// left holding quota.
async fn return_one(client: &mut Client, sandbox_id: String, mode: GiveBack, into: &mut Returned) {
    if mode == GiveBack::Release {
        let request = ReleaseSandboxRequest { sandbox_id: sandbox_id.clone(), etag: String::new() };
        match client.release_sandbox(request).await {
            Ok(response) if response.get_ref().state() == SandboxState::Ready => {
                into.pooled += 1;
                return;
            }
            Ok(_) => {
                into.destroyed += 1;
                return;
            }
            Err(status) => into.failed.error(&status),
        }
    }
    let request = DestroySandboxRequest {
        sandbox_id,
        reason: "sandboxctl bench claims".into(),
        ..Default::default()
    };
    match client.destroy_sandbox(request).await {
        Ok(_) => into.destroyed += 1,
        Err(status) => into.failed.error(&status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_splits_pool_hits_from_provisioned_creates() {
        let mut tally = Tally::default();
        tally.record(Duration::from_millis(3), &Ok((String::new(), true)));
        tally.record(Duration::from_millis(9), &Ok((String::new(), false)));
        tally.record(Duration::from_millis(1), &Ok((String::new(), true)));
        tally.record(Duration::from_millis(5), &Err(Status::unavailable("down")));
        tally.sort();
        assert_eq!(tally.creates(), 3);
        assert_eq!(tally.from_pool, [Duration::from_millis(1), Duration::from_millis(3)]);
        assert_eq!(tally.all().last(), Some(&Duration::from_millis(9)));
        assert_eq!(errors_text(&tally, &Returned::default()), "Unavailable:1");
    }

    #[test]
    fn reuse_rate_is_the_change_of_hits_and_misses() {
        let before = PoolStatus { hits: 10, misses: 5, ..Default::default() };
        let after = PoolStatus { hits: 100, misses: 15, ..Default::default() };
        let steady = Steady {
            cycles: 0,
            elapsed: Duration::from_secs(1),
            tally: Tally::default(),
            release: Vec::new(),
            returned: Returned::default(),
            before,
            after,
            ready_samples: vec![3, 1, 7],
        };
        assert_eq!((steady.hits(), steady.misses()), (90, 10));
        assert!((steady.reuse_rate() - 0.9).abs() < 1e-9);
        assert_eq!(min_max(&steady.ready_samples), (1, 7));
    }
}
