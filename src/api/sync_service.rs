//! `sandboxd.v1.SyncService`. File access is in `files`, workspace sync in `workspace_sync`,
//! locks in `locks`, GitStatus and GitDiff in `git`; GitPush and GitPull answer UNIMPLEMENTED
//! until they land.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, files, git, locks, workspace_sync};
use crate::{app::App, proto, proto::sync_service_server::SyncService};

pub struct SyncServiceApi {
    app: Arc<App>,
}

impl SyncServiceApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SyncService for SyncServiceApi {
    async fn push_workspace(
        &self,
        request: Request<proto::PushWorkspaceRequest>,
    ) -> Reply<proto::SyncResult> {
        workspace_sync::push(&self.app, request).await
    }

    async fn pull_workspace(
        &self,
        request: Request<proto::PullWorkspaceRequest>,
    ) -> Reply<proto::SyncResult> {
        workspace_sync::pull(&self.app, request).await
    }

    async fn get_sync_status(
        &self,
        request: Request<proto::GetSyncStatusRequest>,
    ) -> Reply<proto::GetSyncStatusResponse> {
        workspace_sync::status(&self.app, request).await
    }

    async fn list_files(
        &self,
        request: Request<proto::ListFilesRequest>,
    ) -> Reply<proto::ListFilesResponse> {
        files::list(&self.app, request).await
    }

    type ReadFileStream = ResponseStream<proto::ReadFileResponse>;

    async fn read_file(
        &self,
        request: Request<proto::ReadFileRequest>,
    ) -> Reply<Self::ReadFileStream> {
        files::read(&self.app, request).await
    }

    async fn write_file(
        &self,
        request: Request<Streaming<proto::WriteFileRequest>>,
    ) -> Reply<proto::WriteFileResponse> {
        files::write(&self.app, request).await
    }

    async fn git_push(
        &self,
        request: Request<proto::GitPushRequest>,
    ) -> Reply<proto::GitPushResponse> {
        git::push(&self.app, request).await
    }

    async fn git_pull(
        &self,
        request: Request<proto::GitPullRequest>,
    ) -> Reply<proto::GitPullResponse> {
        git::pull(&self.app, request).await
    }

    async fn git_status(
        &self,
        request: Request<proto::GitStatusRequest>,
    ) -> Reply<proto::GitStatusResponse> {
        git::status(&self.app, request).await
    }

    async fn git_diff(
        &self,
        request: Request<proto::GitDiffRequest>,
    ) -> Reply<proto::GitDiffResponse> {
        git::diff(&self.app, request).await
    }

    async fn acquire_lock(
        &self,
        request: Request<proto::AcquireLockRequest>,
    ) -> Reply<proto::Lease> {
        locks::acquire(&self.app, request).await
    }

    async fn renew_lock(&self, request: Request<proto::RenewLockRequest>) -> Reply<proto::Lease> {
        locks::renew(&self.app, request).await
    }

    async fn release_lock(
        &self,
        request: Request<proto::ReleaseLockRequest>,
    ) -> Reply<proto::ReleaseLockResponse> {
        locks::release(&self.app, request).await
    }
}
