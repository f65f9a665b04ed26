//! `sandboxd.v1.SandboxControl`.

use std::sync::Arc;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ResponseStream, convert, requests, runtime_requests};
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
        let principal = self.app.principal(&request).await?;
        let spec = requests::ensure_spec(request.into_inner())?;
        let (sandbox, created) = self.app.sandboxes.ensure(&principal, spec).await?;
        Ok(Response::new(proto::EnsureSandboxResponse {
            sandbox: Some(self.encode(sandbox)),
            created,
        }))
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
        let principal = self.app.principal(&request).await?;
        let list = requests::list(request.into_inner())?;
        let page = self
            .app
            .sandboxes
            .list(&principal, list.filter, list.page_size, &list.page_token)
            .await?;
        let (sandboxes, next_page_token) = page.encode_within(
            self.app.page_budget(),
            |sandbox| self.encode(sandbox),
            prost::Message::encoded_len,
        );
        Ok(Response::new(proto::ListSandboxesResponse {
            sandboxes,
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    async fn extend_sandbox(
        &self,
        request: Request<proto::ExtendSandboxRequest>,
    ) -> Reply<proto::ExtendSandboxResponse> {
        let principal = self.app.principal(&request).await?;
        let extend = requests::extend(request.into_inner())?;
        let extended = self
            .app
            .sandboxes
            .extend(&principal, extend.id, extend.by, extend.etag.as_deref())
            .await?;
        let sandbox = extended.sandbox;
        Ok(Response::new(proto::ExtendSandboxResponse {
            expire_time: Some(convert::timestamp(sandbox.expire_at)),
            max_expire_time: Some(convert::timestamp(sandbox.max_expire_at)),
            capped: extended.capped,
            sandbox: Some(self.encode(sandbox)),
        }))
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
            .destroy(
                &principal,
                destroy.id,
                &destroy.reason,
                destroy.etag.as_deref(),
                destroy.final_sync,
            )
            .await?;
        Ok(Response::new(self.encode(sandbox)))
    }

    async fn release_sandbox(
        &self,
        request: Request<proto::ReleaseSandboxRequest>,
    ) -> Reply<proto::Sandbox> {
        let principal = self.app.principal(&request).await?;
        let release = requests::release(request.into_inner())?;
        let sandbox =
            self.app.sandboxes.release(&principal, release.id, release.etag.as_deref()).await?;
        Ok(Response::new(self.encode(sandbox)))
    }

    async fn get_sandbox_health(
        &self,
        request: Request<proto::GetSandboxHealthRequest>,
    ) -> Reply<proto::SandboxHealth> {
        let principal = self.app.principal(&request).await?;
        let id = requests::sandbox_id(&request.get_ref().sandbox_id)?;
        let report = self.app.sandboxes.health(&principal, id).await?;
        Ok(Response::new(convert::health(report)))
    }

    async fn get_connection_details(
        &self,
        request: Request<proto::GetConnectionDetailsRequest>,
    ) -> Reply<proto::ConnectionDetails> {
        let principal = self.app.principal(&request).await?;
        let id = requests::sandbox_id(&request.get_ref().sandbox_id)?;
        let info = self.app.sandboxes.connection_info(&principal, id).await?;
        Ok(Response::new(convert::connection(info)))
    }

    async fn get_schema_stats(
        &self,
        request: Request<proto::GetSchemaStatsRequest>,
    ) -> Reply<proto::SchemaStats> {
        let principal = self.app.principal(&request).await?;
        let id = requests::sandbox_id(&request.get_ref().sandbox_id)?;
        let counts = self.app.sandboxes.schema_stats(&principal, id).await?;
        Ok(Response::new(proto::SchemaStats {
            sandbox_id: id.to_string(),
            schema: id.schema_name(),
            tables: counts
                .into_iter()
                .map(|(table_name, row_count)| proto::TableStats { table_name, row_count })
                .collect(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Reply<proto::ListAuditEventsResponse> {
        let principal = self.app.principal(&request).await?;
        let audit = requests::audit(request.into_inner())?;
        let page = self
            .app
            .sandboxes
            .audit_events(&principal, audit.sandbox_id, audit.page_size, &audit.page_token)
            .await?;
        let (audit_events, next_page_token) = page.encode_within(
            self.app.page_budget(),
            convert::audit_event,
            prost::Message::encoded_len,
        );
        Ok(Response::new(proto::ListAuditEventsResponse {
            audit_events,
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    type WatchSandboxesStream = ResponseStream<proto::WatchSandboxesResponse>;

    async fn watch_sandboxes(
        &self,
        request: Request<proto::WatchSandboxesRequest>,
    ) -> Reply<Self::WatchSandboxesStream> {
        let principal = self.app.principal(&request).await?;
        let spec = requests::watch(request.into_inner())?;
        let events = self.app.sandboxes.watch(principal, spec).await?;
        let bucket = self.app.sandboxes.object_bucket().to_string();
        let stream = events.map(move |item| match item {
            Ok((event, sandbox)) => Ok(convert::watch_event(event, sandbox, &bucket)),
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ExecStream = ResponseStream<proto::ExecResponse>;

    async fn exec(&self, request: Request<proto::ExecRequest>) -> Reply<Self::ExecStream> {
        let principal = self.app.principal(&request).await?;
        let max_stdin = self.app.config.runtime.max_stdin_bytes;
        let (id, command) = runtime_requests::exec(request.into_inner(), max_stdin)?;
        let events = self.app.sandboxes.exec(&principal, id, command).await?;
        // Dropping the stream (the client cancelled or went away) kills the command.
        let stream = ReceiverStream::new(events).map(|event| Ok(convert::exec_event(event)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn run_hook(
        &self,
        request: Request<proto::RunHookRequest>,
    ) -> Reply<proto::RunHookResponse> {
        let principal = self.app.principal(&request).await?;
        let (id, hook) = runtime_requests::hook(request.into_inner())?;
        let outcome = self.app.sandboxes.run_hook(&principal, id, hook).await?;
        Ok(Response::new(convert::hook_outcome(outcome)))
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
        let principal = self.app.principal(&request).await?;
        let template = requests::optional_template(&request.get_ref().template)?;
        let pools = self.app.sandboxes.pool_status(&principal, template.as_deref()).await?;
        Ok(Response::new(proto::GetPoolStatusResponse {
            pools: pools.into_iter().map(convert::pool_status).collect(),
        }))
    }
}
