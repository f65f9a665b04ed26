//! The git half of `SyncService`: GitPush and GitPull (`sandbox::git_remote`), GitStatus and
//! GitDiff (`sandbox::git`).

use tonic::{Request, Response, Status};

use super::{
    convert::{duration, violations_to_result},
    requests,
};
use crate::{
    app::App,
    error::FieldViolation,
    git::status::{Change, FileChange},
    proto,
    sandbox::{git::DiffSpec, git_remote::PushSpec, validate},
    template::is_branch_name,
};

type Reply<T> = Result<Response<T>, Status>;

/// Room left in a response message for everything but the diff text.
const DIFF_MESSAGE_OVERHEAD: usize = 1024;

/// Longest commit message and author fields a push accepts.
const MAX_MESSAGE_BYTES: usize = 64 << 10;
const MAX_AUTHOR_BYTES: usize = 256;

pub async fn push(
    app: &App,
    request: Request<proto::GitPushRequest>,
) -> Reply<proto::GitPushResponse> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let mut violations = validate::check_relative_paths("paths", &request.paths);
    check_branch("branch", &request.branch, &mut violations);
    if request.message.len() > MAX_MESSAGE_BYTES || request.message.contains('\0') {
        violations.push(FieldViolation::new("message", "must be at most 64 KiB, without NUL"));
    }
    for (field, value) in
        [("author_name", &request.author_name), ("author_email", &request.author_email)]
    {
        if value.len() > MAX_AUTHOR_BYTES
            || value.chars().any(|c| c.is_control() || c == '<' || c == '>')
        {
            violations.push(FieldViolation::new(
                field,
                "must be at most 256 bytes, without control characters or angle brackets",
            ));
        }
    }
    if request.message.is_empty() && !request.paths.is_empty() {
        violations
            .push(FieldViolation::new("paths", "needs a message (paths choose what to commit)"));
    }
    violations_to_result((), violations)?;
    let spec = PushSpec {
        remote: request.remote,
        branch: request.branch,
        message: request.message,
        paths: request.paths,
        author_name: request.author_name,
        author_email: request.author_email,
    };
    let report = app.sandboxes.git_push(&principal, id, &spec).await?;
    Ok(Response::new(proto::GitPushResponse {
        commit: report.commit,
        pushed: report.pushed,
        attempts: i32::try_from(report.attempts).unwrap_or(i32::MAX),
        conflicts: Vec::new(),
        lock_wait: Some(duration(report.lock_wait)),
        fencing_token: report.fencing_token,
    }))
}

pub async fn pull(
    app: &App,
    request: Request<proto::GitPullRequest>,
) -> Reply<proto::GitPullResponse> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let mut violations = Vec::new();
    check_branch("branch", &request.branch, &mut violations);
    violations_to_result((), violations)?;
    let report = app
        .sandboxes
        .git_pull(&principal, id, &request.remote, &request.branch, request.rebase)
        .await?;
    Ok(Response::new(proto::GitPullResponse {
        commit: report.commit,
        updated: report.updated,
        conflicts: Vec::new(),
    }))
}

fn diff_spec(request: &proto::GitDiffRequest) -> DiffSpec {
    DiffSpec { staged: request.staged, base: request.base.clone(), paths: request.paths.clone() }
}

/// An empty branch (the current one) or a plain branch name (also accepted for refs to diff
/// against: `HEAD`, `origin/main`, a commit id).
fn check_branch(field: &str, branch: &str, violations: &mut Vec<FieldViolation>) {
    if !branch.is_empty() && !is_branch_name(branch) {
        violations.push(FieldViolation::new(
            field,
            "must be a branch name of [A-Za-z0-9._/-], at most 200 bytes, not starting with '-', '.' or '/', without '..'",
        ));
    }
}

pub async fn status(
    app: &App,
    request: Request<proto::GitStatusRequest>,
) -> Reply<proto::GitStatusResponse> {
    let principal = app.principal(&request).await?;
    let id = requests::sandbox_id(&request.get_ref().sandbox_id)?;
    let status = app.sandboxes.git_status(&principal, id).await?;
    Ok(Response::new(proto::GitStatusResponse {
        branch: status.branch.unwrap_or_default(),
        clean: status.files.is_empty(),
        files: status.files.into_iter().map(file_status).collect(),
        ahead: status.ahead,
        behind: status.behind,
    }))
}

/// The diff, cut to fit one response (`server.max_message_bytes`, and at most
/// `runtime.max_output_bytes`); a cut diff ends with a `[sandboxd: diff cut ...]` line.
pub async fn diff(
    app: &App,
    request: Request<proto::GitDiffRequest>,
) -> Reply<proto::GitDiffResponse> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let mut violations = validate::check_relative_paths("paths", &request.paths);
    check_branch("base", &request.base, &mut violations);
    violations_to_result((), violations)?;
    let limit = app
        .config
        .server
        .max_message_bytes
        .saturating_sub(DIFF_MESSAGE_OVERHEAD)
        .min(app.config.runtime.max_output_bytes);
    let (mut diff, cut) =
        app.sandboxes.git_diff(&principal, id, &diff_spec(&request), limit).await?;
    if cut {
        // Whole characters only, then the marker.
        while !diff.is_empty() && diff.len() + 64 > limit {
            diff.pop();
        }
        diff.push_str(&format!("\n[sandboxd: diff cut at {limit} bytes]\n"));
    }
    Ok(Response::new(proto::GitDiffResponse { diff }))
}

fn file_status(file: FileChange) -> proto::FileStatus {
    proto::FileStatus {
        path: file.path,
        staged: change(file.staged).into(),
        unstaged: change(file.unstaged).into(),
        original_path: file.original_path.unwrap_or_default(),
    }
}

fn change(change: Change) -> proto::GitChangeType {
    match change {
        Change::Unmodified => proto::GitChangeType::Unmodified,
        Change::Modified => proto::GitChangeType::Modified,
        Change::Added => proto::GitChangeType::Added,
        Change::Deleted => proto::GitChangeType::Deleted,
        Change::Renamed => proto::GitChangeType::Renamed,
        Change::Copied => proto::GitChangeType::Copied,
        Change::Untracked => proto::GitChangeType::Untracked,
        Change::Conflicted => proto::GitChangeType::Conflicted,
    }
}
