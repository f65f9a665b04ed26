//! `sandboxd.v1.SandboxControl`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ResponseStream, convert, requests, unimplemented};
use crate::{app::App, proto, proto::sandbox_control_server::SandboxControl};

pub struct SandboxControlApi {
    app: Arc<App>,
}

impl SandboxControlApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn encode(&self, sandbox: crate::sandbox::Sandbox) -> proto::Sandbox {
        convert::sandbox(sandbox, self.app.sandboxes.object_bucket())
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SandboxControl for SandboxControlApi {
    async fn create_sandbox(
        &self,
        request: Request<proto::CreateSandboxRequest>,
    ) -> Reply<proto::Sandbox> {
        let principal = self.app.principal(&request).await?;
        let spec = requests::create_spec(request.into_inner())?;
        let sandbox = self.app.sandboxes.create(&principal, spec).await?;
        Ok(Response::new(self.encode(sandbox)))
    }

    async fn ensure_sandbox(
        &self,
        request: Request<proto::EnsureSandboxRequest>,
    ) -> Reply<proto::EnsureSandboxResponse> {
        unimplemented(&self.app, &request, "EnsureSandbox (get-or-create by name)").await
    }

    async fn get_sandbox(
        &self,
        request: Request<proto::GetSandboxRequest>,
    ) -> Reply<proto::Sandbox> {
        let principal = self.app.principal(&request).await?;
        let selector = requests::selector(request.into_inner())?;
        let sandbox = self.app.sandboxes.get(&principal, &selector).await?;
        Ok(Response::new(self.encode(sandbox)))
    }

    async fn list_sandboxes(
        &self,
        request: Request<proto::ListSandboxesRequest>,
    ) -> Reply<proto::ListSandboxesResponse> {
        unimplemented(&self.app, &request, "ListSandboxes (filtered, paginated listing)").await
    }

    async fn extend_sandbox(
        &self,
        request: Request<proto::ExtendSandboxRequest>,
    ) -> Reply<proto::ExtendSandboxResponse> {
        unimplemented(&self.app, &request, "ExtendSandbox (TTL extension)").await
    }

    async fn destroy_sandbox(
        &self,
        request: Request<proto::DestroySandboxRequest>,
    ) -> Reply<proto::Sandbox> {
        let principal = self.app.principal(&request).await?;
        let destroy = requests::destroy(request.into_inner())?;
        let sandbox = self
            .app
            .sandboxes
            .destroy(&principal, destroy.id, &destroy.reason, destroy.etag.as_deref())
            .await?;
        Ok(Response::new(self.encode(sandbox)))
    }

    async fn release_sandbox(
        &self,
        request: Request<proto::ReleaseSandboxRequest>,
    ) -> Reply<proto::Sandbox> {
        unimplemented(&self.app, &request, "ReleaseSandbox (warm pools)").await
    }

    async fn get_sandbox_health(
        &self,
        request: Request<proto::GetSandboxHealthRequest>,
    ) -> Reply<proto::SandboxHealth> {
        unimplemented(&self.app, &request, "GetSandboxHealth (per-sandbox health checks)").await
    }

    async fn get_connection_details(
        &self,
        request: Request<proto::GetConnectionDetailsRequest>,
    ) -> Reply<proto::ConnectionDetails> {
        unimplemented(&self.app, &request, "GetConnectionDetails (worker connection settings)")
            .await
    }

    async fn get_schema_stats(
        &self,
        request: Request<proto::GetSchemaStatsRequest>,
    ) -> Reply<proto::SchemaStats> {
        unimplemented(&self.app, &request, "GetSchemaStats (table row counts)").await
    }

    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Reply<proto::ListAuditEventsResponse> {
        unimplemented(&self.app, &request, "ListAuditEvents (audit trail listing)").await
    }

    type WatchSandboxesStream = ResponseStream<proto::WatchSandboxesResponse>;

    async fn watch_sandboxes(
        &self,
        request: Request<proto::WatchSandboxesRequest>,
    ) -> Reply<Self::WatchSandboxesStream> {
        unimplemented(&self.app, &request, "WatchSandboxes (lifecycle event stream)").await
    }

    type ExecStream = ResponseStream<proto::ExecResponse>;

    async fn exec(&self, request: Request<proto::ExecRequest>) -> Reply<Self::ExecStream> {
        unimplemented(&self.app, &request, "Exec (process runtime)").await
    }

    async fn run_hook(
        &self,
        request: Request<proto::RunHookRequest>,
    ) -> Reply<proto::RunHookResponse> {
        unimplemented(&self.app, &request, "RunHook (process runtime hooks)").await
    }

    async fn list_templates(
        &self,
        request: Request<proto::ListTemplatesRequest>,
    ) -> Reply<proto::ListTemplatesResponse> {
        self.app.principal(&request).await?;
        let catalog = self.app.sandboxes.templates();
        let templates = catalog
            .iter()
            .map(|template| proto::Template {
                name: template.name.clone(),
                description: template.description.clone(),
                tables: catalog.tables(&template.name),
                runtime: template.runtime.as_str().into(),
                default_ttl: Some(convert::duration(template.default_ttl)),
                max_ttl: Some(convert::duration(template.max_ttl)),
                pool: Some(proto::TemplatePool {
                    enabled: template.pool.enabled,
                    min_ready: template.pool.min_ready as i32,
                    max_size: template.pool.max_size as i32,
                }),
                hooks: template.hooks.keys().cloned().collect(),
            })
            .collect();
        Ok(Response::new(proto::ListTemplatesResponse { templates }))
    }

    async fn get_pool_status(
        &self,
        request: Request<proto::GetPoolStatusRequest>,
    ) -> Reply<proto::GetPoolStatusResponse> {
        unimplemented(&self.app, &request, "GetPoolStatus (warm pools)").await
    }
}
