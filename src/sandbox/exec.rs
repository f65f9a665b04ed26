//! Exec and RunHook: commands in a RUNNING sandbox's runtime, with the sandbox's environment.
//!
//! A command's environment, later entries overriding earlier ones: the runtime's base
//! (`PATH`, `HOME`, `TMPDIR`, `LANG`), the template's `[process.env]`, the sandbox's connection
//! variables (`SANDBOX_ID`, `PGOPTIONS`, `REDIS_PREFIX`, `SUBJECT_PREFIX`, `OBJECT_PREFIX`, ...),
//! then the request's own. Nothing of sandboxd's environment is inherited.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use tokio::sync::mpsc;

use super::{Sandbox, SandboxId, SandboxSelector, SandboxState, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::{Error, Result},
    runtime::{ExecEvent, ExecSpec, ExitStatus},
    template::Template,
    workspace::files::Workspace,
};

/// A validated Exec request.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Relative to the workspace root, lexically confined (no `..`, not absolute).
    pub working_dir: String,
    /// `None`: the server's default exec timeout.
    pub timeout: Option<Duration>,
    pub stdin: Vec<u8>,
}

/// A validated RunHook request.
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub hook: String,
    pub conversation_id: String,
    pub input: Option<serde_json::Value>,
}

/// A finished hook.
#[derive(Debug, Clone)]
pub struct HookOutcome {
    pub exit: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl HookOutcome {
    /// The last `max_bytes` (or fewer, on a character boundary) of stderr, trimmed: what an
    /// error quotes of a failed command.
    pub fn stderr_tail(&self, max_bytes: usize) -> String {
        let stderr = String::from_utf8_lossy(&self.stderr);
        let start = stderr.len().saturating_sub(max_bytes);
        let start = (start..stderr.len()).find(|i| stderr.is_char_boundary(*i));
        start.map_or("", |start| stderr[start..].trim()).to_string()
    }
}

impl SandboxManager {
    /// Starts a command in a RUNNING sandbox; see [`crate::runtime::Runtime::exec`].
    #[tracing::instrument(name = "sandbox.exec", skip_all, fields(sandbox_id = %id))]
    pub async fn exec(
        &self,
        principal: &Principal,
        id: SandboxId,
        command: CommandSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        let limits = &self.runtime_config;
        let timeout = command.timeout.unwrap_or(limits.default_exec_timeout);
        if timeout > limits.max_exec_timeout {
            return Err(Error::invalid(
                "timeout",
                format!(
                    "must be at most {} (runtime.max_exec_timeout)",
                    humantime::format_duration(limits.max_exec_timeout)
                ),
            ));
        }
        let mut env = self.command_env(&sandbox, &template);
        env.extend(command.env);
        let spec = ExecSpec {
            argv: command.argv,
            env,
            working_dir: command.working_dir,
            stdin: command.stdin,
            timeout,
            max_output_bytes: limits.max_output_bytes,
        };
        self.runtimes.get(template.runtime).exec(id, &template.process, spec).await
    }

    /// Runs one of the template's hooks in a RUNNING sandbox and returns its output.
    #[tracing::instrument(name = "sandbox.run_hook", skip_all, fields(sandbox_id = %id, hook = %hook.hook))]
    pub async fn run_hook(
        &self,
        principal: &Principal,
        id: SandboxId,
        hook: HookSpec,
    ) -> Result<HookOutcome> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        self.hook(&sandbox, &template, &hook).await
    }

    /// Runs a hook without state checks (also while booting, for `cold_start`).
    pub(super) async fn hook(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        hook: &HookSpec,
    ) -> Result<HookOutcome> {
        let Some(script) = template.hooks.get(&hook.hook) else {
            return Err(Error::not_found("hook", &hook.hook));
        };
        let mut env = self.command_env(sandbox, template);
        env.insert("SANDBOX_HOOK".into(), hook.hook.clone());
        env.insert("CONVERSATION_ID".into(), hook.conversation_id.clone());
        let input = hook.input.as_ref().map(serde_json::Value::to_string).unwrap_or_default();
        env.insert("SANDBOX_HOOK_INPUT".into(), input);
        let spec = ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.clone()],
            env,
            working_dir: String::new(),
            stdin: Vec::new(),
            timeout: self.runtime_config.hook_timeout,
            max_output_bytes: self.runtime_config.max_output_bytes,
        };
        self.run_collected(sandbox.id, template, spec).await
    }

    /// Runs a command to its end and returns all its output (bounded by
    /// `spec.max_output_bytes`).
    pub(crate) async fn run_collected(
        &self,
        id: SandboxId,
        template: &Template,
        spec: ExecSpec,
    ) -> Result<HookOutcome> {
        let started = std::time::Instant::now();
        let mut events =
            self.runtimes.get(template.runtime).exec(id, &template.process, spec).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut exit = None;
        while let Some(event) = events.recv().await {
            match event {
                ExecEvent::Stdout(chunk) => stdout.extend(chunk),
                ExecEvent::Stderr(chunk) => stderr.extend(chunk),
                ExecEvent::Exit(status) => exit = Some(status),
            }
        }
        let exit = exit.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("the process ended without an exit status"))
        })?;
        Ok(HookOutcome { exit, stdout, stderr, duration: started.elapsed() })
    }

    /// The workspace of a RUNNING `process` sandbox, opened for file access.
    #[tracing::instrument(name = "sandbox.workspace", skip_all, fields(sandbox_id = %id))]
    pub async fn workspace(&self, principal: &Principal, id: SandboxId) -> Result<Workspace> {
        let (_, template) = self.running_with_runtime(principal, id).await?;
        Workspace::open(self.workspace_dir(id, &template)?, self.file_limits).await
    }

    /// The sandbox's workspace directory on this host; `FAILED_PRECONDITION` for a runtime
    /// without one.
    pub(crate) fn workspace_dir(&self, id: SandboxId, template: &Template) -> Result<PathBuf> {
        self.runtimes.get(template.runtime).workspace(id).ok_or_else(crate::runtime::no_processes)
    }

    /// The sandbox, when it is RUNNING and its template runs commands.
    pub(crate) async fn running_with_runtime(
        &self,
        principal: &Principal,
        id: SandboxId,
    ) -> Result<(Sandbox, std::sync::Arc<Template>)> {
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        if sandbox.state != SandboxState::Running {
            return Err(Error::FailedPrecondition {
                reason: "SANDBOX_NOT_RUNNING",
                message: format!(
                    "the sandbox is {}, not RUNNING; only running sandboxes run commands",
                    sandbox.state.as_str()
                ),
            });
        }
        let template = self.template_of(&sandbox)?;
        if template.runtime == crate::template::RuntimeKind::None {
            return Err(crate::runtime::no_processes());
        }
        Ok((sandbox, template))
    }

    /// The template a sandbox was made from (still configured on this server).
    pub(crate) fn template_of(&self, sandbox: &Sandbox) -> Result<std::sync::Arc<Template>> {
        self.templates.get(&sandbox.template).ok_or_else(|| Error::FailedPrecondition {
            reason: "TEMPLATE_GONE",
            message: format!(
                "the sandbox's template {:?} is no longer configured on this server",
                sandbox.template
            ),
        })
    }

    /// The template's env, then the sandbox's connection variables.
    pub(crate) fn command_env(
        &self,
        sandbox: &Sandbox,
        template: &Template,
    ) -> BTreeMap<String, String> {
        let mut env = template.process.env.clone();
        env.extend(super::connection::sandbox_env(sandbox.id, self.object_bucket()));
        env
    }
}
