//! The `exec` tool: runs a command in a sandbox, reports its output as MCP progress
//! notifications while it runs (when the client sent a progress token), and returns the exit
//! status with the last part of stdout and stderr. Cancelling the MCP request drops the Exec
//! stream, and the server kills the command when its stream is dropped.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rmcp::{
    Json, Peer, RoleServer,
    handler::server::wrapper::Parameters,
    model::{ProgressNotificationParam, ProgressToken},
    service::RequestContext,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::{
    SandboxdMcp,
    convert::{duration, sandbox_id},
    errors::{ToolError, cancellable},
};
use crate::proto::{ExecRequest, exec_response::Output};

/// Bytes of each stream's end kept for the result.
const TAIL_BYTES: usize = 16 * 1024;
/// Output arriving faster than this is gathered into one notification.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Longest progress message (its end is kept).
const PROGRESS_MESSAGE_BYTES: usize = 4 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecArgs {
    /// The sandbox's id or name (it must be RUNNING, with a process runtime).
    sandbox: String,
    /// Program and arguments, run directly without a shell, e.g. ["ls", "-la"]. For pipes,
    /// redirections or several commands use ["sh", "-c", "make && make test"].
    command: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory relative to the workspace root (default: the root).
    #[serde(default)]
    working_dir: Option<String>,
    /// Time limit, e.g. "30s" or "10m" (default: the server's); the command is killed after it.
    #[serde(default)]
    timeout: Option<String>,
    /// Text written to the command's standard input (default: none, stdin closed).
    #[serde(default)]
    stdin: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ExecResult {
    /// The exit code; -1 when a signal ended the command.
    exit_code: i32,
    /// The signal that ended it (9 = SIGKILL), 0 when it exited by itself.
    signal: i32,
    /// True when it ran past its time limit and was killed.
    timed_out: bool,
    /// The last 16 KiB of standard output (UTF-8, invalid bytes replaced).
    stdout_tail: String,
    /// The last 16 KiB of standard error.
    stderr_tail: String,
    /// Total bytes written to standard output.
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// True when stdout_tail is only the end of the output.
    stdout_truncated: bool,
    stderr_truncated: bool,
}

/// The end of one output stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL_BYTES {
            self.bytes.drain(..self.bytes.len() - TAIL_BYTES);
        }
    }

    fn text(&self) -> (String, bool) {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let text = String::from_utf8_lossy(&self.bytes[start..]).into_owned();
        (text, self.total > (self.bytes.len() - start) as u64)
    }
}

/// Output not yet sent as a progress notification.
struct Progress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    pending: String,
    bytes: u64,
    last_sent: Option<Instant>,
}

impl Progress {
    fn add(&mut self, stream: &str, chunk: &[u8]) {
        if self.token.is_none() {
            return;
        }
        self.bytes += chunk.len() as u64;
        let text = String::from_utf8_lossy(chunk);
        if stream == "stderr" {
            self.pending.push_str("[stderr] ");
        }
        self.pending.push_str(&text);
    }

    /// When the pending output is due, if there is any.
    fn due(&self) -> Option<tokio::time::Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let at = self.last_sent.map_or_else(Instant::now, |last| last + PROGRESS_EVERY);
        Some(tokio::time::Instant::from_std(at))
    }

    async fn flush(&mut self) {
        let Some(token) = self.token.clone() else { return };
        if self.pending.is_empty() {
            return;
        }
        let mut message = std::mem::take(&mut self.pending);
        if message.len() > PROGRESS_MESSAGE_BYTES {
            let mut start = message.len() - PROGRESS_MESSAGE_BYTES;
            while !message.is_char_boundary(start) {
                start += 1;
            }
            message = format!("…{}", &message[start..]);
        }
        self.last_sent = Some(Instant::now());
        // `progress` is the number of output bytes so far: it grows with every notification.
        let param = ProgressNotificationParam::new(token, self.bytes as f64).with_message(message);
        // A client that has gone away cannot be told; the command goes on until the stream ends.
        let _ = self.peer.notify_progress(param).await;
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[tool_router(router = exec_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "Run a command in a sandbox's workspace and wait for it to finish. \
        Output streams as progress notifications while it runs; the result has the exit code \
        and the last 16 KiB of stdout and stderr. A non-zero exit is a normal result, not a \
        tool error. Cancelling the call kills the command.")]
    async fn exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ExecResult>, ToolError> {
        let cancel = context.ct.clone();
        if args.command.is_empty() || args.command[0].is_empty() {
            return Err(ToolError::invalid(
                "command",
                "is empty; pass the program and its arguments, e.g. [\"ls\", \"-la\"]",
            ));
        }
        let timeout = duration("timeout", args.timeout.as_deref())?;
        let mut client = self.control();
        let request = ExecRequest {
            sandbox_id: sandbox_id(&mut client, &cancel, &args.sandbox).await?,
            command: args.command,
            env: args.env.into_iter().collect(),
            working_dir: args.working_dir.unwrap_or_default(),
            timeout,
            stdin: args.stdin.unwrap_or_default().into_bytes(),
        };
        let mut stream = cancellable(&cancel, client.exec(request))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox"))?
            .into_inner();
        let mut progress = Progress {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
            pending: String::new(),
            bytes: 0,
            last_sent: None,
        };
        let (mut stdout, mut stderr) = (Tail::default(), Tail::default());
        loop {
            let due = progress.due();
            let message = tokio::select! {
                biased;
                // Dropping `stream` on return cancels the call: the server kills the command.
                () = cancel.cancelled() => return Err(ToolError::cancelled()),
                () = sleep_until(due) => {
                    progress.flush().await;
                    continue;
                }
                message = stream.next() => message,
            };
            let Some(message) = message else {
                return Err(ToolError {
                    message: "the exec stream ended without the command's exit status".into(),
                    ..ToolError::from(tonic::Status::unavailable(""))
                });
            };
            match message.map_err(ToolError::from)?.output {
                Some(Output::StdoutChunk(chunk)) => {
                    stdout.push(&chunk);
                    progress.add("stdout", &chunk);
                }
                Some(Output::StderrChunk(chunk)) => {
                    stderr.push(&chunk);
                    progress.add("stderr", &chunk);
                }
                Some(Output::Exit(exit)) => {
                    progress.flush().await;
                    let (stdout_tail, stdout_truncated) = stdout.text();
                    let (stderr_tail, stderr_truncated) = stderr.text();
                    return Ok(Json(ExecResult {
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        timed_out: exit.timed_out,
                        stdout_tail,
                        stderr_tail,
                        stdout_bytes: stdout.total,
                        stderr_bytes: stderr.total,
                        stdout_truncated,
                        stderr_truncated,
                    }));
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_end_and_says_when_it_was_cut() {
        let mut tail = Tail::default();
        tail.push(b"hello\n");
        assert_eq!(tail.text(), ("hello\n".to_string(), false));
        for _ in 0..10 {
            tail.push(&[b'x'; TAIL_BYTES / 2]);
        }
        tail.push(b"END");
        let (text, truncated) = tail.text();
        assert!(truncated && text.len() == TAIL_BYTES && text.ends_with("xEND"));
        assert_eq!(tail.total, 6 + 5 * TAIL_BYTES as u64 + 3);
    }
}
