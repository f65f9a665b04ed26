//! GitPush, GitPull and the clone at creation: commits move between the workspace (git run
//! inside the sandbox) and sandboxd's mirror of the template's repository (git run on the host,
//! the only side that reaches the remote) as bundles; see `crate::git`.
//!
//! A push commits, then under the distributed lock `git_push:<repository>:<branch>` fetches the
//! remote branch, rebases onto it and pushes with `--force-with-lease=<branch>:<commit fetched
//! under the lock>`: a compare-and-swap on the remote ref, so correctness does not rest on the
//! lock. A rejected push retries (backoff with jitter) while the lease is still held; once the
//! lease was lost, the refusal is final and names the stale fencing token. The lease is renewed
//! before every step.

use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use serde_json::json;

use super::{
    Sandbox, SandboxId,
    exec::HookOutcome,
    git::{GitRun, git_failure, not_a_repository},
    manager::SandboxManager,
};
use crate::{
    auth::Principal,
    error::{Error, Result},
    git::{
        PUSH_LOCK_SCOPE,
        mirror::{CommitId, Mirror, PushOutcome, is_commit_id},
        scripts,
    },
    lock::Lease,
    store::audit::event,
    template::{GitSource, Template, is_branch_name},
};

/// Room for the commit id and git's messages beside a bundle on a script's output.
const OUTPUT_SLACK: usize = 64 << 10;

/// What a caller asks GitPush to do.
#[derive(Debug, Clone, Default)]
pub struct PushSpec {
    pub remote: String,
    pub branch: String,
    pub message: String,
    pub paths: Vec<String>,
    pub author_name: String,
    pub author_email: String,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub commit: CommitId,
    pub pushed: bool,
    pub attempts: u32,
    pub lock_wait: Duration,
    pub fencing_token: u64,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub commit: CommitId,
    pub updated: bool,
}

/// The workspace's side of a push or pull, as the `PREPARE` script reported it.
struct Prepared {
    remote_branch: String,
    head: Option<CommitId>,
    /// The workspace's last-known commit of the remote branch.
    known: Option<CommitId>,
}

/// The result of the `INTEGRATE` script.
struct Integrated {
    head: CommitId,
    bundle: Vec<u8>,
}

impl SandboxManager {
    /// See the module docs.
    #[tracing::instrument(name = "sandbox.git_push", skip_all, fields(sandbox_id = %id))]
    pub async fn git_push(
        &self,
        principal: &Principal,
        id: SandboxId,
        spec: &PushSpec,
    ) -> Result<PushReport> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        let source = remote_of(&template, &spec.remote)?;
        let author = self.author(spec);
        let mut args = vec!["push".to_string(), spec.branch.clone(), spec.message.clone()];
        args.extend(spec.paths.iter().cloned());
        let prepared = self.prepare(&sandbox, &template, args, author.clone()).await?;
        let head = prepared.head.clone().ok_or_else(|| Error::FailedPrecondition {
            reason: "GIT_NO_COMMITS",
            message: "the branch has no commits to push".into(),
        })?;
        let mirror = self.git.mirrors.mirror(&source.repository).await?;
        let settings = self.git.settings();
        let resource = format!("git_push:{}:{}", source.repository, prepared.remote_branch);
        let started = Instant::now();
        let lease = self
            .git
            .locks
            .acquire(PUSH_LOCK_SCOPE, &resource, settings.lock_ttl, settings.lock_wait)
            .await?;
        let lock_wait = started.elapsed();
        let acquired_at = Utc::now();
        let mut attempts = 0;
        let outcome = self
            .push_under_lease(
                &sandbox,
                &template,
                &mirror,
                &prepared,
                &lease,
                &author,
                &mut attempts,
            )
            .await;
        let released_at = Utc::now();
        if let Err(error) =
            self.git.locks.release(PUSH_LOCK_SCOPE, &resource, &lease.owner_token).await
        {
            tracing::warn!(%error, "the push lock could not be released; it expires with its lease");
        }
        let details = |outcome: &str, commit: &str| {
            json!({
                "repository": source.repository,
                "branch": prepared.remote_branch,
                "outcome": outcome,
                "commit": commit,
                "fencing_token": lease.fencing_token,
                "attempts": attempts,
                "lock_wait_ms": lock_wait.as_millis() as u64,
                "lock_acquired_at": acquired_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "lock_released_at": released_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })
        };
        let actor = principal.actor();
        match outcome {
            Ok(Some(commit)) => {
                // After the lock is released: the workspace records the pushed commit as the
                // remote branch's (and its upstream), which no other holder needs to wait for.
                let args = vec![prepared.remote_branch.clone(), commit.clone()];
                let recorded = self
                    .script(&sandbox, &template, scripts::PUSHED, args, Vec::new(), &author)
                    .await;
                if !recorded.is_ok_and(|outcome| outcome.exit.code == 0) {
                    tracing::warn!("the workspace could not record the pushed commit");
                }
                self.store
                    .record_sandbox_event(
                        &sandbox,
                        &actor,
                        event::GIT_PUSHED,
                        details("pushed", &commit),
                    )
                    .await?;
                let report = PushReport {
                    commit,
                    pushed: true,
                    attempts,
                    lock_wait,
                    fencing_token: lease.fencing_token,
                };
                Ok(report)
            }
            Ok(None) => Ok(PushReport {
                commit: head,
                pushed: false,
                attempts,
                lock_wait,
                fencing_token: lease.fencing_token,
            }),
            Err(error) => {
                if let Error::Aborted { reason, .. } = &error {
                    let event = details(reason, "");
                    if let Err(record) = self
                        .store
                        .record_sandbox_event(&sandbox, &actor, event::GIT_PUSH_REFUSED, event)
                        .await
                    {
                        tracing::warn!(error = %record, "a refused push could not be audited");
                    }
                }
                Err(error)
            }
        }
    }

    /// The attempts of a push while the lease is held; the pushed commit, or `None` when the
    /// remote already had everything.
    #[allow(clippy::too_many_arguments)]
    async fn push_under_lease(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        mirror: &Mirror<'_>,
        prepared: &Prepared,
        lease: &Lease,
        author: &[(String, String)],
        attempts: &mut u32,
    ) -> Result<Option<CommitId>> {
        let settings = self.git.settings();
        let branch = &prepared.remote_branch;
        let mut known = prepared.known.clone();
        let mut backoff = settings.retry_backoff;
        loop {
            *attempts += 1;
            self.renew(lease).await?;
            let base = mirror.fetch(branch).await?;
            let integrated = self
                .integrate(
                    sandbox, template, mirror, branch, &base, &known, "rebase", "push", author,
                )
                .await?;
            known.clone_from(&base);
            if base.as_deref() == Some(integrated.head.as_str()) {
                return Ok(None);
            }
            let commit = if integrated.bundle.is_empty() {
                integrated.head.clone()
            } else {
                mirror.import(&integrated.bundle, &sandbox.id.to_string()).await?
            };
            let descends = match &base {
                Some(base) => mirror.is_ancestor(base, &commit).await?,
                None => mirror.has_commit(&commit).await?,
            };
            if commit != integrated.head || !descends {
                return Err(Error::FailedPrecondition {
                    reason: "GIT_FAILED",
                    message: "the workspace's rebased branch does not build on the remote branch"
                        .into(),
                });
            }
            self.renew(lease).await?;
            self.git.pauses.before_push(sandbox.id.as_uuid()).await;
            let pushed = mirror.push(branch, &commit, base.as_deref()).await;
            if !integrated.bundle.is_empty() {
                mirror.forget_import(&sandbox.id.to_string()).await?;
            }
            match pushed? {
                PushOutcome::Pushed => return Ok(Some(commit)),
                PushOutcome::Rejected(line) => {
                    // Only a lost lease makes the refusal final; Redis not answering is
                    // itself the error (UNAVAILABLE, retryable), not a stale holder.
                    let lost = match self.renew(lease).await {
                        Ok(()) => false,
                        Err(Error::Aborted { reason: "LOCK_LEASE_EXPIRED", .. }) => true,
                        Err(error) => return Err(error),
                    };
                    if lost {
                        return Err(Error::Aborted {
                            reason: "LOCK_LEASE_EXPIRED",
                            message: format!(
                                "the push lock's lease with fencing token {} expired before the push, and the remote branch {branch} moved on meanwhile; the remote refused the push, nothing was overwritten ({line})",
                                lease.fencing_token
                            ),
                        });
                    }
                    if *attempts >= settings.max_push_attempts {
                        return Err(Error::Aborted {
                            reason: "GIT_PUSH_REJECTED",
                            message: format!(
                                "the remote branch {branch} kept moving: {} attempts were rejected ({line})",
                                attempts
                            ),
                        });
                    }
                    tracing::info!(
                        attempt = *attempts,
                        "push rejected (the remote moved on); retrying"
                    );
                    let jitter = rand::rng().random_range(0.5..1.5);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }

    /// Fetches `branch` of the template's repository and integrates it into the workspace's
    /// current branch, by rebase or merge (see `GitPullRequest`).
    #[tracing::instrument(name = "sandbox.git_pull", skip_all, fields(sandbox_id = %id))]
    pub async fn git_pull(
        &self,
        principal: &Principal,
        id: SandboxId,
        remote: &str,
        branch: &str,
        rebase: bool,
    ) -> Result<PullReport> {
        let (sandbox, template) = self.running_with_runtime(principal, id).await?;
        let source = remote_of(&template, remote)?;
        let author = self.author(&PushSpec::default());
        let args = vec!["pull".to_string(), branch.to_string(), String::new()];
        let prepared = self.prepare(&sandbox, &template, args, author.clone()).await?;
        let mirror = self.git.mirrors.mirror(&source.repository).await?;
        let remote_branch = &prepared.remote_branch;
        let base = mirror.fetch(remote_branch).await?;
        if base.is_none() {
            return Err(Error::FailedPrecondition {
                reason: "GIT_NO_REMOTE_BRANCH",
                message: format!("the repository has no branch {remote_branch}"),
            });
        }
        let mode = if rebase { "rebase" } else { "merge" };
        let integrated = self
            .integrate(
                &sandbox,
                &template,
                &mirror,
                remote_branch,
                &base,
                &prepared.known,
                mode,
                "pull",
                &author,
            )
            .await?;
        let updated = prepared.head.as_deref() != Some(integrated.head.as_str());
        Ok(PullReport { commit: integrated.head, updated })
    }

    /// Clones the template's repository into a new sandbox's (empty) workspace.
    pub(crate) async fn clone_repository(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        source: &GitSource,
    ) -> Result<()> {
        let mirror = self.git.mirrors.mirror(&source.repository).await?;
        if mirror.fetch(&source.branch).await?.is_none() {
            return Err(Error::FailedPrecondition {
                reason: "GIT_CLONE_FAILED",
                message: format!("the template's repository has no branch {}", source.branch),
            });
        }
        let bundle = mirror.bundle(&source.branch, None).await?;
        let local = match source.agent_branch {
            true => format!("sandbox/{}", sandbox.id),
            false => source.branch.clone(),
        };
        let args = vec![local, source.branch.clone(), source.repository.clone()];
        let outcome = self.script(sandbox, template, scripts::CLONE, args, bundle, &[]).await?;
        if outcome.exit.code != 0 {
            let error = git_failure("clone", &outcome);
            return Err(Error::FailedPrecondition {
                reason: "GIT_CLONE_FAILED",
                message: format!("cloning the template's repository failed: {error}"),
            });
        }
        Ok(())
    }

    async fn prepare(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        args: Vec<String>,
        author: Vec<(String, String)>,
    ) -> Result<Prepared> {
        let outcome =
            self.script(sandbox, template, scripts::PREPARE, args, Vec::new(), &author).await?;
        match outcome.exit.code {
            0 => {}
            20 => return Err(not_a_repository()),
            21 | 22 => {
                return Err(Error::FailedPrecondition {
                    reason: "GIT_BRANCH_UNUSABLE",
                    message: String::from_utf8_lossy(&outcome.stderr).trim().to_string(),
                });
            }
            _ => return Err(git_failure("commit", &outcome)),
        }
        let text = String::from_utf8_lossy(&outcome.stdout).into_owned();
        let mut lines = text.split('\n');
        let _local = lines.next().unwrap_or_default();
        let remote_branch = lines.next().unwrap_or_default().to_string();
        let commit = |line: Option<&str>| line.filter(|l| is_commit_id(l)).map(str::to_string);
        let head = commit(lines.next());
        let known = commit(lines.next());
        if !is_branch_name(&remote_branch) {
            return Err(Error::FailedPrecondition {
                reason: "GIT_BRANCH_UNUSABLE",
                message:
                    "the branch name is not one sandboxd pushes or pulls ([A-Za-z0-9._/-], no '..')"
                        .into(),
            });
        }
        Ok(Prepared { remote_branch, head, known })
    }

    /// Runs `INTEGRATE` with the remote commit `base` (a bundle of it when the workspace does
    /// not know it yet); conflicts answer ABORTED with the paths, the workspace as before.
    #[allow(clippy::too_many_arguments)]
    async fn integrate(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        mirror: &Mirror<'_>,
        branch: &str,
        base: &Option<CommitId>,
        known: &Option<CommitId>,
        mode: &str,
        emit: &str,
        author: &[(String, String)],
    ) -> Result<Integrated> {
        let bundle = match base {
            Some(base) if known.as_ref() != Some(base) => {
                mirror.bundle(branch, known.as_deref()).await?
            }
            _ => Vec::new(),
        };
        let fetch = if bundle.is_empty() { "0" } else { "1" };
        let args = [mode, branch, base.as_deref().unwrap_or_default(), fetch, emit];
        let args = args.iter().map(|arg| arg.to_string()).collect();
        let outcome =
            self.script(sandbox, template, scripts::INTEGRATE, args, bundle, author).await?;
        match outcome.exit.code {
            0 => {}
            11 => {
                let paths: Vec<String> = outcome
                    .stdout
                    .split(|byte| *byte == 0)
                    .filter(|path| !path.is_empty())
                    .map(|path| String::from_utf8_lossy(path).into_owned())
                    .collect();
                if paths.is_empty() {
                    return Err(git_failure(mode, &outcome));
                }
                return Err(Error::Aborted {
                    reason: "GIT_CONFLICT",
                    message: format!(
                        "the {mode} onto the remote branch {branch} conflicts in: {}; it was undone, the workspace is as it was before",
                        paths.join(", ")
                    ),
                });
            }
            12 => {
                return Err(Error::FailedPrecondition {
                    reason: "GIT_UNCOMMITTED_CHANGES",
                    message: "the workspace has uncommitted changes in tracked files; commit or stash them first".into(),
                });
            }
            _ => return Err(git_failure(mode, &outcome)),
        }
        if String::from_utf8_lossy(&outcome.stderr).contains("[sandboxd: output cut") {
            return Err(Error::FailedPrecondition {
                reason: "GIT_BUNDLE_TOO_LARGE",
                message: "the commits to push are larger than git.max_bundle_bytes".into(),
            });
        }
        let newline =
            outcome.stdout.iter().position(|byte| *byte == b'\n').unwrap_or(outcome.stdout.len());
        let head = String::from_utf8_lossy(&outcome.stdout[..newline]).trim().to_string();
        if !is_commit_id(&head) {
            return Err(git_failure(mode, &outcome));
        }
        let bundle = outcome.stdout.get(newline + 1..).unwrap_or_default().to_vec();
        Ok(Integrated { head, bundle })
    }

    async fn script(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        script: &str,
        args: Vec<String>,
        stdin: Vec<u8>,
        author: &[(String, String)],
    ) -> Result<HookOutcome> {
        let mut argv = vec!["sh".to_string(), "-c".into(), script.to_string(), "sh".into()];
        argv.extend(args);
        let run = GitRun {
            argv,
            stdin,
            extra_env: author.to_vec(),
            limit: self.git.settings().max_bundle_bytes + OUTPUT_SLACK,
        };
        self.run_git(sandbox, template, run).await
    }

    /// Author and committer of new commits: the request's, else the configured default.
    fn author(&self, spec: &PushSpec) -> Vec<(String, String)> {
        let settings = self.git.settings();
        let name = non_empty(&spec.author_name, &settings.author_name);
        let email = non_empty(&spec.author_email, &settings.author_email);
        ["AUTHOR", "COMMITTER"]
            .into_iter()
            .flat_map(|who| {
                [
                    (format!("GIT_{who}_NAME"), name.to_string()),
                    (format!("GIT_{who}_EMAIL"), email.to_string()),
                ]
            })
            .collect()
    }

    /// Extends the push lease; `ABORTED` (`LOCK_LEASE_EXPIRED`) when it was lost.
    async fn renew(&self, lease: &Lease) -> Result<()> {
        let ttl = self.git.settings().lock_ttl;
        match self.git.locks.renew(PUSH_LOCK_SCOPE, &lease.resource, &lease.owner_token, ttl).await
        {
            Ok(_) => Ok(()),
            Err(Error::FailedPrecondition { .. }) => Err(Error::Aborted {
                reason: "LOCK_LEASE_EXPIRED",
                message: format!(
                    "the push lock's lease with fencing token {} expired before the push finished; nothing was pushed",
                    lease.fencing_token
                ),
            }),
            Err(error) => Err(error),
        }
    }
}

fn non_empty<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

/// The template's repository, the only remote (`origin`) GitPush and GitPull talk to: remotes
/// come from trusted template files, never from the workspace's own configuration.
fn remote_of<'a>(template: &'a Template, remote: &str) -> Result<&'a GitSource> {
    let source = template.git.as_ref().ok_or_else(|| Error::FailedPrecondition {
        reason: "GIT_NO_REMOTE",
        message: format!(
            "the template {} names no git repository ([git] repository)",
            template.name
        ),
    })?;
    if !remote.is_empty() && remote != "origin" {
        return Err(Error::invalid(
            "remote",
            "must be empty or \"origin\" (the template's repository)",
        ));
    }
    Ok(source)
}
