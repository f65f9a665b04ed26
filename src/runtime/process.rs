//! The `process` runtime: each sandbox has a workspace directory `<workspace_root>/<uuid>` on
//! this host, and each command runs isolated by bubblewrap (see [`super::bwrap`]) with the
//! template's limits, as the sandbox's own unprivileged uid when sandboxd runs as root.
//!
//! Processes live no longer than the exec that started them: the command's PID namespace ends
//! with it, taking daemonized grandchildren along. Destroying a sandbox refuses new execs,
//! kills the running ones, waits for them to be reaped, then removes the workspace. A crash of
//! sandboxd kills every command too (`--die-with-parent`); the workspaces it leaves are removed
//! when the reconciler finishes the interrupted destroys.
//!
//! Workspaces are local to the replica that made them: run the `process` runtime on one
//! replica, or give every replica the same `workspace_root` (only the replica that started a
//! command can kill it before it ends by itself).

use std::{
    collections::HashMap,
    os::unix::fs::{PermissionsExt, chown},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    ExecEvent, ExecSpec, Runtime, RuntimeHealth,
    bwrap::{Invocation, Isolation, RunAs, base_env},
    drive::{Driven, drive},
    reaper,
};
use crate::{
    config::RuntimeConfig,
    error::{Error, Result},
    sandbox::SandboxId,
    template::{ProcessSettings, RuntimeKind},
};

/// Events buffered per exec before the command waits for its client.
const EVENT_BUFFER: usize = 16;
/// How often orphaned bubblewrap processes are looked for besides at the end of every exec.
const ORPHAN_SWEEP: Duration = Duration::from_secs(1);

pub struct ProcessRuntime {
    config: RuntimeConfig,
    /// Set by [`ProcessRuntime::check`] at start; execs are refused before.
    isolation: OnceLock<Isolation>,
    sandboxes: Mutex<HashMap<SandboxId, Arc<SandboxProcesses>>>,
    /// Every exec driver and the orphan sweep, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Ends the orphan sweep.
    stopping: CancellationToken,
}

/// The running commands of one sandbox.
#[derive(Default)]
struct SandboxProcesses {
    /// Cancelled when the sandbox is destroyed: kills its commands and refuses new ones.
    cancel: CancellationToken,
    running: TaskTracker,
}

impl ProcessRuntime {
    pub fn new(config: RuntimeConfig) -> Self {
        Self {
            config,
            isolation: OnceLock::new(),
            sandboxes: Mutex::default(),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        }
    }

    /// Makes sure commands can run here: creates the workspace root and runs `true` the way a
    /// sandbox's command runs. Without bubblewrap this fails with what to do, unless the
    /// operator chose `runtime.unsafe_without_bubblewrap`, which is logged as a warning.
    pub async fn check(&self) -> anyhow::Result<()> {
        reaper::become_subreaper().context("becoming the reaper of orphaned commands")?;
        let root = &self.config.workspace_root;
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating runtime.workspace_root {}", root.display()))?;
        // Sandbox uids must traverse the root to reach their own workspace, not list it.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", root.display()))?;
        let isolation = if self.config.unsafe_without_bubblewrap {
            tracing::warn!(
                "runtime.unsafe_without_bubblewrap is set: sandbox commands run WITHOUT isolation and can see this host's files, processes and network"
            );
            Isolation::Unsafe
        } else {
            Isolation::Bubblewrap
        };
        let probe = SandboxId::new();
        let outcome = self.probe(isolation, probe).await;
        let _ = self.remove_workspace(probe);
        if let Err(error) = outcome {
            if isolation == Isolation::Bubblewrap {
                anyhow::bail!(
                    "the process runtime cannot isolate commands with bubblewrap ({}): {error:#}. Install it (Debian: apt-get install bubblewrap) and make sure this host allows user namespaces, or set runtime.unsafe_without_bubblewrap = true to run commands without isolation (unsafe)",
                    self.config.bwrap.display()
                );
            }
            anyhow::bail!("the process runtime cannot run commands: {error:#}");
        }
        let _ = self.isolation.set(isolation);
        // bubblewrap's PID 1 may die just after the exec that started it was reaped: sweep
        // for such orphans every second too, not only when an exec ends.
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            let mut every = tokio::time::interval(ORPHAN_SWEEP);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => break,
                    _ = every.tick() => reaper::reap_orphans(),
                }
            }
        });
        Ok(())
    }

    async fn probe(&self, isolation: Isolation, id: SandboxId) -> anyhow::Result<()> {
        self.create_workspace(id)?;
        let settings = ProcessSettings::default();
        let mut command =
            self.invocation(isolation, id, &settings).bare_command(vec!["true".into()]);
        let child = reaper::spawn_registered(|| command.spawn(), tokio::process::Child::id)
            .with_context(|| format!("starting {}", self.config.bwrap.display()))?;
        let pid = child.id();
        let output = child.wait_with_output().await;
        reaper::release(pid);
        let output = output.context("waiting for the probe command")?;
        if !output.status.success() {
            anyhow::bail!(
                "probe command failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// True when commands run without bubblewrap (`runtime.unsafe_without_bubblewrap`).
    pub fn is_unsafe(&self) -> bool {
        self.isolation.get() == Some(&Isolation::Unsafe)
    }

    /// Waits for every running command's driver (after shutdown cancelled them).
    pub async fn stop(&self) {
        self.stopping.cancel();
        let running: Vec<_> = self.lock().values().cloned().collect();
        for sandbox in running {
            sandbox.cancel.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Arc<SandboxProcesses>>> {
        self.sandboxes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn workspace_dir(&self, id: SandboxId) -> PathBuf {
        self.config.workspace_root.join(id.to_string())
    }

    /// The uid and gid of a sandbox's commands: one of `uid_count` unprivileged ids from the
    /// random bits of its UUIDv7 (two sandboxes share one only by chance, and then share only
    /// their process limit: namespaces keep their files and processes apart).
    fn run_as(&self, id: SandboxId) -> RunAs {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let random = u32::from_be_bytes(id.as_uuid().as_bytes()[12..16].try_into().ok()?);
        let uid = self.config.uid_base + random % self.config.uid_count;
        Some((uid, uid))
    }

    fn invocation<'a>(
        &'a self,
        isolation: Isolation,
        id: SandboxId,
        settings: &'a ProcessSettings,
    ) -> Invocation<'a> {
        Invocation {
            config: &self.config,
            isolation,
            workspace: self.workspace_dir(id),
            settings,
            run_as: self.run_as(id),
        }
    }

    fn create_workspace(&self, id: SandboxId) -> std::io::Result<PathBuf> {
        let dir = self.workspace_dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = self.run_as(id) {
            chown(&dir, Some(uid), Some(gid))?;
        }
        Ok(dir)
    }

    fn remove_workspace(&self, id: SandboxId) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.workspace_dir(id)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    async fn provision(&self, id: SandboxId) -> Result<()> {
        self.create_workspace(id).map(drop).map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("creating the sandbox workspace"))
        })
    }

    async fn exec(
        &self,
        id: SandboxId,
        settings: &ProcessSettings,
        mut spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>> {
        let Some(&isolation) = self.isolation.get() else {
            return Err(Error::NotReady("the process runtime has not been checked yet; retry"));
        };
        let invocation = self.invocation(isolation, id, settings);
        if !invocation.workspace.is_dir() {
            return Err(Error::FailedPrecondition {
                reason: "WORKSPACE_MISSING",
                message: "the sandbox's workspace does not exist on this replica".into(),
            });
        }
        for (key, value) in base_env(isolation, &invocation.workspace) {
            spec.env.entry(key).or_insert(value);
        }
        // Registered before the child exists, so a destroy that starts now waits for it.
        let (cancel, running) = {
            let mut sandboxes = self.lock();
            let sandbox = sandboxes.entry(id).or_default();
            if sandbox.cancel.is_cancelled() {
                return Err(being_destroyed());
            }
            (sandbox.cancel.clone(), sandbox.running.token())
        };
        let mut command = invocation.command(&spec);
        let child = reaper::spawn_registered(|| command.spawn(), tokio::process::Child::id)
            .map_err(|error| {
                Error::Internal(anyhow::Error::new(error).context("starting the command"))
            })?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let driven = Driven {
            child,
            stdin: spec.stdin,
            timeout: spec.timeout,
            max_output_bytes: spec.max_output_bytes,
        };
        self.tasks.spawn(async move {
            drive(driven, events, cancel).await;
            drop(running);
        });
        Ok(receiver)
    }

    async fn destroy(&self, id: SandboxId) -> Result<()> {
        // Cancelled under the lock: an exec registers under it too, so it either sees the
        // cancellation or is waited for.
        let sandbox = {
            let mut sandboxes = self.lock();
            let sandbox = sandboxes.entry(id).or_default().clone();
            sandbox.cancel.cancel();
            sandbox
        };
        sandbox.running.close();
        sandbox.running.wait().await;
        let removed = self.remove_workspace(id);
        self.lock().remove(&id);
        removed.map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("removing the sandbox workspace"))
        })
    }

    fn workspace(&self, id: SandboxId) -> Option<PathBuf> {
        Some(self.workspace_dir(id))
    }

    fn health(&self, id: SandboxId) -> RuntimeHealth {
        let dir = self.workspace_dir(id);
        let running = self.lock().get(&id).map_or(0, |sandbox| sandbox.running.len());
        if !dir.is_dir() {
            return RuntimeHealth::Unhealthy(format!(
                "the workspace directory {} is missing on this replica",
                dir.display()
            ));
        }
        let detail = format!("workspace present, {running} commands running");
        if self.is_unsafe() {
            RuntimeHealth::Degraded(format!(
                "{detail}; commands run WITHOUT bubblewrap isolation (runtime.unsafe_without_bubblewrap)"
            ))
        } else {
            RuntimeHealth::Healthy(detail)
        }
    }
}

/// The bubblewrap command an exec of `argv` runs, built exactly as for a sandbox but spawned
/// by the caller: the baseline of `sandboxctl bench exec`. `workspace` must exist and be
/// reachable by `run_as`.
pub fn bare_command(
    config: &RuntimeConfig,
    workspace: &std::path::Path,
    run_as: Option<(u32, u32)>,
    argv: Vec<String>,
) -> tokio::process::Command {
    let settings = ProcessSettings::default();
    let invocation = Invocation {
        config,
        isolation: Isolation::Bubblewrap,
        workspace: workspace.to_path_buf(),
        settings: &settings,
        run_as,
    };
    invocation.bare_command(argv)
}

fn being_destroyed() -> Error {
    Error::FailedPrecondition {
        reason: "SANDBOX_DESTROYING",
        message: "the sandbox is being destroyed; it runs no new commands".into(),
    }
}
