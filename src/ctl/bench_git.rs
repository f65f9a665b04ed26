//! `sandboxctl bench git`: the load run of many agents pushing at once. Sandboxes are spread
//! over templates (one repository each); every sandbox loops for the duration: write a file of
//! its own (WriteFile), then GitPush it with a message. Reports pushes attempted and landed,
//! push time and lock wait (p50/p99). `scripts/bench-git` counts the commits that really are on
//! the remote branches afterwards.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tonic::Code;

use super::{
    Connection,
    stats::{millis, percentile_ms},
};
use crate::proto::{
    CreateSandboxRequest, DestroySandboxRequest, GitPushRequest, WriteFileHeader, WriteFileRequest,
    write_file_request::Content,
};

#[derive(Args)]
pub struct GitArgs {
    /// Templates to spread the sandboxes over (each names its own repository).
    #[arg(long, value_delimiter = ',', required = true)]
    templates: Vec<String>,
    /// Sandboxes pushing at once.
    #[arg(long, default_value_t = 100)]
    sandboxes: usize,
    /// How long every sandbox keeps pushing.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
}

/// One GitPush request of the run.
struct Push {
    elapsed: Duration,
    lock_wait: Duration,
    result: Result<(), String>,
}

/// What one agent did.
#[derive(Default)]
struct Agent {
    pushes: Vec<Push>,
    /// Commits made (one per round; a push that fails still committed).
    commits: usize,
    /// Commits that a successful push carried to the remote.
    landed: usize,
}

/// How long after the run an agent keeps retrying its last unpushed commits.
const DRAIN: Duration = Duration::from_secs(90);

pub async fn run(connection: &Connection, args: GitArgs, json_out: bool) -> anyhow::Result<()> {
    let mut control = connection.control();
    let mut ids = Vec::new();
    let create_started = Instant::now();
    for index in 0..args.sandboxes {
        let template = args.templates[index % args.templates.len()].clone();
        let request = CreateSandboxRequest { template, ..Default::default() };
        ids.push(control.create_sandbox(request).await?.into_inner().sandbox_id);
    }
    eprintln!("created {} sandboxes in {:.1} s", ids.len(), create_started.elapsed().as_secs_f64());
    let deadline = Instant::now() + args.duration;
    let agents =
        ids.iter().enumerate().map(|(agent, id)| agent_loop(connection, agent, id, deadline));
    let agents: Vec<Agent> = futures::future::join_all(agents).await;
    for sandbox_id in ids {
        let request = DestroySandboxRequest { sandbox_id, ..Default::default() };
        control.destroy_sandbox(request).await?;
    }
    report(&args, &agents, json_out);
    Ok(())
}

/// Until the deadline: write a file, push it with a message. A push that fails with a
/// retryable code (ABORTED: lock wait over; UNAVAILABLE) is retried without a new commit, as an
/// agent would, until it lands (also after the deadline, for up to `DRAIN`).
async fn agent_loop(connection: &Connection, agent: usize, id: &str, deadline: Instant) -> Agent {
    let mut sync = connection.sync();
    let mut report = Agent::default();
    let mut pending = 0;
    let mut round = 0;
    loop {
        let now = Instant::now();
        let retrying = pending > 0;
        if (!retrying && now >= deadline) || now >= deadline + DRAIN {
            return report;
        }
        let message = if retrying {
            String::new()
        } else {
            round += 1;
            let path = format!("agent-{agent}/change-{round}.txt");
            let header = WriteFileHeader { sandbox_id: id.to_string(), path };
            let messages = [
                WriteFileRequest { content: Some(Content::Header(header)) },
                WriteFileRequest {
                    content: Some(Content::Chunk(format!("{agent} {round}\n").into_bytes())),
                },
            ];
            if let Err(status) = sync.write_file(futures::stream::iter(messages)).await {
                let result = Err(format!("WriteFile {:?}", status.code()));
                report.pushes.push(Push {
                    elapsed: Duration::ZERO,
                    lock_wait: Duration::ZERO,
                    result,
                });
                continue;
            }
            report.commits += 1;
            pending += 1;
            format!("agent {agent} change {round}")
        };
        let request = GitPushRequest { sandbox_id: id.to_string(), message, ..Default::default() };
        let started = Instant::now();
        let outcome = sync.git_push(request).await;
        let elapsed = started.elapsed();
        report.pushes.push(match outcome {
            Ok(response) => {
                let response = response.into_inner();
                let wait = response.lock_wait.unwrap_or_default();
                let lock_wait = Duration::new(wait.seconds.max(0) as u64, wait.nanos.max(0) as u32);
                report.landed += std::mem::take(&mut pending);
                Push { elapsed, lock_wait, result: Ok(()) }
            }
            Err(status) => {
                let result = Err(format!("{:?}: {}", status.code(), status.message()));
                if !matches!(
                    status.code(),
                    Code::Aborted | Code::Unavailable | Code::DeadlineExceeded
                ) {
                    // Not retryable: its commits stay unpushed.
                    pending = 0;
                }
                Push { elapsed, lock_wait: Duration::ZERO, result }
            }
        });
    }
}

fn report(args: &GitArgs, agents: &[Agent], json_out: bool) {
    let pushes: Vec<&Push> = agents.iter().flat_map(|agent| &agent.pushes).collect();
    let commits: usize = agents.iter().map(|agent| agent.commits).sum();
    let landed: usize = agents.iter().map(|agent| agent.landed).sum();
    let succeeded: Vec<&&Push> = pushes.iter().filter(|push| push.result.is_ok()).collect();
    let mut elapsed: Vec<Duration> = succeeded.iter().map(|push| push.elapsed).collect();
    let mut waits: Vec<Duration> = succeeded.iter().map(|push| push.lock_wait).collect();
    elapsed.sort_unstable();
    waits.sort_unstable();
    let failed = pushes.len() - succeeded.len();
    let mut failures: Vec<String> = pushes
        .iter()
        .filter_map(|push| push.result.as_ref().err())
        .map(|error| error.split(" until ").next().unwrap_or_default().to_string())
        .collect();
    failures.sort_unstable();
    failures.dedup();
    let share = if commits == 0 { 0.0 } else { 100.0 * landed as f64 / commits as f64 };
    let per_second = succeeded.len() as f64 / args.duration.as_secs_f64();
    if json_out {
        let value = json!({
            "sandboxes": args.sandboxes, "repositories": args.templates.len(),
            "commits": commits, "commits_landed": landed, "landed_percent": share,
            "push_requests": pushes.len(), "push_requests_failed": failed,
            "pushes_per_second": per_second,
            "push_p50_ms": percentile_ms(&elapsed, 0.5), "push_p99_ms": percentile_ms(&elapsed, 0.99),
            "lock_wait_p50_ms": percentile_ms(&waits, 0.5), "lock_wait_p99_ms": percentile_ms(&waits, 0.99),
            "failures": failures,
        });
        println!("{value}");
        return;
    }
    println!(
        "{} sandboxes, {} repositories, {:.0} s: commits made {commits}, landed {landed} ({share:.1} %); push requests {} ({failed} failed and retried), {per_second:.1} successful pushes/s",
        args.sandboxes,
        args.templates.len(),
        args.duration.as_secs_f64(),
        pushes.len()
    );
    println!(
        "push time p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; lock wait p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&elapsed, 0.5),
        percentile_ms(&elapsed, 0.99),
        elapsed.last().map_or(0.0, |d| millis(*d)),
        percentile_ms(&waits, 0.5),
        percentile_ms(&waits, 0.99)
    );
    for failure in failures {
        println!("failed request (retried): {failure}");
    }
}
