//! GitStatus and GitDiff: git run inside the sandbox (its uid, under bubblewrap), never on the
//! host, since the workspace's repository configuration is the sandbox's (`crate::git`).

use std::{sync::Arc, time::Duration};

use super::{Sandbox, SandboxId, exec::HookOutcome, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::{Error, Result},
    git::status::{self, Status},
    runtime::ExecSpec,
    template::Template,
};

/// How long one git run inside a sandbox may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

impl SandboxManager {
    /// `git status` of the workspace repository, parsed.
    #[tracing::instrument(name = "sandbox.git_status", skip_all, fields(sandbox_id = %id))]
    pub async fn git_status(&self, principal: &Principal, id: SandboxId) -> Result<Status> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        let args = ["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"];
        let outcome = self.git(&sandbox, &template, &args, &[], 16 << 20).await?;
        Ok(status::parse(&String::from_utf8_lossy(&outcome.stdout)))
    }

    /// The unified diff of the unstaged (or staged) changes, cut at `limit` bytes; returns it
    /// and whether it was cut.
    #[tracing::instrument(name = "sandbox.git_diff", skip_all, fields(sandbox_id = %id))]
    pub async fn git_diff(
        &self,
        principal: &Principal,
        id: SandboxId,
        spec: &DiffSpec,
        limit: usize,
    ) -> Result<(String, bool)> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        let mut args = vec!["diff", "--no-color", "--no-ext-diff"];
        if spec.staged {
            args.push("--cached");
        }
        if !spec.base.is_empty() {
            // Validated as a plain ref name: never an option.
            args.push(&spec.base);
        }
        let outcome = self.git(&sandbox, &template, &args, &spec.paths, limit).await?;
        let cut = String::from_utf8_lossy(&outcome.stderr).contains("[sandboxd: output cut");
        Ok((String::from_utf8_lossy(&outcome.stdout).into_owned(), cut))
    }

    async fn git(
        &self,
        sandbox: &Sandbox,
        template: &Arc<Template>,
        args: &[&str],
        paths: &[String],
        limit: usize,
    ) -> Result<HookOutcome> {
        let mut argv = vec!["git".to_string()];
        argv.extend(args.iter().map(|arg| arg.to_string()));
        argv.push("--".into());
        argv.extend(paths.iter().cloned());
        let outcome = self.run_git(sandbox, template, GitRun::new(argv, limit)).await?;
        if outcome.exit.code == 0 {
            return Ok(outcome);
        }
        Err(git_failure(args[0], &outcome))
    }

    /// Runs a git command line (or a script of git commands) inside the sandbox, with git's
    /// prompts off and `extra_env` (author, committer) on top of the sandbox's environment.
    pub(crate) async fn run_git(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        run: GitRun,
    ) -> Result<HookOutcome> {
        let mut env = self.command_env(sandbox, template);
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        env.insert("GIT_OPTIONAL_LOCKS".into(), "0".into());
        env.insert("GIT_EDITOR".into(), "true".into());
        env.extend(run.extra_env);
        let spec = ExecSpec {
            argv: run.argv,
            env,
            working_dir: String::new(),
            stdin: run.stdin,
            timeout: GIT_TIMEOUT,
            max_output_bytes: run.limit,
        };
        self.run_collected(sandbox.id, template, spec).await
    }
}

/// What GitDiff compares.
#[derive(Debug, Clone, Default)]
pub struct DiffSpec {
    /// The index (instead of the work tree) against `base` or `HEAD`.
    pub staged: bool,
    /// A ref to compare against; empty: the index (or `HEAD` when staged).
    pub base: String,
    pub paths: Vec<String>,
}

/// One git run inside a sandbox.
pub(crate) struct GitRun {
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    pub extra_env: Vec<(String, String)>,
    /// Output (stdout and stderr together) beyond which it is cut.
    pub limit: usize,
}

impl GitRun {
    pub fn new(argv: Vec<String>, limit: usize) -> Self {
        Self { argv, stdin: Vec::new(), extra_env: Vec::new(), limit }
    }
}

pub(crate) fn not_a_repository() -> Error {
    Error::FailedPrecondition {
        reason: "NOT_A_GIT_REPOSITORY",
        message: "the workspace is not a git repository".into(),
    }
}

/// The error of a git run that exited non-zero: not a repository, or git's own message.
pub(crate) fn git_failure(step: &str, outcome: &HookOutcome) -> Error {
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    if stderr.contains("not a git repository") {
        return not_a_repository();
    }
    Error::FailedPrecondition {
        reason: "GIT_FAILED",
        message: format!("git {step} failed: {}", outcome.stderr_tail(2048)),
    }
}
