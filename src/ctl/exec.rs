//! `sandboxctl exec SANDBOX -- CMD ARGS...`: runs a command in a sandbox, streams its output to
//! this terminal as it comes, and exits with the command's exit code (128 + N when a signal N
//! ended it, as shells do). `sandboxctl hook SANDBOX NAME` runs a template hook.

use std::{io::Write, process::ExitCode, time::Duration};

use clap::Args;
use tokio_stream::StreamExt;

use super::{Connection, sandboxes::id_of};
use crate::proto::{self, exec_response::Output};

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// Sandbox id or name.
    sandbox: String,
    /// Working directory, relative to the workspace root.
    #[arg(long, short = 'w', default_value = "")]
    workdir: String,
    /// Extra environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Time limit, e.g. `30s` (default: the server's).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Read standard input and pass it to the command.
    #[arg(long, short = 'i')]
    stdin: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub(crate) struct HookArgs {
    /// Sandbox id or name.
    sandbox: String,
    /// Hook name, e.g. `message`.
    hook: String,
    /// Conversation id handed to the hook.
    #[arg(long, default_value = "")]
    conversation: String,
}

pub(crate) async fn exec(connection: &Connection, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut env = std::collections::HashMap::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {pair:?} is not KEY=VALUE"))?;
        env.insert(key.to_string(), value.to_string());
    }
    let stdin = if args.stdin {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        bytes
    } else {
        Vec::new()
    };
    let sandbox_id = id_of(&mut connection.control(), &args.sandbox).await?;
    let request = proto::ExecRequest {
        sandbox_id,
        command: args.command,
        env,
        working_dir: args.workdir,
        timeout: args.timeout.map(super::sandboxes::proto_duration),
        stdin,
    };
    let mut stream = connection.control().exec(request).await?.into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(message) = stream.next().await {
        match message?.output {
            Some(Output::StdoutChunk(chunk)) => {
                stdout.write_all(&chunk)?;
                stdout.flush()?;
            }
            Some(Output::StderrChunk(chunk)) => {
                stderr.write_all(&chunk)?;
                stderr.flush()?;
            }
            Some(Output::Exit(exit)) => {
                if exit.timed_out {
                    eprintln!("sandboxctl: the command timed out and was killed");
                }
                let code = if exit.signal != 0 { 128 + exit.signal } else { exit.exit_code };
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
            None => {}
        }
    }
    anyhow::bail!("the exec stream ended without the command's exit status")
}

pub(crate) async fn hook(connection: &Connection, args: HookArgs) -> anyhow::Result<ExitCode> {
    let sandbox_id = id_of(&mut connection.control(), &args.sandbox).await?;
    let request = proto::RunHookRequest {
        sandbox_id,
        hook: args.hook,
        conversation_id: args.conversation,
        input: None,
    };
    let outcome = connection.control().run_hook(request).await?.into_inner();
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    Ok(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)))
}
