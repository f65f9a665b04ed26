//! sandboxd's bare mirrors of template repositories: the only place git talks to a remote.
//!
//! A sandbox has no network and sees no host path, so commits travel between its workspace and
//! a mirror as git bundles through the stdin and stdout of commands run inside the sandbox; the
//! mirror fetches from and pushes to the remote. A bundle from a sandbox is untrusted data:
//! git reads it with `transfer.fsckObjects` and never runs anything from it.
//!
//! Host git steps of one mirror run one at a time (a mutex per mirror); the distributed push
//! lock orders pushes across replicas. Each replica has mirrors of its own.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{
    host::{HostGit, Output, write_askpass},
    settings::GitSettings,
};
use crate::error::{Error, Result};

/// A full commit id, as git prints it.
pub type CommitId = String;

/// Whether `text` is a full SHA-1 or SHA-256 commit id.
pub fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How a compare-and-swap push ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Pushed,
    /// The remote branch is no longer at the expected commit (someone else pushed), or the push
    /// was not a fast-forward.
    Rejected(String),
}

pub struct Mirrors {
    settings: Arc<GitSettings>,
    askpass: OnceCell<PathBuf>,
    /// One mutex per mirror directory.
    busy: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(settings: Arc<GitSettings>) -> Self {
        Self { settings, askpass: OnceCell::new(), busy: Mutex::default() }
    }

    pub fn settings(&self) -> &GitSettings {
        &self.settings
    }

    /// The mirror of `url`, created on first use.
    pub async fn mirror(&self, url: &str) -> Result<Mirror<'_>> {
        let askpass = self.askpass.get_or_try_init(|| self.prepare_dir()).await?;
        let digest = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        let path = self.settings.mirror_dir.join(format!("{digest}.git"));
        let busy = {
            let mut busy = self.busy.lock().expect("mirror mutexes poisoned");
            busy.entry(path.clone()).or_default().clone()
        };
        let mirror = Mirror { mirrors: self, url: url.to_string(), path, askpass, busy };
        mirror.create_if_missing().await?;
        Ok(mirror)
    }

    async fn prepare_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.settings.mirror_dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            write_askpass(&dir)
        })
        .await
        .map_err(|error| Error::Internal(error.into()))?
        .map_err(|error| {
            Error::Internal(anyhow::anyhow!("git.mirror_dir cannot be prepared: {error}"))
        })
    }
}

/// One repository's mirror.
pub struct Mirror<'a> {
    mirrors: &'a Mirrors,
    url: String,
    path: PathBuf,
    askpass: &'a Path,
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl Mirror<'_> {
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn git<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        let settings = self.mirrors.settings();
        let git = HostGit {
            dir: &self.path,
            askpass: self.askpass,
            credential: settings.credential_for(&self.url),
            timeout: settings.command_timeout,
        };
        git.run(args, stdin).await
    }

    async fn create_if_missing(&self) -> Result<()> {
        let _busy = self.busy.lock().await;
        if tokio::fs::try_exists(self.path.join("HEAD")).await.unwrap_or(false) {
            return Ok(());
        }
        let temp = self.path.with_extension(format!("init-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&temp)
            .await
            .map_err(|error| Error::Internal(anyhow::anyhow!("creating a git mirror: {error}")))?;
        let init = HostGit {
            dir: &temp,
            askpass: self.askpass,
            credential: None,
            timeout: self.mirrors.settings().command_timeout,
        };
        let output = init.run(&["init", "-q", "--bare"], None).await?;
        let output = if output.success {
            init.run(&["config", "remote.origin.url", &self.url], None).await?
        } else {
            output
        };
        if !output.success {
            let _ = tokio::fs::remove_dir_all(&temp).await;
            return Err(Error::Internal(anyhow::anyhow!(
                "git init of a mirror failed: {}",
                output.stderr.trim()
            )));
        }
        tokio::fs::rename(&temp, &self.path)
            .await
            .map_err(|error| Error::Internal(anyhow::anyhow!("placing a git mirror: {error}")))
    }

    /// Fetches `branch` from the remote into `refs/remotes/origin/<branch>` and returns its
    /// commit, or `None` when the remote has no such branch.
    pub async fn fetch(&self, branch: &str) -> Result<Option<CommitId>> {
        let _busy = self.busy.lock().await;
        let tracking = tracking_ref(branch);
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        let fetched = self
            .git(&["fetch", "-q", "--no-tags", "--no-write-fetch-head", "origin", &refspec], None)
            .await?;
        if !fetched.success {
            if fetched.stderr.contains("couldn't find remote ref") {
                self.git(&["update-ref", "-d", &tracking], None).await?;
                return Ok(None);
            }
            return Err(self.remote_error("fetch", &fetched));
        }
        self.resolve(&tracking).await
    }

    async fn resolve(&self, reference: &str) -> Result<Option<CommitId>> {
        let output = self
            .git(&["rev-parse", "-q", "--verify", &format!("{reference}^{{commit}}")], None)
            .await?;
        Ok(output.success.then(|| output.stdout_line()).filter(|id| is_commit_id(id)))
    }

    /// Whether the mirror has `commit`.
    pub async fn has_commit(&self, commit: &str) -> Result<bool> {
        if !is_commit_id(commit) {
            return Ok(false);
        }
        let _busy = self.busy.lock().await;
        Ok(self.git(&["cat-file", "-e", &format!("{commit}^{{commit}}")], None).await?.success)
    }

    /// A bundle of `refs/remotes/origin/<branch>`, without the history of `have` when the
    /// mirror knows that commit (so its size grows with what is new, not with the repository).
    pub async fn bundle(&self, branch: &str, have: Option<&str>) -> Result<Vec<u8>> {
        let known = match have {
            Some(have) => self.has_commit(have).await?,
            None => false,
        };
        let _busy = self.busy.lock().await;
        let tracking = tracking_ref(branch);
        let range = match have.filter(|_| known) {
            Some(have) => format!("^{have}"),
            None => String::new(),
        };
        let mut args = vec!["bundle", "create", "-q", "-", tracking.as_str()];
        if !range.is_empty() {
            args.push(&range);
        }
        let output = self.git(&args, None).await?;
        if !output.success && output.stderr.contains("Refusing to create empty bundle") {
            // The workspace already has the branch's commit (the remote went back).
            return Ok(Vec::new());
        }
        if !output.success {
            return Err(Error::Internal(anyhow::anyhow!(
                "bundling {branch} in the mirror failed: {}",
                output.stderr.trim()
            )));
        }
        self.check_size(output.stdout.len())?;
        Ok(output.stdout)
    }

    /// Reads a bundle a sandbox made (its `HEAD`) into `refs/sandboxd/incoming/<name>` and
    /// returns the commit.
    pub async fn import(&self, bundle: &[u8], name: &str) -> Result<CommitId> {
        self.check_size(bundle.len())?;
        let _busy = self.busy.lock().await;
        let file = tempfile::Builder::new()
            .prefix("incoming-")
            .suffix(".bundle")
            .tempfile_in(&self.path)
            .map_err(|error| Error::Internal(error.into()))?;
        tokio::fs::write(file.path(), bundle)
            .await
            .map_err(|error| Error::Internal(error.into()))?;
        let target = format!("refs/sandboxd/incoming/{name}");
        let refspec = format!("+HEAD:{target}");
        let path = file.path().as_os_str();
        let args = [
            "fetch".as_ref(),
            "-q".as_ref(),
            "--no-tags".as_ref(),
            "--no-write-fetch-head".as_ref(),
            path,
            refspec.as_ref(),
        ];
        let output = self.git(&args, None).await?;
        if !output.success {
            return Err(Error::FailedPrecondition {
                reason: "GIT_BUNDLE_INVALID",
                message: format!(
                    "the workspace's commits could not be read: {}",
                    output.stderr.trim()
                ),
            });
        }
        self.resolve(&target)
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("an imported bundle left no commit")))
    }

    /// Drops the ref [`Mirror::import`] made, so the mirror keeps no ref per sandbox.
    pub async fn forget_import(&self, name: &str) -> Result<()> {
        let _busy = self.busy.lock().await;
        self.git(&["update-ref", "-d", &format!("refs/sandboxd/incoming/{name}")], None).await?;
        Ok(())
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool> {
        let _busy = self.busy.lock().await;
        let output = self.git(&["merge-base", "--is-ancestor", ancestor, descendant], None).await?;
        Ok(output.success)
    }

    /// Pushes `commit` to the remote `branch` only if the remote branch is still at `expected`
    /// (`None`: does not exist): a compare-and-swap on the remote ref, which keeps a holder whose
    /// lock lease ran out from overwriting another's commit.
    pub async fn push(
        &self,
        branch: &str,
        commit: &str,
        expected: Option<&str>,
    ) -> Result<PushOutcome> {
        let _busy = self.busy.lock().await;
        let remote_ref = format!("refs/heads/{branch}");
        let lease = format!("--force-with-lease={remote_ref}:{}", expected.unwrap_or_default());
        let refspec = format!("{commit}:{remote_ref}");
        let output = self
            .git(&["push", "--porcelain", "--no-verify", &lease, "origin", &refspec], None)
            .await?;
        if output.success {
            self.git(&["update-ref", &tracking_ref(branch), commit], None).await?;
            return Ok(PushOutcome::Pushed);
        }
        let printed = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), output.stderr);
        if printed.contains("[rejected]") || printed.contains("stale info") {
            let line = printed
                .lines()
                .find(|line| line.contains("[rejected]") || line.contains("stale info"))
                .unwrap_or("rejected")
                .trim()
                .to_string();
            return Ok(PushOutcome::Rejected(line));
        }
        Err(self.remote_error("push", &output))
    }

    fn check_size(&self, bytes: usize) -> Result<()> {
        let limit = self.mirrors.settings().max_bundle_bytes;
        if bytes > limit {
            return Err(Error::FailedPrecondition {
                reason: "GIT_BUNDLE_TOO_LARGE",
                message: format!(
                    "the commits to transfer take {bytes} bytes, more than git.max_bundle_bytes ({limit})"
                ),
            });
        }
        Ok(())
    }

    /// A remote that refuses us (no such repository, bad credentials): FAILED_PRECONDITION,
    /// since retrying will not help; one that cannot be reached: UNAVAILABLE (retryable). With
    /// git's last line, which holds no credentials (there are none in the URL).
    fn remote_error(&self, step: &str, output: &Output) -> Error {
        let message = output.stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        let message = format!("git {step} of {} failed: {}", self.url, message.trim());
        let refused = [
            "does not appear to be a git repository",
            "not found",
            "Authentication failed",
            "could not read Username",
            "Permission denied",
            "403",
        ];
        if refused.iter().any(|needle| output.stderr.contains(needle)) {
            return Error::FailedPrecondition { reason: "GIT_REMOTE_REFUSED", message };
        }
        Error::unavailable("git remote", anyhow::anyhow!(message))
    }
}

/// Where a mirror keeps the remote's `branch`.
fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}
