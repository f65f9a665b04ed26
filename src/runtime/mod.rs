//! Runtimes: what runs a sandbox's commands. Two are built in: `none` (data-only templates: no
//! workspace, and `Exec` is `FAILED_PRECONDITION`) and `process` (a workspace directory on this
//! host, and commands isolated by bubblewrap; see [`process`]).
//!
//! A runtime only runs what it is told: the sandbox layer checks states and permissions,
//! builds the command's environment and records the lifecycle.

mod bwrap;
mod drive;
mod limits;
mod none;
pub mod process;
pub mod reaper;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::mpsc;

pub use self::{
    none::{NoRuntime, no_processes},
    process::ProcessRuntime,
};
use crate::{
    config::RuntimeConfig,
    error::Result,
    sandbox::SandboxId,
    template::{ProcessSettings, RuntimeKind},
};

/// One command to run in a sandbox.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Program and arguments, run directly (no shell).
    pub argv: Vec<String>,
    /// The command's whole environment; nothing of sandboxd's own is inherited.
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the workspace root, already confined by the caller
    /// (`""` is the root).
    pub working_dir: String,
    /// Written to standard input, which is then closed.
    pub stdin: Vec<u8>,
    /// The command is killed after this long.
    pub timeout: Duration,
    /// Output (stdout and stderr together) beyond this is discarded after a marker.
    pub max_output_bytes: usize,
}

/// What an exec produces, in order; `Exit` is always last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; -1 when ended by a signal.
    pub code: i32,
    /// The signal that ended it; 0 when it exited.
    pub signal: i32,
    /// Killed because it ran past its timeout.
    pub timed_out: bool,
}

/// A runtime's view of one sandbox's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeHealth {
    Healthy(String),
    Degraded(String),
    Unhealthy(String),
}

#[tonic::async_trait]
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// Creates what the sandbox's commands need (its workspace). Idempotent.
    async fn provision(&self, id: SandboxId) -> Result<()>;

    /// Starts a command. Its output and then its exit arrive on the receiver; dropping the
    /// receiver kills the command (a client that goes away takes its process with it).
    async fn exec(
        &self,
        id: SandboxId,
        settings: &ProcessSettings,
        spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>>;

    /// Kills every process the sandbox started and removes its workspace. Idempotent.
    async fn destroy(&self, id: SandboxId) -> Result<()>;

    /// The sandbox's workspace directory on this host, when the runtime has workspaces.
    fn workspace(&self, id: SandboxId) -> Option<PathBuf>;

    fn health(&self, id: SandboxId) -> RuntimeHealth;
}

/// The built-in runtimes, by template runtime kind.
pub struct Runtimes {
    none: NoRuntime,
    process: Arc<ProcessRuntime>,
}

impl Runtimes {
    /// Builds both without touching anything; [`Runtimes::check`] probes the process runtime.
    pub fn new(config: &RuntimeConfig) -> Self {
        Self { none: NoRuntime, process: Arc::new(ProcessRuntime::new(config.clone())) }
    }

    pub fn get(&self, kind: RuntimeKind) -> &dyn Runtime {
        match kind {
            RuntimeKind::None => &self.none,
            RuntimeKind::Process => self.process.as_ref(),
        }
    }

    pub fn process(&self) -> &ProcessRuntime {
        &self.process
    }
}
