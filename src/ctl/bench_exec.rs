//! `sandboxctl bench exec`: the round trip of `Exec(["true"])` through sandboxd (gRPC, auth,
//! state check, bubblewrap spawn, streamed exit) beside spawning the same bubblewrap command
//! directly on this machine, in the same run. Run it on the server's host.

use std::{
    os::unix::fs::{PermissionsExt, chown},
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::json;
use tokio_stream::StreamExt;

use super::{
    Connection,
    stats::{millis, percentile_ms},
};
use crate::{
    config::RuntimeConfig,
    proto::{CreateSandboxRequest, DestroySandboxRequest, ExecRequest, exec_response::Output},
    runtime::{process::bare_command, reaper},
};

#[derive(Args)]
pub struct ExecArgs {
    /// A `process` template to create the measured sandbox from.
    #[arg(long, default_value = "git-agent")]
    template: String,
    /// Measured execs per side.
    #[arg(long, default_value_t = 300)]
    rounds: usize,
    /// Unmeasured execs per side first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
}

pub async fn run(connection: &Connection, args: ExecArgs, json: bool) -> anyhow::Result<()> {
    let mut client = connection.control();
    let create = CreateSandboxRequest { template: args.template.clone(), ..Default::default() };
    let sandbox = client.create_sandbox(create).await?.into_inner();
    let through_sandboxd = async {
        let mut samples = Vec::with_capacity(args.rounds);
        for round in 0..args.warmup + args.rounds {
            let started = Instant::now();
            let request = ExecRequest {
                sandbox_id: sandbox.sandbox_id.clone(),
                command: vec!["true".into()],
                ..Default::default()
            };
            let mut stream = client.clone().exec(request).await?.into_inner();
            let (mut exit, mut stderr) = (None, Vec::new());
            while let Some(message) = stream.next().await {
                match message?.output {
                    Some(Output::Exit(status)) => exit = Some(status.exit_code),
                    Some(Output::StderrChunk(chunk)) => stderr.extend(chunk),
                    _ => {}
                }
            }
            anyhow::ensure!(
                exit == Some(0),
                "exec of `true` in round {round} ended with {exit:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
            if round >= args.warmup {
                samples.push(started.elapsed());
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    let destroy = DestroySandboxRequest { sandbox_id: sandbox.sandbox_id, ..Default::default() };
    client.destroy_sandbox(destroy).await?;
    let mut sandboxd = through_sandboxd?;
    let mut direct = direct_bwrap(args.warmup, args.rounds).await?;
    sandboxd.sort();
    direct.sort();
    report(&sandboxd, &direct, json);
    Ok(())
}

/// The same bubblewrap command, spawned and reaped here, as the same kind of uid.
async fn direct_bwrap(warmup: usize, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let config = RuntimeConfig::default();
    let root = tempfile::tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711))?;
    let workspace = root.path().join("workspace");
    std::fs::create_dir(&workspace)?;
    // SAFETY: geteuid has no preconditions.
    let run_as = (unsafe { libc::geteuid() } == 0).then_some((config.uid_base, config.uid_base));
    if let Some((uid, gid)) = run_as {
        chown(&workspace, Some(uid), Some(gid))?;
    }
    // As sandboxd does: reap bubblewrap's orphaned PID 1s, so they do not pile up as zombies.
    reaper::become_subreaper()?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..warmup + rounds {
        let started = Instant::now();
        let mut command = bare_command(&config, &workspace, run_as, vec!["true".into()]);
        let mut child = reaper::spawn_registered(|| command.spawn(), tokio::process::Child::id)?;
        let pid = child.id();
        let status = child.wait().await;
        reaper::release(pid);
        let status = status?;
        anyhow::ensure!(status.success(), "bwrap -- true failed: {status}");
        if round >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

fn report(sandboxd: &[Duration], direct: &[Duration], json: bool) {
    let row = |samples: &[Duration]| {
        (
            percentile_ms(samples, 0.5),
            percentile_ms(samples, 0.99),
            millis(samples[samples.len() - 1]),
        )
    };
    let (s50, s99, smax) = row(sandboxd);
    let (d50, d99, dmax) = row(direct);
    if json {
        let value = json!({
            "rounds": sandboxd.len(),
            "sandboxd_exec": { "p50_ms": s50, "p99_ms": s99, "max_ms": smax },
            "direct_bwrap": { "p50_ms": d50, "p99_ms": d99, "max_ms": dmax },
        });
        println!("{value}");
        return;
    }
    println!("exec round trip of `true`, {} rounds each", sandboxd.len());
    println!("{:<28} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    println!("{:<28} {s50:>9.2} {s99:>9.2} {smax:>9.2}", "Exec through sandboxd");
    println!("{:<28} {d50:>9.2} {d99:>9.2} {dmax:>9.2}", "bwrap spawned directly");
    println!("{:<28} {:>9.2} {:>9.2}", "sandboxd overhead", s50 - d50, s99 - d99);
}
