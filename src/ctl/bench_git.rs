//! `sandboxctl bench git`: the load run of many agents pushing at once. Sandboxes are spread
//! over templates (one repository each); every sandbox loops for the duration: write a file of
//! its own (WriteFile), then GitPush it with a message. Reports pushes attempted and landed,
//! push time and lock wait (p50/p99). `scripts/bench-git` counts the commits that really are on
//! the remote branches afterwards.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

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

/// One push of the run.
struct Push {
    elapsed: Duration,
    lock_wait: Duration,
    result: Result<(), String>,
}

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
    let pushes: Vec<Push> = futures::future::join_all(agents).await.into_iter().flatten().collect();
    for sandbox_id in ids {
        let request = DestroySandboxRequest { sandbox_id, ..Default::default() };
        control.destroy_sandbox(request).await?;
    }
    report(&args, &pushes, json_out);
    Ok(())
}

async fn agent_loop(
    connection: &Connection,
    agent: usize,
    id: &str,
    deadline: Instant,
) -> Vec<Push> {
    let mut sync = connection.sync();
    let mut pushes = Vec::new();
    let mut round = 0;
    while Instant::now() < deadline {
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
            pushes.push(Push {
                elapsed: Duration::ZERO,
                lock_wait: Duration::ZERO,
                result: Err(status.code().to_string()),
            });
            continue;
        }
        let request = GitPushRequest {
            sandbox_id: id.to_string(),
            message: format!("agent {agent} change {round}"),
            ..Default::default()
        };
        let started = Instant::now();
        let outcome = sync.git_push(request).await;
        let elapsed = started.elapsed();
        pushes.push(match outcome {
            Ok(response) => {
                let response = response.into_inner();
                let wait = response.lock_wait.unwrap_or_default();
                let lock_wait = Duration::new(wait.seconds.max(0) as u64, wait.nanos.max(0) as u32);
                let result = if response.pushed { Ok(()) } else { Err("not pushed".into()) };
                Push { elapsed, lock_wait, result }
            }
            Err(status) => Push {
                elapsed,
                lock_wait: Duration::ZERO,
                result: Err(format!("{:?}: {}", status.code(), status.message())),
            },
        });
    }
    pushes
}

fn report(args: &GitArgs, pushes: &[Push], json_out: bool) {
    let attempted = pushes.len();
    let landed = pushes.iter().filter(|push| push.result.is_ok()).count();
    let mut elapsed: Vec<Duration> =
        pushes.iter().filter(|p| p.result.is_ok()).map(|p| p.elapsed).collect();
    let mut waits: Vec<Duration> =
        pushes.iter().filter(|p| p.result.is_ok()).map(|p| p.lock_wait).collect();
    elapsed.sort_unstable();
    waits.sort_unstable();
    let mut failures: Vec<&str> =
        pushes.iter().filter_map(|p| p.result.as_ref().err().map(String::as_str)).collect();
    failures.sort_unstable();
    failures.dedup();
    let per_second = landed as f64 / args.duration.as_secs_f64();
    let share = if attempted == 0 { 0.0 } else { 100.0 * landed as f64 / attempted as f64 };
    if json_out {
        let value = json!({
            "sandboxes": args.sandboxes, "repositories": args.templates.len(),
            "attempted": attempted, "landed": landed, "landed_percent": share,
            "pushes_per_second": per_second,
            "push_p50_ms": percentile_ms(&elapsed, 0.5), "push_p99_ms": percentile_ms(&elapsed, 0.99),
            "lock_wait_p50_ms": percentile_ms(&waits, 0.5), "lock_wait_p99_ms": percentile_ms(&waits, 0.99),
            "failures": failures,
        });
        println!("{value}");
        return;
    }
    println!(
        "{} sandboxes, {} repositories, {:.0} s: pushes attempted {attempted}, landed {landed} ({share:.1} %), {per_second:.1} pushes/s",
        args.sandboxes,
        args.templates.len(),
        args.duration.as_secs_f64()
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
        println!("failure: {failure}");
    }
}
