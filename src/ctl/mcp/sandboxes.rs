//! Sandbox lifecycle tools: create (or ensure by name), list, get, extend, release, destroy.

use std::collections::BTreeMap;

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    SandboxdMcp,
    convert::{duration, sandbox_id, time},
    errors::{ToolError, cancellable},
};
use crate::proto::{
    self, CreateSandboxRequest, DestroySandboxRequest, EnsureSandboxRequest, ExtendSandboxRequest,
    ListSandboxesRequest, ReleaseSandboxRequest, SandboxState, extend_sandbox_request::Extension,
};

/// A sandbox as the tools report it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SandboxView {
    /// The sandbox id (a UUID); every tool also accepts the name.
    sandbox_id: String,
    /// The name, unique among the tenant's live sandboxes; empty when it has none.
    name: String,
    template: String,
    /// PENDING, CREATING, READY, RUNNING, EXPIRED, DESTROYING, DESTROYED or FAILED. Only
    /// RUNNING sandboxes take exec, file, sync and git calls.
    state: String,
    owner: String,
    labels: BTreeMap<String, String>,
    create_time: Option<String>,
    /// When the sandbox expires unless extended (sandbox_extend).
    expire_time: Option<String>,
    destroy_time: Option<String>,
    /// Why provisioning failed (state FAILED); empty otherwise.
    last_error: String,
    destroy_reason: String,
    /// Pass to sandbox_release to act only on this version of the sandbox.
    etag: String,
    /// True when it was claimed from a warm pool (then sandbox_release can hand it back).
    from_pool: bool,
    /// PostgreSQL schema of the sandbox.
    schema: String,
    redis_prefix: String,
    subject_prefix: String,
    object_prefix: String,
}

pub(crate) fn state_name(state: SandboxState) -> String {
    state.as_str_name().trim_start_matches("SANDBOX_STATE_").to_string()
}

impl From<proto::Sandbox> for SandboxView {
    fn from(sandbox: proto::Sandbox) -> Self {
        let resources = sandbox.resources.clone().unwrap_or_default();
        SandboxView {
            state: state_name(sandbox.state()),
            create_time: time(&sandbox.create_time),
            expire_time: time(&sandbox.expire_time),
            destroy_time: time(&sandbox.destroy_time),
            sandbox_id: sandbox.sandbox_id,
            name: sandbox.name,
            template: sandbox.template,
            owner: sandbox.owner,
            labels: sandbox.labels.into_iter().collect(),
            last_error: sandbox.last_error,
            destroy_reason: sandbox.destroy_reason,
            etag: sandbox.etag,
            from_pool: sandbox.from_pool,
            schema: resources.schema,
            redis_prefix: resources.redis_prefix,
            subject_prefix: resources.subject_prefix,
            object_prefix: resources.object_prefix,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateArgs {
    /// Template to create the sandbox from (the sandboxd://templates resource lists them).
    template: String,
    /// Optional name (lowercase letters, digits, '-'), unique among your live sandboxes.
    #[serde(default)]
    name: Option<String>,
    /// When true (needs `name`): return your live sandbox with that name if there is one,
    /// otherwise create it. The result's `created` says which.
    #[serde(default)]
    ensure: bool,
    /// Labels to attach, e.g. {"task": "fix-login"}.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Lifetime, e.g. "2h" or "30m" (default: the template's; capped at its maximum).
    #[serde(default)]
    ttl: Option<String>,
    /// Idempotency key: calling again with the same request_id returns the same sandbox.
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CreateResult {
    sandbox: SandboxView,
    /// False when `ensure` found an existing sandbox with the name.
    created: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxArg {
    /// The sandbox's id or name.
    sandbox: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// Only these states, e.g. ["RUNNING"]. Omitted: every state but DESTROYED.
    #[serde(default)]
    states: Vec<String>,
    /// Only sandboxes made from this template.
    #[serde(default)]
    template: Option<String>,
    /// Only sandboxes that have all of these labels with these values.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// At most this many (default 50, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_page_token` of a previous call, for the next page.
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListResult {
    /// Newest first.
    sandboxes: Vec<SandboxView>,
    /// Pass as `page_token` for more; empty on the last page.
    next_page_token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// How much longer it should live, e.g. "1h" or "30m".
    by: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ExtendResult {
    sandbox: SandboxView,
    /// The effective new expiry.
    expire_time: Option<String>,
    /// True when the request was cut down to the template's maximum lifetime.
    capped: bool,
    /// The latest expiry this sandbox can ever get.
    max_expire_time: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Only release this version of it (its `etag`); a changed sandbox fails with ABORTED.
    #[serde(default)]
    etag: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReleaseResult {
    sandbox: SandboxView,
    /// True when it went back to the warm pool (READY, no longer yours); false when it was
    /// destroyed instead (see destroy_reason).
    returned_to_pool: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DestroyArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Why, recorded in the audit log.
    #[serde(default)]
    reason: Option<String>,
    /// Push the workspace to object storage first (a failed push keeps the sandbox running).
    #[serde(default)]
    final_sync: bool,
}

fn parse_states(states: &[String]) -> Result<Vec<i32>, ToolError> {
    if states.is_empty() {
        let live = SandboxState::Pending as i32..=SandboxState::Failed as i32;
        return Ok(live.filter(|s| *s != SandboxState::Destroyed as i32).collect());
    }
    let mut parsed = Vec::new();
    for (index, state) in states.iter().enumerate() {
        let name = format!("SANDBOX_STATE_{}", state.trim().to_ascii_uppercase());
        match SandboxState::from_str_name(&name).filter(|s| *s != SandboxState::Unspecified) {
            Some(state) => parsed.push(state as i32),
            None => {
                return Err(ToolError::invalid(
                    &format!("states[{index}]"),
                    format!(
                        "unknown state {state:?}; use PENDING, CREATING, READY, RUNNING, EXPIRED, DESTROYING, DESTROYED or FAILED"
                    ),
                ));
            }
        }
    }
    Ok(parsed)
}

#[tool_router(router = sandbox_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "Create a sandbox from a template and wait until it is RUNNING. With \
        ensure: true and a name, reuse your live sandbox of that name instead of failing. \
        Returns the sandbox (id, state, expiry, resources).")]
    async fn sandbox_create(
        &self,
        Parameters(args): Parameters<CreateArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<CreateResult>, ToolError> {
        let ttl = duration("ttl", args.ttl.as_deref())?;
        let name = args.name.unwrap_or_default();
        let request_id = args.request_id.unwrap_or_default();
        let labels = args.labels.into_iter().collect();
        let mut client = self.control();
        if args.ensure {
            if name.is_empty() {
                return Err(ToolError::invalid("name", "is required when ensure is true"));
            }
            let request = EnsureSandboxRequest {
                template: args.template,
                name,
                labels,
                ttl,
                request_id,
                ..Default::default()
            };
            let response = cancellable(&cancel, client.ensure_sandbox(request)).await?.into_inner();
            let sandbox = response.sandbox.unwrap_or_default().into();
            return Ok(Json(CreateResult { sandbox, created: response.created }));
        }
        let request = CreateSandboxRequest {
            template: args.template,
            name,
            labels,
            ttl,
            request_id,
            ..Default::default()
        };
        let sandbox = cancellable(&cancel, client.create_sandbox(request)).await?.into_inner();
        Ok(Json(CreateResult { sandbox: sandbox.into(), created: true }))
    }

    #[tool(description = "List your sandboxes, newest first, optionally filtered by state, \
        template and labels. By default every state but DESTROYED.")]
    async fn sandbox_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ListResult>, ToolError> {
        let request = ListSandboxesRequest {
            page_size: i32::try_from(args.limit.unwrap_or(50).min(1000)).unwrap_or(50),
            page_token: args.page_token.unwrap_or_default(),
            owner: String::new(),
            states: parse_states(&args.states)?,
            template: args.template.unwrap_or_default(),
            labels: args.labels.into_iter().collect(),
        };
        let mut client = self.control();
        let page = cancellable(&cancel, client.list_sandboxes(request))
            .await
            .map_err(|e| e.with_alias("page_size", "limit"))?
            .into_inner();
        let sandboxes = page.sandboxes.into_iter().map(SandboxView::from).collect();
        Ok(Json(ListResult { sandboxes, next_page_token: page.next_page_token }))
    }

    #[tool(description = "Get one sandbox by id or name: state, expiry, labels, etag and \
        resource names.")]
    async fn sandbox_get(
        &self,
        Parameters(args): Parameters<SandboxArg>,
        cancel: CancellationToken,
    ) -> Result<Json<SandboxView>, ToolError> {
        let mut client = self.control();
        let sandbox = cancellable(&cancel, crate::ctl::sandboxes::get(&mut client, &args.sandbox))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox").with_alias("name", "sandbox"))?;
        Ok(Json(sandbox.into()))
    }

    #[tool(description = "Extend a sandbox's lifetime by a duration such as \"1h\". The new \
        expiry is capped at the template's maximum lifetime; the result says if it was.")]
    async fn sandbox_extend(
        &self,
        Parameters(args): Parameters<ExtendArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ExtendResult>, ToolError> {
        let Some(by) = duration("by", Some(&args.by))? else {
            return Err(ToolError::invalid("by", "is empty; write e.g. \"1h\""));
        };
        let mut client = self.control();
        let sandbox_id = sandbox_id(&mut client, &cancel, &args.sandbox).await?;
        let request = ExtendSandboxRequest {
            sandbox_id,
            extension: Some(Extension::TtlExtension(by)),
            etag: String::new(),
        };
        let response = cancellable(&cancel, client.extend_sandbox(request))
            .await
            .map_err(|e| e.with_alias("ttl_extension", "by"))?
            .into_inner();
        Ok(Json(ExtendResult {
            sandbox: response.sandbox.unwrap_or_default().into(),
            expire_time: time(&response.expire_time),
            capped: response.capped,
            max_expire_time: time(&response.max_expire_time),
        }))
    }

    #[tool(description = "Hand a sandbox claimed from a warm pool back to the pool (it is reset \
        and no longer yours), or destroyed when it cannot go back. Only for sandboxes with \
        from_pool true; otherwise use sandbox_destroy.")]
    async fn sandbox_release(
        &self,
        Parameters(args): Parameters<ReleaseArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ReleaseResult>, ToolError> {
        let mut client = self.control();
        let sandbox_id = sandbox_id(&mut client, &cancel, &args.sandbox).await?;
        let request = ReleaseSandboxRequest { sandbox_id, etag: args.etag.unwrap_or_default() };
        let sandbox = cancellable(&cancel, client.release_sandbox(request)).await?.into_inner();
        let returned_to_pool = sandbox.state() == SandboxState::Ready;
        Ok(Json(ReleaseResult { sandbox: sandbox.into(), returned_to_pool }))
    }

    #[tool(description = "Destroy a sandbox: its processes, workspace, database schema and keys \
        are removed. Idempotent. Push or sync work you want to keep first (or final_sync: true).")]
    async fn sandbox_destroy(
        &self,
        Parameters(args): Parameters<DestroyArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<SandboxView>, ToolError> {
        let mut client = self.control();
        let sandbox_id = sandbox_id(&mut client, &cancel, &args.sandbox).await?;
        let request = DestroySandboxRequest {
            sandbox_id,
            reason: args.reason.unwrap_or_default(),
            final_sync: args.final_sync,
            etag: String::new(),
        };
        let sandbox = cancellable(&cancel, client.destroy_sandbox(request)).await?.into_inner();
        Ok(Json(sandbox.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_default_to_all_but_destroyed_and_unknown_ones_name_their_index() {
        let default = parse_states(&[]).unwrap();
        assert!(default.contains(&(SandboxState::Running as i32)));
        assert!(!default.contains(&(SandboxState::Destroyed as i32)));
        let error = parse_states(&["running".into(), "asleep".into()]).unwrap_err();
        assert_eq!(error.violations[0].field, "states[1]");
    }
}
