//! Workspace sync (object store) and git tools.

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    SandboxdMcp,
    convert::{duration, millis, sandbox_id, time},
    errors::{ToolError, cancellable},
};
use crate::proto::{
    GitChangeType, GitDiffRequest, GitPullRequest, GitPushRequest, GitStatusRequest,
    PullWorkspaceRequest, PushWorkspaceRequest, SyncResult,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Only these workspace paths (files or directories); default: the whole workspace.
    #[serde(default)]
    paths: Vec<String>,
    /// Also delete stored files that are gone from the workspace.
    #[serde(default)]
    delete: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Only these paths; default: everything stored.
    #[serde(default)]
    paths: Vec<String>,
    /// Also delete workspace files that are not stored.
    #[serde(default)]
    delete: bool,
    /// Skip the pull when the last sync is younger than this, e.g. "5m".
    #[serde(default)]
    max_staleness: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SyncView {
    files_scanned: i64,
    files_transferred: i64,
    files_deleted: i64,
    bytes_transferred: i64,
    duration_ms: u64,
    /// True when a pull was skipped because the last sync was recent enough.
    skipped: bool,
    sync_time: Option<String>,
}

impl From<SyncResult> for SyncView {
    fn from(result: SyncResult) -> Self {
        SyncView {
            files_scanned: result.files_scanned,
            files_transferred: result.files_transferred,
            files_deleted: result.files_deleted,
            bytes_transferred: result.bytes_transferred,
            duration_ms: millis(&result.duration),
            skipped: result.skipped,
            sync_time: time(&result.sync_time),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxArg {
    /// The sandbox's id or name.
    sandbox: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FileChange {
    path: String,
    /// Change staged in the index: UNMODIFIED, MODIFIED, ADDED, DELETED, RENAMED, COPIED,
    /// UNTRACKED or CONFLICTED.
    staged: String,
    /// Change in the work tree not yet staged.
    unstaged: String,
    /// For renames and copies, where it came from.
    original_path: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct StatusResult {
    /// The current branch; empty when HEAD is detached.
    branch: String,
    files: Vec<FileChange>,
    /// Local commits the upstream does not have.
    ahead: i32,
    /// Upstream commits the branch does not have (as of the last fetch).
    behind: i32,
    clean: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Diff staged changes (index against HEAD) instead of unstaged ones.
    #[serde(default)]
    staged: bool,
    /// Only these paths.
    #[serde(default)]
    paths: Vec<String>,
    /// Diff against this commit or branch, e.g. "HEAD" or "origin/main".
    #[serde(default)]
    base: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DiffResult {
    /// Unified diff; empty when nothing changed.
    diff: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitPullArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Remote branch to pull (default: the current branch's upstream).
    #[serde(default)]
    branch: Option<String>,
    /// Merge instead of rebasing local commits onto the remote branch.
    #[serde(default)]
    merge: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GitPullResult {
    /// The branch tip after the pull.
    commit: String,
    /// True when the branch changed.
    updated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitPushArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Commit message: when given, changes are staged and committed before the push; without
    /// it only existing commits are pushed.
    #[serde(default)]
    message: Option<String>,
    /// With `message`: only commit changes under these paths.
    #[serde(default)]
    paths: Vec<String>,
    /// The branch, which must be the current one (default: the current branch).
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    author_name: Option<String>,
    #[serde(default)]
    author_email: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GitPushResult {
    /// The branch tip after the call.
    commit: String,
    /// True when the remote branch was updated.
    pushed: bool,
    /// Push attempts made (retries after the remote moved on).
    attempts: i32,
    /// How long the push waited for the branch's lock.
    lock_wait_ms: u64,
    /// The fencing token of the lock held during the push.
    fencing_token: u64,
}

fn change_name(change: i32) -> String {
    let change = GitChangeType::try_from(change).unwrap_or_default();
    change.as_str_name().trim_start_matches("GIT_CHANGE_TYPE_").to_string()
}

#[tool_router(router = sync_git_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "Upload a sandbox workspace's new and changed files to its object \
        storage (incremental), so they survive the sandbox.")]
    async fn workspace_push(
        &self,
        Parameters(args): Parameters<PushArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<SyncView>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = PushWorkspaceRequest { sandbox_id, paths: args.paths, delete: args.delete };
        let result = cancellable(&cancel, self.sync().push_workspace(request))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox"))?;
        Ok(Json(result.into_inner().into()))
    }

    #[tool(description = "Download new and changed files from a sandbox's object storage into \
        its workspace (incremental).")]
    async fn workspace_pull(
        &self,
        Parameters(args): Parameters<PullArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<SyncView>, ToolError> {
        let max_staleness = duration("max_staleness", args.max_staleness.as_deref())?;
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = PullWorkspaceRequest {
            sandbox_id,
            paths: args.paths,
            delete: args.delete,
            max_staleness,
        };
        let result = cancellable(&cancel, self.sync().pull_workspace(request))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox"))?;
        Ok(Json(result.into_inner().into()))
    }

    #[tool(description = "Git status of a sandbox's workspace repository: branch, changed and \
        untracked files, commits ahead of and behind the upstream.")]
    async fn git_status(
        &self,
        Parameters(args): Parameters<SandboxArg>,
        cancel: CancellationToken,
    ) -> Result<Json<StatusResult>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let status = cancellable(&cancel, self.sync().git_status(GitStatusRequest { sandbox_id }))
            .await?
            .into_inner();
        let files = status
            .files
            .into_iter()
            .map(|file| FileChange {
                staged: change_name(file.staged),
                unstaged: change_name(file.unstaged),
                path: file.path,
                original_path: file.original_path,
            })
            .collect();
        Ok(Json(StatusResult {
            branch: status.branch,
            files,
            ahead: status.ahead,
            behind: status.behind,
            clean: status.clean,
        }))
    }

    #[tool(description = "Unified diff of a sandbox workspace's changes: unstaged (default), \
        staged, or the work tree against a commit or branch (base).")]
    async fn git_diff(
        &self,
        Parameters(args): Parameters<DiffArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<DiffResult>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = GitDiffRequest {
            sandbox_id,
            staged: args.staged,
            paths: args.paths,
            base: args.base.unwrap_or_default(),
        };
        let diff = cancellable(&cancel, self.sync().git_diff(request)).await?.into_inner().diff;
        Ok(Json(DiffResult { diff }))
    }

    #[tool(description = "Fetch a branch of the template's repository and rebase the \
        workspace's current branch onto it (or merge with merge: true). A conflict fails with \
        ABORTED/GIT_CONFLICT, lists the paths and leaves the workspace as it was.")]
    async fn git_pull(
        &self,
        Parameters(args): Parameters<GitPullArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<GitPullResult>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = GitPullRequest {
            sandbox_id,
            remote: String::new(),
            branch: args.branch.unwrap_or_default(),
            rebase: !args.merge,
        };
        let pulled = cancellable(&cancel, self.sync().git_pull(request)).await?.into_inner();
        Ok(Json(GitPullResult { commit: pulled.commit, updated: pulled.updated }))
    }

    #[tool(description = "Commit (when message is given) and push the workspace's current \
        branch to the template's repository, under a distributed lock per branch, rebasing onto \
        the remote and retrying if it moved on.")]
    async fn git_push(
        &self,
        Parameters(args): Parameters<GitPushArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<GitPushResult>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = GitPushRequest {
            sandbox_id,
            remote: String::new(),
            branch: args.branch.unwrap_or_default(),
            message: args.message.unwrap_or_default(),
            paths: args.paths,
            author_name: args.author_name.unwrap_or_default(),
            author_email: args.author_email.unwrap_or_default(),
        };
        let pushed = cancellable(&cancel, self.sync().git_push(request)).await?.into_inner();
        Ok(Json(GitPushResult {
            commit: pushed.commit,
            pushed: pushed.pushed,
            attempts: pushed.attempts,
            lock_wait_ms: millis(&pushed.lock_wait),
            fencing_token: pushed.fencing_token,
        }))
    }
}
