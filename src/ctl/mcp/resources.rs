//! MCP resources: the server's templates (`sandboxd://templates`) and each running sandbox's
//! connection details (`sandbox://<id>/connection`). Credentials appear only when the server
//! returns them to this API key (`secrets_withheld` says when it did not); nothing is logged.

use rmcp::{
    ErrorData,
    model::{
        ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
        ResourceContents, ResourceTemplate,
    },
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{
    SandboxdMcp,
    convert::sandbox_id,
    errors::{ToolError, cancellable},
};
use crate::proto::{
    GetConnectionDetailsRequest, ListSandboxesRequest, ListTemplatesRequest, SandboxState,
};

const TEMPLATES_URI: &str = "sandboxd://templates";
const CONNECTION_TEMPLATE: &str = "sandbox://{sandbox}/connection";
const JSON: &str = "application/json";

fn connection_uri(sandbox_id: &str) -> String {
    format!("sandbox://{sandbox_id}/connection")
}

/// The sandbox (id or name) a connection URI names.
fn sandbox_of(uri: &str) -> Option<&str> {
    uri.strip_prefix("sandbox://")?
        .strip_suffix("/connection")
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

fn to_error_data(error: ToolError) -> ErrorData {
    let data = error.to_result().structured_content;
    match error.code {
        Code::NotFound => ErrorData::resource_not_found(error.phrase(), data),
        Code::InvalidArgument => ErrorData::invalid_params(error.phrase(), data),
        _ => ErrorData::internal_error(error.phrase(), data),
    }
}

pub(super) fn templates() -> ListResourceTemplatesResult {
    let template = ResourceTemplate::new(CONNECTION_TEMPLATE, "sandbox-connection")
        .with_description(
            "What a worker needs to use a sandbox (id or name): schema and search_path, Redis \
             prefix, subject prefix, object prefix, and the same as environment variables.",
        )
        .with_mime_type(JSON);
    ListResourceTemplatesResult::with_all_items(vec![template])
}

pub(super) async fn list(
    server: &SandboxdMcp,
    cancel: &CancellationToken,
) -> Result<ListResourcesResult, ErrorData> {
    let mut resources = vec![
        Resource::new(TEMPLATES_URI, "templates")
            .with_description("The templates sandboxes can be created from (sandbox_create).")
            .with_mime_type(JSON),
    ];
    let request = ListSandboxesRequest {
        page_size: 100,
        states: vec![SandboxState::Running as i32],
        ..Default::default()
    };
    let page = cancellable(cancel, server.control().list_sandboxes(request))
        .await
        .map_err(to_error_data)?
        .into_inner();
    for sandbox in page.sandboxes {
        let label = if sandbox.name.is_empty() { &sandbox.sandbox_id } else { &sandbox.name };
        resources.push(
            Resource::new(connection_uri(&sandbox.sandbox_id), format!("{label} connection"))
                .with_description(format!("Connection details of sandbox {label}"))
                .with_mime_type(JSON),
        );
    }
    Ok(ListResourcesResult::with_all_items(resources))
}

pub(super) async fn read(
    server: &SandboxdMcp,
    uri: &str,
    cancel: &CancellationToken,
) -> Result<ReadResourceResult, ErrorData> {
    let value = if uri == TEMPLATES_URI {
        read_templates(server, cancel).await
    } else if let Some(sandbox) = sandbox_of(uri) {
        read_connection(server, sandbox, cancel).await
    } else {
        return Err(ErrorData::resource_not_found(
            format!("no resource {uri:?}; there are {TEMPLATES_URI} and {CONNECTION_TEMPLATE}"),
            None,
        ));
    };
    let text = serde_json::to_string_pretty(&value.map_err(to_error_data)?)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let contents = ResourceContents::text(text, uri).with_mime_type(JSON);
    Ok(ReadResourceResult::new(vec![contents]))
}

async fn read_templates(
    server: &SandboxdMcp,
    cancel: &CancellationToken,
) -> Result<Value, ToolError> {
    let templates = cancellable(cancel, server.control().list_templates(ListTemplatesRequest {}))
        .await?
        .into_inner()
        .templates;
    let list: Vec<Value> = templates.iter().map(crate::ctl::output::template_json).collect();
    Ok(json!({ "templates": list }))
}

async fn read_connection(
    server: &SandboxdMcp,
    sandbox: &str,
    cancel: &CancellationToken,
) -> Result<Value, ToolError> {
    let sandbox_id = sandbox_id(&mut server.control(), cancel, sandbox).await?;
    let request = GetConnectionDetailsRequest { sandbox_id };
    let details =
        cancellable(cancel, server.control().get_connection_details(request)).await?.into_inner();
    let env: std::collections::BTreeMap<_, _> = details.env.into_iter().collect();
    Ok(json!({
        "sandbox_id": details.sandbox_id,
        "schema": details.schema,
        "search_path": details.search_path,
        "role_name": details.role_name,
        "role_password": details.role_password,
        "redis_prefix": details.redis_prefix,
        "redis_user": details.redis_user,
        "redis_password": details.redis_password,
        "subject_prefix": details.subject_prefix,
        "object_prefix": details.object_prefix,
        "env": env,
        "secrets_withheld": details.secrets_withheld,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_uris_name_one_sandbox() {
        assert_eq!(sandbox_of("sandbox://abc/connection"), Some("abc"));
        assert_eq!(sandbox_of(&connection_uri("my-box")), Some("my-box"));
        assert_eq!(sandbox_of("sandbox:///connection"), None);
        assert_eq!(sandbox_of("sandbox://a/b/connection"), None);
        assert_eq!(sandbox_of("sandboxd://templates"), None);
    }
}
