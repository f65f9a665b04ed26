//! The object-store half of `SyncService`: PushWorkspace, PullWorkspace and GetSyncStatus.

use tonic::{Request, Response, Status};

use super::{
    convert::{duration, positive_duration, timestamp, violations_to_result},
    requests,
};
use crate::{
    app::App,
    proto,
    sandbox::{
        SandboxId, validate,
        workspace_sync::{SyncOutcome, SyncRecord, SyncSpec},
    },
};

type Reply<T> = Result<Response<T>, Status>;

pub async fn push(
    app: &App,
    request: Request<proto::PushWorkspaceRequest>,
) -> Reply<proto::SyncResult> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let spec = sync_spec(request.paths, request.delete, None)?;
    let outcome = app.sandboxes.push_workspace(&principal, id, spec).await?;
    Ok(Response::new(sync_result(outcome)))
}

pub async fn pull(
    app: &App,
    request: Request<proto::PullWorkspaceRequest>,
) -> Reply<proto::SyncResult> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let spec = sync_spec(request.paths, request.delete, request.max_staleness.as_ref())?;
    let outcome = app.sandboxes.pull_workspace(&principal, id, spec).await?;
    Ok(Response::new(sync_result(outcome)))
}

pub async fn status(
    app: &App,
    request: Request<proto::GetSyncStatusRequest>,
) -> Reply<proto::GetSyncStatusResponse> {
    let principal = app.principal(&request).await?;
    let id: SandboxId = requests::sandbox_id(&request.get_ref().sandbox_id)?;
    let (push, pull) = app.sandboxes.sync_status(&principal, id).await?;
    let encode = |record: SyncRecord| sync_result(SyncOutcome { record, skipped: false });
    Ok(Response::new(proto::GetSyncStatusResponse {
        last_push: push.map(encode),
        last_pull: pull.map(encode),
    }))
}

fn sync_spec(
    paths: Vec<String>,
    delete: bool,
    max_staleness: Option<&prost_types::Duration>,
) -> crate::error::Result<SyncSpec> {
    let mut violations = validate::check_relative_paths("paths", &paths);
    let max_staleness = match max_staleness.map(|d| positive_duration("max_staleness", d)) {
        None => None,
        Some(Ok(staleness)) => Some(staleness),
        Some(Err(violation)) => {
            violations.push(violation);
            None
        }
    };
    let paths = paths.into_iter().map(|path| path.trim_end_matches('/').to_string()).collect();
    violations_to_result(SyncSpec { paths, delete, max_staleness }, violations)
}

fn sync_result(outcome: SyncOutcome) -> proto::SyncResult {
    let record = outcome.record;
    let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    proto::SyncResult {
        files_scanned: count(record.files_scanned),
        files_transferred: count(record.files_transferred),
        files_deleted: count(record.files_deleted),
        bytes_transferred: count(record.bytes_transferred),
        duration: Some(duration(record.duration)),
        skipped: outcome.skipped,
        sync_time: Some(timestamp(record.finished_at)),
    }
}
