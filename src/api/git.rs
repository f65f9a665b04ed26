//! GitStatus and GitDiff of `SyncService` (git runs inside the sandbox; `sandbox::git`).

use tonic::{Request, Response, Status};

use super::{convert::violations_to_result, requests};
use crate::{
    app::App,
    git::status::{Change, FileChange},
    proto,
    sandbox::validate,
};

type Reply<T> = Result<Response<T>, Status>;

/// Room left in a response message for everything but the diff text.
const DIFF_MESSAGE_OVERHEAD: usize = 1024;

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
    let violations = validate::check_relative_paths("paths", &request.paths);
    violations_to_result((), violations)?;
    let limit = app
        .config
        .server
        .max_message_bytes
        .saturating_sub(DIFF_MESSAGE_OVERHEAD)
        .min(app.config.runtime.max_output_bytes);
    let (mut diff, cut) =
        app.sandboxes.git_diff(&principal, id, request.staged, &request.paths, limit).await?;
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
