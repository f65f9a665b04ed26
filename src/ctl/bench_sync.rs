//! `sandboxctl bench-sync` (hidden): the workspace sync engine beside `aws s3 sync` and
//! `rclone sync` (default, `--checksum`, `--update --use-server-modtime`) on the same local S3
//! server: the in-process s3s-fs server, started here on 127.0.0.1 (plain HTTP) with a request
//! tap that counts what every tool sends, by HTTP method.
//!
//! One workspace of `--files` random files (random sizes, in nested directories) is pushed by
//! every tool into its own bucket, three times: fresh, after `--changed-percent` of the files
//! were rewritten, and unchanged. sandboxd also runs a fourth, unchanged push with a cold hash
//! cache (as after a restart), which reads and hashes every file. Tools run one at a time, each
//! row in the same order; peers are child processes, so the server keeps serving on this
//! process's runtime.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use clap::Args;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::{
    config::S3Config,
    dev::{InProcessS3, RequestTap},
    workspace::sync::{self, HashCache, SyncRequest, SyncSettings, SyncTarget},
};

#[derive(Args)]
pub struct BenchSyncArgs {
    /// Files in the workspace.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Smallest and largest file size, in bytes (uniformly random in between).
    #[arg(long, default_value_t = 1024)]
    min_size: usize,
    #[arg(long, default_value_t = 16 * 1024)]
    max_size: usize,
    /// Percentage of files rewritten (new content and size) before the second push.
    #[arg(long, default_value_t = 1.0)]
    changed_percent: f64,
    /// Tools to run, in this order within each row.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sandboxd,rclone,rclone-checksum,rclone-update,aws"
    )]
    tools: Vec<String>,
    /// sandboxd's request concurrency (`[sync] concurrency`).
    #[arg(long, default_value_t = SyncSettings::default().concurrency)]
    concurrency: usize,
    #[arg(long, default_value = "rclone")]
    rclone: PathBuf,
    #[arg(long, default_value = "aws")]
    aws: PathBuf,
    /// Directory for the workspace and the server's data (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the file generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rounds of all rows and tools (fresh buckets each round, the tool order rotated); the
    /// table shows each cell's median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

const ROWS: [&str; 4] = ["fresh", "1% changed", "unchanged", "unchanged, cold cache"];

/// One tool's run of one row.
struct Run {
    elapsed: Duration,
    requests: BTreeMap<String, u64>,
    /// CPU time of this process (the S3 server, and sandboxd's push when it is the tool).
    server_cpu: Duration,
    /// CPU time of the peer's process.
    tool_cpu: Duration,
}

pub async fn run(args: BenchSyncArgs, json_output: bool) -> anyhow::Result<()> {
    // RUST_LOG=sandboxd::workspace=debug shows each push's phases (scan, transfers, manifest).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    ensure!(
        args.files > 0 && args.min_size >= 1 && args.min_size <= args.max_size,
        "need --files > 0 and 1 <= --min-size <= --max-size"
    );
    for tool in &args.tools {
        ensure!(
            ["sandboxd", "rclone", "rclone-checksum", "rclone-update", "aws"]
                .contains(&tool.as_str()),
            "unknown tool {tool:?}"
        );
    }
    let temp = match &args.dir {
        Some(dir) => tempfile::Builder::new().prefix("bench-sync-").tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("bench-sync-").tempdir()?,
    };
    let workspace = temp.path().join("workspace");
    let started = Instant::now();
    let bytes = generate(&workspace, &args)?;
    eprintln!(
        "bench-sync: {} files, {:.1} MiB in {} ({:.1} s to write)",
        args.files,
        bytes as f64 / 1048576.0,
        workspace.display(),
        started.elapsed().as_secs_f64()
    );

    let tap = RequestTap::new();
    let server = InProcessS3::start_with_tap(&temp.path().join("s3"), tap.clone()).await?;
    let mut config = S3Config::default();
    server.apply(&mut config);
    let client = crate::objectstore::client(&config).await;
    let peers = Peers { args: &args, config: &config, workspace: &workspace };
    let cache = HashCache::new();
    let settings = SyncSettings { concurrency: args.concurrency, ..SyncSettings::default() };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut results: BTreeMap<(usize, String), Vec<Run>> = BTreeMap::new();
    for round in 0..args.rounds {
        eprintln!("round {}", round + 1);
        for tool in &args.tools {
            crate::objectstore::ensure_bucket(&client, &bucket(tool, round)).await?;
        }
        // Fresh means nothing known: not even the hash cache.
        cache.clear();
        let mut order = args.tools.clone();
        let shift = round as usize % order.len();
        order.rotate_left(shift);
        for (row, name) in ROWS.iter().enumerate() {
            if row == 1 {
                let changed = change(&workspace, &args, round)?;
                eprintln!("rewrote {changed} files");
            }
            for tool in &order {
                if row == 3 && tool != "sandboxd" {
                    continue;
                }
                if row == 3 {
                    cache.clear();
                }
                tap.reset();
                let cpu_before = cpu_times()?;
                let began = Instant::now();
                match tool.as_str() {
                    "sandboxd" => {
                        let target = SyncTarget {
                            client: client.clone(),
                            bucket: bucket(tool, round),
                            prefix: "ws/".into(),
                        };
                        let report = sync::push(
                            &workspace,
                            &target,
                            &SyncRequest::mirror(),
                            &settings,
                            &cache,
                        )
                        .await
                        .with_context(|| format!("sandboxd push ({name})"))?;
                        eprintln!("  {name:<22} sandboxd: {report:?}");
                    }
                    peer => {
                        peers.run(peer, round).await.with_context(|| format!("{peer} ({name})"))?
                    }
                }
                let elapsed = began.elapsed();
                let cpu_after = cpu_times()?;
                let server_cpu = cpu_after.0.saturating_sub(cpu_before.0);
                let tool_cpu = cpu_after.1.saturating_sub(cpu_before.1);
                let requests = by_method(&tap.counts());
                eprintln!(
                    "  {name:<22} {tool:<16} {:>8.3} s  cpu: this process {:.2} s, tool {:.2} s  {requests:?}",
                    elapsed.as_secs_f64(),
                    server_cpu.as_secs_f64(),
                    tool_cpu.as_secs_f64()
                );
                let run = Run { elapsed, requests, server_cpu, tool_cpu };
                results.entry((row, tool.clone())).or_default().push(run);
            }
        }
        verify(&client, &args, round).await?;
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = format!(
        "load average before {} / after {}",
        first_field(&load_before),
        first_field(&load_after)
    );

    if json_output {
        let rows: Vec<_> = results
            .iter()
            .flat_map(|((row, tool), runs)| runs.iter().map(move |run| (row, tool, run)))
            .map(|(row, tool, run)| {
                json!({
                    "row": ROWS[*row],
                    "tool": tool,
                    "seconds": run.elapsed.as_secs_f64(),
                    "requests": run.requests,
                    "bench_process_cpu_seconds": run.server_cpu.as_secs_f64(),
                    "tool_cpu_seconds": run.tool_cpu.as_secs_f64(),
                })
            })
            .collect();
        let report = json!({
            "benchmark": "sync",
            "files": args.files,
            "bytes": bytes,
            "rounds": args.rounds,
            "load": load,
            "runs": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&args, bytes, &load, &results);
    }
    Ok(())
}

/// (CPU time of this process, CPU time of its waited-for children), from `/proc/self/stat`.
fn cpu_times() -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> =
        after.split_whitespace().map(|field| field.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14–17 of the line: index = field − 3 here.
    let ticks = |index: usize| fields.get(index).copied().unwrap_or(0);
    let tick = Duration::from_millis(10); // USER_HZ is 100 on Linux
    let own = tick * u32::try_from(ticks(11) + ticks(12)).unwrap_or(u32::MAX);
    let children = tick * u32::try_from(ticks(13) + ticks(14)).unwrap_or(u32::MAX);
    Ok((own, children))
}

fn bucket(tool: &str, round: u32) -> String {
    format!("bench-{tool}-r{round}")
}

fn first_field(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("?")
}

/// Writes the workspace: files spread over 10 × 10 nested directories. Returns the bytes.
fn generate(workspace: &Path, args: &BenchSyncArgs) -> anyhow::Result<u64> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut total = 0;
    for index in 0..args.files {
        let path = workspace.join(file_name(index));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let content = random_content(&mut rng, args);
        total += content.len() as u64;
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(total)
}

fn file_name(index: usize) -> String {
    format!("src{}/mod{}/file{index:05}.bin", index % 10, (index / 10) % 10)
}

fn random_content(rng: &mut StdRng, args: &BenchSyncArgs) -> Vec<u8> {
    let mut content = vec![0u8; rng.random_range(args.min_size..=args.max_size)];
    rng.fill_bytes(&mut content);
    content
}

/// Rewrites every n-th file with new content and a new size; returns how many.
fn change(workspace: &Path, args: &BenchSyncArgs, round: u32) -> anyhow::Result<usize> {
    let count = ((args.files as f64 * args.changed_percent / 100.0).round() as usize).max(1);
    let step = (args.files / count).max(1);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed ^ u64::from(round));
    let mut changed = 0;
    for index in (0..args.files).step_by(step).take(count) {
        std::fs::write(workspace.join(file_name(index)), random_content(&mut rng, args))?;
        changed += 1;
    }
    Ok(changed)
}

/// Request labels (`PUT ?partNumber`) summed by HTTP method.
fn by_method(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut methods = BTreeMap::new();
    for (label, count) in counts {
        let method = label.split(' ').next().unwrap_or(label).to_string();
        *methods.entry(method).or_default() += count;
    }
    methods
}

struct Peers<'a> {
    args: &'a BenchSyncArgs,
    config: &'a S3Config,
    workspace: &'a Path,
}

impl Peers<'_> {
    async fn run(&self, tool: &str, round: u32) -> anyhow::Result<()> {
        let source = format!("{}/", self.workspace.display());
        let mut command = if tool == "aws" {
            let mut command = tokio::process::Command::new(&self.args.aws);
            command
                .args(["s3", "sync", &source, &format!("s3://{}/ws/", bucket(tool, round))])
                .args(["--endpoint-url", &self.config.endpoint, "--delete", "--only-show-errors"])
                .env("AWS_ACCESS_KEY_ID", &self.config.access_key_id)
                .env("AWS_SECRET_ACCESS_KEY", self.config.secret_access_key.expose())
                .env("AWS_DEFAULT_REGION", &self.config.region)
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
            command
        } else {
            let mut command = tokio::process::Command::new(&self.args.rclone);
            // s3s-fs needs the destination to end with `/`; `--fast-list` misbehaves on it.
            command
                .args(["sync", &source, &format!("bench:{}/ws/", bucket(tool, round)), "-q"])
                .args(["--config", "/dev/null"])
                .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
                .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
                .env("RCLONE_CONFIG_BENCH_ENV_AUTH", "false")
                .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &self.config.access_key_id)
                .env(
                    "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY",
                    self.config.secret_access_key.expose(),
                )
                .env("RCLONE_CONFIG_BENCH_ENDPOINT", &self.config.endpoint)
                .env("RCLONE_CONFIG_BENCH_REGION", &self.config.region)
                .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
                // The machine's CA bundle breaks rclone on a plain-HTTP endpoint.
                .env_remove("AWS_CA_BUNDLE");
            match tool {
                "rclone-checksum" => {
                    command.arg("--checksum");
                }
                "rclone-update" => {
                    command.args(["--update", "--use-server-modtime"]);
                }
                _ => {}
            }
            command
        };
        let output =
            command.kill_on_drop(true).output().await.with_context(|| format!("running {tool}"))?;
        if !output.status.success() {
            bail!(
                "{tool} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Every tool's bucket ends with one object per file (sandboxd's also holds its manifest).
async fn verify(
    client: &aws_sdk_s3::Client,
    args: &BenchSyncArgs,
    round: u32,
) -> anyhow::Result<()> {
    for tool in &args.tools {
        let mut objects = 0usize;
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(bucket(tool, round))
                .set_continuation_token(token)
                .send()
                .await
                .context("listing a bench bucket")?;
            objects += page.contents().len();
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        let expected = args.files + usize::from(tool == "sandboxd");
        ensure!(
            objects == expected,
            "{tool}: {objects} objects in its bucket, expected {expected}"
        );
    }
    Ok(())
}

fn median(runs: &[Run]) -> Duration {
    let mut times: Vec<Duration> = runs.iter().map(|run| run.elapsed).collect();
    times.sort();
    times[times.len() / 2]
}

fn print_table(
    args: &BenchSyncArgs,
    bytes: u64,
    load: &str,
    results: &BTreeMap<(usize, String), Vec<Run>>,
) {
    println!(
        "\n{} files, {:.1} MiB; {} cores ({load}); sandboxd concurrency {}; median of {} rounds\n",
        args.files,
        bytes as f64 / 1048576.0,
        std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        args.concurrency,
        args.rounds
    );
    let mut header = vec!["row".to_string()];
    header.extend(args.tools.iter().cloned());
    header.push("sandboxd / best peer".into());
    println!("| {} |", header.join(" | "));
    println!("|{}|", header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for (row, name) in ROWS.iter().enumerate() {
        let mut cells = vec![name.to_string()];
        for tool in &args.tools {
            cells.push(match results.get(&(row, tool.clone())) {
                Some(runs) => {
                    let last = &runs[runs.len() - 1];
                    let cpu = |pick: fn(&Run) -> Duration| {
                        runs.iter().map(pick).sum::<Duration>().as_secs_f64() / runs.len() as f64
                    };
                    format!(
                        "{:.2} s ({}; cpu {:.1} + {:.1} s)",
                        median(runs).as_secs_f64(),
                        describe(&last.requests),
                        cpu(|run| run.server_cpu),
                        cpu(|run| run.tool_cpu)
                    )
                }
                None => String::new(),
            });
        }
        let ours = results.get(&(row, "sandboxd".to_string())).map(|runs| median(runs));
        let best_peer = results
            .iter()
            .filter(|((r, tool), _)| *r == row.min(2) && tool != "sandboxd")
            .map(|(_, runs)| median(runs))
            .min();
        cells.push(match (ours, best_peer) {
            (Some(ours), Some(best)) => {
                let ratio = ours.as_secs_f64() / best.as_secs_f64().max(1e-9);
                format!("{ratio:.2} ({})", if ratio <= 0.5 { "goal met" } else { "goal MISSED" })
            }
            _ => String::new(),
        });
        println!("| {} |", cells.join(" | "));
    }
    println!(
        "\n(wall time: median over the rounds; requests counted at the server, by HTTP method, in \
         the last round; cpu: mean CPU time of this process (the S3 server, plus sandboxd's push \
         in its column) + of the peer's process; the cold-cache row is compared with the peers' \
         unchanged row)"
    );
}

fn describe(requests: &BTreeMap<String, u64>) -> String {
    if requests.is_empty() {
        return "no requests".into();
    }
    requests
        .iter()
        .map(|(method, count)| format!("{count} {method}"))
        .collect::<Vec<_>>()
        .join(", ")
}
