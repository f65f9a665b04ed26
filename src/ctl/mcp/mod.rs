//! `sandboxctl mcp`: sandboxd as a Model Context Protocol server (the official Rust SDK,
//! `rmcp`) over stdio, for coding agents. Every tool is one or two calls of the public gRPC API
//! with the caller's API key, through the same generated clients as the rest of sandboxctl.
//!
//! Layout: tools by area ([`sandboxes`], [`exec`], [`files`], [`sync_git`], [`locks`],
//! [`artifacts`]), errors
//! ([`errors`]), which capabilities the server offers ([`capabilities`]) and resources
//! ([`resources`]). Nothing here writes to stdout (the transport) or logs tool results (they
//! can hold lock tokens and credentials). rmcp itself logs whole results at `debug`; sandboxctl
//! installs no tracing subscriber, so they go nowhere; one added later must keep `rmcp` at
//! `info` or above.

mod artifacts;
mod capabilities;
mod convert;
mod errors;
mod exec;
mod files;
mod http_transport;
mod locks;
mod resources;
mod sandboxes;
mod sync_git;

use std::{collections::BTreeSet, sync::Arc};

use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt,
    handler::server::tool::{ToolCallContext, ToolRouter},
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, Implementation,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ResultType,
        ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use tokio::sync::Mutex;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use self::{capabilities::Capability, errors::ToolError};
use super::{Bearer, Client, Connection};

pub(crate) use self::http_transport::serve_http;
use crate::proto::{
    artifact_service_client::ArtifactServiceClient, sandbox_control_client::SandboxControlClient,
    sync_service_client::SyncServiceClient,
};

/// Every tool, for the tests that check each is listed and mapped to a capability.
#[cfg(test)]
const TOOL_NAMES: [&str; 23] = [
    "sandbox_create",
    "sandbox_list",
    "sandbox_get",
    "sandbox_extend",
    "sandbox_release",
    "sandbox_destroy",
    "exec",
    "file_list",
    "file_read",
    "file_write",
    "workspace_push",
    "workspace_pull",
    "git_status",
    "git_diff",
    "git_pull",
    "git_push",
    "lock_acquire",
    "lock_release",
    "publish_artifact",
    "list_artifacts",
    "get_artifact",
    "read_artifact",
    "review_artifact",
];

const INSTRUCTIONS: &str = "sandboxd gives you isolated, time-limited sandboxes: a workspace \
directory where commands run (exec), files (file_*), sync with object storage (workspace_*), \
git (git_*), distributed locks (lock_*) and artifacts for human review (publish_artifact, \
list_artifacts, get_artifact, read_artifact, review_artifact). Typical flow: sandbox_create \
(ensure: true with a name to reuse yours), work in it, git_push or workspace_push your work or \
publish_artifact it for review, sandbox_destroy. Leave reviews to people. Tools take a sandbox \
by id or name. Errors say the gRPC code, the reason and each bad argument.";

type SyncClient = SyncServiceClient<InterceptedService<Channel, Bearer>>;
type ArtifactClient = ArtifactServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub(crate) struct SandboxdMcp {
    channel: Channel,
    /// The API key the calls carry: the process's (stdio), or over HTTP the one the HTTP
    /// request brought (see [`SandboxdMcp::for_caller`]).
    bearer: Bearer,
    /// True over HTTP: each request's `Authorization` header is forwarded, the process's key
    /// never used.
    keys_per_request: bool,
    /// The offered capabilities once every probe answered definitely.
    offered: Arc<Mutex<Option<BTreeSet<Capability>>>>,
    tool_router: ToolRouter<SandboxdMcp>,
}

#[derive(clap::Args)]
pub(crate) struct McpArgs {
    /// Serve streamable HTTP on this address (e.g. 127.0.0.1:8765, endpoint /mcp) instead of
    /// stdio; each HTTP client's `Authorization: Bearer` key is forwarded to sandboxd.
    #[arg(long)]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Serves MCP on stdin/stdout until the client closes it.
pub(crate) async fn serve(connection: &Connection) -> anyhow::Result<()> {
    let server = SandboxdMcp::new(connection, false);
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

impl SandboxdMcp {
    fn new(connection: &Connection, keys_per_request: bool) -> Self {
        let bearer = if keys_per_request { Bearer::none() } else { connection.bearer() };
        SandboxdMcp {
            channel: connection.channel.clone(),
            bearer,
            keys_per_request,
            offered: Arc::default(),
            tool_router: Self::sandbox_tools()
                + Self::exec_tools()
                + Self::file_tools()
                + Self::sync_git_tools()
                + Self::lock_tools()
                + Self::artifact_tools(),
        }
    }

    pub(crate) fn control(&self) -> Client {
        SandboxControlClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn sync(&self) -> SyncClient {
        SyncServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn artifacts(&self) -> ArtifactClient {
        ArtifactServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// This server with the API key of the HTTP request behind `context` (over HTTP), or as it
    /// is (stdio). A request without a key calls sandboxd without one (UNAUTHENTICATED there).
    fn for_caller(&self, context: &RequestContext<RoleServer>) -> SandboxdMcp {
        if !self.keys_per_request {
            return self.clone();
        }
        let header = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(http::header::AUTHORIZATION))
            .and_then(|value| value.to_str().ok());
        let key = header.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim);
        // A key that is no valid header value is sent as no key (sandboxd then refuses).
        let bearer = Bearer::new(key).unwrap_or_else(|_| Bearer::none());
        SandboxdMcp { bearer, ..self.clone() }
    }

    /// The capabilities to list tools for: probed until the answer is definite, then kept.
    async fn offered(&self) -> BTreeSet<Capability> {
        let mut known = self.offered.lock().await;
        if let Some(offered) = known.as_ref() {
            return offered.clone();
        }
        let (offered, definite) = capabilities::probe_all(self).await;
        if definite {
            *known = Some(offered.clone());
        }
        offered
    }

    /// False only when a probe showed the server does not serve the tool's capability.
    async fn is_offered(&self, tool: &str) -> bool {
        let known = self.offered.lock().await;
        match (known.as_ref(), Capability::of_tool(tool)) {
            (Some(offered), Some(capability)) => offered.contains(&capability),
            _ => true,
        }
    }

    fn listed_tools(&self, offered: &BTreeSet<Capability>) -> Vec<Tool> {
        let mut tools = self.tool_router.list_all();
        tools.retain(|tool| Capability::of_tool(&tool.name).is_none_or(|c| offered.contains(&c)));
        tools
    }
}

fn cache_hints(context: &RequestContext<RoleServer>) -> bool {
    context.protocol_version().is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
}

impl ServerHandler for SandboxdMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_resources().build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("sandboxd", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let offered = self.for_caller(&context).offered().await;
        let hints = cache_hints(&context);
        Ok(ListToolsResult {
            result_type: Some(ResultType::COMPLETE),
            tools: self.listed_tools(&offered),
            meta: None,
            next_cursor: None,
            // The list depends on the server behind this key; never cache it across clients.
            ttl_ms: hints.then_some(0),
            cache_scope: hints.then_some(CacheScope::Private),
        })
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.is_offered(&request.name).await {
            return Ok(ToolError::not_offered(&request.name).to_result().into());
        }
        let caller = self.for_caller(&context);
        let call = ToolCallContext::new(&caller, request, context);
        self.tool_router.call(call).await.map(ToolError::reshape_argument_error)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.for_caller(&context), &context.ct).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.for_caller(&context), &request.uri, &context.ct).await.map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_routed_with_an_object_input_schema_and_a_description() {
        let router = SandboxdMcp::sandbox_tools()
            + SandboxdMcp::exec_tools()
            + SandboxdMcp::file_tools()
            + SandboxdMcp::sync_git_tools()
            + SandboxdMcp::lock_tools()
            + SandboxdMcp::artifact_tools();
        let names: Vec<String> = router.list_all().iter().map(|t| t.name.to_string()).collect();
        let mut expected: Vec<String> = TOOL_NAMES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(names, expected);
        for tool in router.list_all() {
            assert_eq!(tool.input_schema.get("type").and_then(|t| t.as_str()), Some("object"));
            assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40), "{}", tool.name);
            assert!(tool.output_schema.is_some(), "{} has a structured result", tool.name);
        }
    }
}
