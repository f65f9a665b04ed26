//! Drives one running command: feeds its stdin, streams its stdout and stderr as they come
//! (bounded channel: a slow client slows the command, nothing piles up in memory), cuts output
//! beyond the limit, and kills it on timeout, on cancellation (sandbox destroyed, server
//! shutting down) or when the client goes away.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Child,
    sync::mpsc,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{ExecEvent, ExitStatus, reaper};

const READ_CHUNK: usize = 32 * 1024;
/// After the command exits, how long output of processes it left behind is still read (under
/// bubblewrap they die with it, so the pipes close at once).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
const SIGKILL: i32 = 9;

/// Why the command was killed, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Timeout,
    Cancelled,
}

pub(super) struct Driven {
    pub child: Child,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// Runs the command to its end and sends its output, then its exit (unless the receiver is
/// gone). Always reaps the child.
pub(super) async fn drive(
    driven: Driven,
    events: mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
) {
    let Driven { mut child, stdin, timeout, max_output_bytes } = driven;
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let stdin_pipe = child.stdin.take();
    let feed_stdin = async move {
        if let Some(mut pipe) = stdin_pipe {
            // A command that exits without reading its input is not an error.
            let _ = pipe.write_all(&stdin).await;
        }
    };
    tokio::pin!(feed_stdin);
    let mut stdin_done = false;
    let deadline = Instant::now() + timeout;
    let mut output = OutputBudget::new(max_output_bytes);
    let (mut out_buf, mut err_buf) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
    let mut exited = None;
    let mut drain_until = None;
    let mut killed = None;
    let status = loop {
        if stdout.is_none()
            && stderr.is_none()
            && let Some(status) = exited
        {
            break status;
        }
        let drain_deadline = drain_until.unwrap_or(deadline);
        tokio::select! {
            biased;
            () = cancel.cancelled(), if killed.is_none() => {
                killed = Some(Kill::Cancelled);
                kill_group(&mut child, pid);
            }
            () = events.closed(), if killed.is_none() => {
                killed = Some(Kill::Cancelled);
                kill_group(&mut child, pid);
            }
            () = tokio::time::sleep_until(deadline), if killed.is_none() && exited.is_none() => {
                killed = Some(Kill::Timeout);
                kill_group(&mut child, pid);
            }
            () = tokio::time::sleep_until(drain_deadline), if drain_until.is_some() => {
                // Leftover processes (only without bubblewrap) keep the pipes open: stop.
                kill_group(&mut child, pid);
                (stdout, stderr) = (None, None);
            }
            () = &mut feed_stdin, if !stdin_done => stdin_done = true,
            read = read_some(&mut stdout, &mut out_buf) => match read {
                ReadResult::Closed => stdout = None,
                ReadResult::Read(n) => if let Some(chunk) = output.take(&out_buf[..n]) {
                    send(&events, ExecEvent::Stdout(chunk), &cancel).await;
                },
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                ReadResult::Closed => stderr = None,
                ReadResult::Read(n) => if let Some(chunk) = output.take(&err_buf[..n]) {
                    send(&events, ExecEvent::Stderr(chunk), &cancel).await;
                },
            },
            status = child.wait(), if exited.is_none() => {
                let status = match status {
                    Ok(status) => status,
                    Err(error) => {
                        tracing::warn!(%error, "waiting for an exec failed");
                        break None;
                    }
                };
                exited = Some(Some(status));
                kill_group(&mut child, pid);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        if let Some(marker) = output.marker() {
            send(&events, ExecEvent::Stderr(marker), &cancel).await;
        }
    };
    // Our child is reaped; bubblewrap's PID 1, orphaned by it, is reaped here.
    reaper::release(pid);
    let exit = exit_status(status, killed);
    let _ = events.send(ExecEvent::Exit(exit)).await;
}

/// Reads the next bytes of a pipe; `None` pipes never yield (the arm stays pending).
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> ReadResult {
    match pipe {
        Some(reader) => match reader.read(buf).await {
            Ok(0) | Err(_) => ReadResult::Closed,
            Ok(n) => ReadResult::Read(n),
        },
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadResult {
    Read(usize),
    Closed,
}

/// Sends unless the command is being killed for cancellation anyway.
async fn send(events: &mpsc::Sender<ExecEvent>, event: ExecEvent, cancel: &CancellationToken) {
    tokio::select! {
        _ = events.send(event) => {}
        () = cancel.cancelled() => {}
    }
}

/// Kills the command's whole process group (bubblewrap, and under it the PID namespace).
fn kill_group(child: &mut Child, pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pid, SIGKILL);
        }
    }
    let _ = child.start_kill();
}

fn exit_status(status: Option<std::process::ExitStatus>, killed: Option<Kill>) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (killed, status) {
        (Some(kill), _) => {
            ExitStatus { code: -1, signal: SIGKILL, timed_out: kill == Kill::Timeout }
        }
        (None, Some(status)) => match status.code() {
            Some(code) => ExitStatus { code, signal: 0, timed_out: false },
            None => ExitStatus { code: -1, signal: status.signal().unwrap_or(0), timed_out: false },
        },
        (None, None) => ExitStatus { code: -1, signal: 0, timed_out: false },
    }
}

/// How much output is still sent; the rest is read and discarded after one marker.
struct OutputBudget {
    left: usize,
    limit: usize,
    cut: bool,
    marker_sent: bool,
}

impl OutputBudget {
    fn new(limit: usize) -> Self {
        Self { left: limit, limit, cut: false, marker_sent: false }
    }

    /// The part of `read` still within the limit.
    fn take(&mut self, read: &[u8]) -> Option<Vec<u8>> {
        let keep = read.len().min(self.left);
        self.left -= keep;
        if keep < read.len() {
            self.cut = true;
        }
        (keep > 0).then(|| read[..keep].to_vec())
    }

    /// The marker, once, after output was cut.
    fn marker(&mut self) -> Option<Vec<u8>> {
        if !self.cut || self.marker_sent {
            return None;
        }
        self.marker_sent = true;
        Some(
            format!(
                "\n[sandboxd: output cut after {} bytes; the rest was discarded]\n",
                self.limit
            )
            .into_bytes(),
        )
    }
}
