//! Parsing of SandboxControl requests into domain types (validation happens here, at the edge).

use std::collections::BTreeMap;

use super::convert::{self, positive_duration, struct_to_json, violations_to_result};
use crate::{
    error::{Error, FieldViolation, Result},
    proto,
    routing::GuildId,
    sandbox::{
        CreateSpec, SandboxId, SandboxSelector, extend::ExtendBy, page_token, validate,
        watch::WatchSpec,
    },
    store::sandbox_listing::ListFilter,
};

pub fn create_spec(request: proto::CreateSandboxRequest) -> Result<CreateSpec> {
    let mut violations = Vec::new();
    if request.template.is_empty() {
        violations.push(FieldViolation::new("template", "is required"));
    } else if let Some(violation) = validate::check_name("template", &request.template) {
        violations.push(violation);
    }
    let name = (!request.name.is_empty()).then_some(request.name);
    if let Some(violation) = name.as_deref().and_then(|name| validate::check_name("name", name)) {
        violations.push(violation);
    }
    let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
    violations.extend(validate::check_labels("labels", &labels));
    let metadata = match request.metadata.map(|value| struct_to_json("metadata", value)) {
        None => serde_json::Map::new(),
        Some(Ok(metadata)) => metadata,
        Some(Err(violation)) => {
            violations.push(violation);
            serde_json::Map::new()
        }
    };
    if let Some(violation) = validate::check_metadata("metadata", &metadata) {
        violations.push(violation);
    }
    let ttl = match request.ttl.as_ref().map(|ttl| positive_duration("ttl", ttl)) {
        None => None,
        Some(Ok(ttl)) => Some(ttl),
        Some(Err(violation)) => {
            violations.push(violation);
            None
        }
    };
    let request_id = (!request.request_id.is_empty()).then_some(request.request_id);
    if let Some(violation) =
        request_id.as_deref().and_then(|id| validate::check_request_id("request_id", id))
    {
        violations.push(violation);
    }
    let init_from_store = collect(
        optional_sandbox_id_named("init_from_store", &request.init_from_store),
        &mut violations,
    )
    .flatten();
    let spec = CreateSpec {
        template: request.template,
        name,
        labels,
        metadata,
        ttl,
        request_id,
        init_from_store,
    };
    violations_to_result(spec, violations)
}

pub fn selector(request: proto::GetSandboxRequest) -> Result<SandboxSelector> {
    use proto::get_sandbox_request::Selector;
    match request.selector {
        Some(Selector::SandboxId(id)) => {
            Ok(SandboxSelector::Id(SandboxId::parse("sandbox_id", &id)?))
        }
        Some(Selector::Name(name)) => match validate::check_name("name", &name) {
            Some(violation) => Err(Error::InvalidArgument(vec![violation])),
            None => Ok(SandboxSelector::Name(name)),
        },
        None => Err(Error::invalid("selector", "set either sandbox_id or name")),
    }
}

/// A parsed ReleaseSandbox request.
pub struct ReleaseRequest {
    pub id: SandboxId,
    pub etag: Option<String>,
}

pub fn release(request: proto::ReleaseSandboxRequest) -> Result<ReleaseRequest> {
    let id = sandbox_id(&request.sandbox_id)?;
    let etag = (!request.etag.is_empty()).then_some(request.etag);
    Ok(ReleaseRequest { id, etag })
}

/// An optional template name (empty means every template).
pub fn optional_template(value: &str) -> Result<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    match validate::check_name("template", value) {
        Some(violation) => Err(Error::InvalidArgument(vec![violation])),
        None => Ok(Some(value.to_string())),
    }
}

/// A parsed DestroySandbox request.
pub struct DestroyRequest {
    pub id: SandboxId,
    pub reason: String,
    pub etag: Option<String>,
    pub final_sync: bool,
}

pub fn destroy(request: proto::DestroySandboxRequest) -> Result<DestroyRequest> {
    let mut violations = Vec::new();
    let id = collect(sandbox_id(&request.sandbox_id), &mut violations);
    if let Some(violation) = validate::check_reason("reason", &request.reason) {
        violations.push(violation);
    }
    let etag = (!request.etag.is_empty()).then_some(request.etag);
    match id {
        Some(id) => {
            let final_sync = request.final_sync;
            let destroy = DestroyRequest { id, reason: request.reason, etag, final_sync };
            violations_to_result(destroy, violations)
        }
        None => Err(Error::InvalidArgument(violations)),
    }
}

/// A RegisterGuild request: the guild and the sandbox to route it to, both named when bad.
pub fn guild_registration(request: &proto::RegisterGuildRequest) -> Result<(GuildId, SandboxId)> {
    let mut violations = Vec::new();
    let guild = GuildId::parse("guild_id", &request.guild_id)
        .map_err(|violation| violations.push(violation))
        .ok();
    let sandbox = collect(sandbox_id(&request.sandbox_id), &mut violations);
    match (guild, sandbox) {
        (Some(guild), Some(sandbox)) => violations_to_result((guild, sandbox), violations),
        _ => Err(Error::InvalidArgument(violations)),
    }
}

/// EnsureSandbox takes the same fields as CreateSandbox, with the name required.
pub fn ensure_spec(request: proto::EnsureSandboxRequest) -> Result<CreateSpec> {
    let name_missing = request.name.is_empty();
    let create = proto::CreateSandboxRequest {
        template: request.template,
        name: request.name,
        labels: request.labels,
        metadata: request.metadata,
        ttl: request.ttl,
        request_id: request.request_id,
        init_from_store: request.init_from_store,
    };
    let spec = create_spec(create);
    match (spec, name_missing) {
        (Err(Error::InvalidArgument(mut violations)), true) => {
            violations.insert(0, FieldViolation::new("name", "is required"));
            Err(Error::InvalidArgument(violations))
        }
        (Ok(_), true) => Err(Error::invalid("name", "is required")),
        (spec, _) => spec,
    }
}

/// A required sandbox id.
pub fn sandbox_id(value: &str) -> Result<SandboxId> {
    SandboxId::parse("sandbox_id", value)
}

/// An optional sandbox id (empty means none).
pub fn optional_sandbox_id(value: &str) -> Result<Option<SandboxId>> {
    optional_sandbox_id_named("sandbox_id", value)
}

fn optional_sandbox_id_named(field: &str, value: &str) -> Result<Option<SandboxId>> {
    if value.is_empty() { Ok(None) } else { SandboxId::parse(field, value).map(Some) }
}

fn optional_subject(
    field: &str,
    value: String,
    violations: &mut Vec<FieldViolation>,
) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 128 || value.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            field,
            "must be at most 128 characters without control characters",
        ));
    }
    Some(value)
}

/// Most entries of ListSandboxesRequest.states: one per state.
const MAX_STATES: usize = 8;

/// A parsed ListSandboxes request.
pub struct ListRequest {
    pub filter: ListFilter,
    pub page_size: u32,
    pub page_token: String,
}

pub fn list(request: proto::ListSandboxesRequest) -> Result<ListRequest> {
    let mut violations = Vec::new();
    let page_size = collect(page_token::page_size(request.page_size), &mut violations);
    let owner = optional_subject("owner", request.owner, &mut violations);
    let mut states = Vec::new();
    if request.states.len() > MAX_STATES {
        violations.push(FieldViolation::new(
            "states",
            format!("at most {MAX_STATES} states (there are no more than that)"),
        ));
    } else {
        violations.extend(validate::check_each("states", &request.states, |index, raw| {
            match proto::SandboxState::try_from(*raw).ok().and_then(convert::domain_state) {
                Some(state) => {
                    states.push(state);
                    None
                }
                None => {
                    Some(FieldViolation::new(format!("states[{index}]"), "is not a sandbox state"))
                }
            }
        }));
    }
    let template = (!request.template.is_empty()).then_some(request.template);
    if let Some(violation) = template.as_deref().and_then(|t| validate::check_name("template", t)) {
        violations.push(violation);
    }
    let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
    violations.extend(validate::check_labels("labels", &labels));
    let filter = ListFilter { owner, states, template, labels };
    let parsed = ListRequest {
        filter,
        page_size: page_size.unwrap_or_default(),
        page_token: request.page_token,
    };
    violations_to_result(parsed, violations)
}

/// The value of a field parser, or `None` with its violations added to `violations`, so one
/// response names every bad field.
pub(super) fn collect<T>(parsed: Result<T>, violations: &mut Vec<FieldViolation>) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(Error::InvalidArgument(found)) => {
            violations.extend(found);
            None
        }
        Err(other) => {
            violations.push(FieldViolation::new("request", other.to_string()));
            None
        }
    }
}

/// A parsed ExtendSandbox request.
pub struct ExtendRequest {
    pub id: SandboxId,
    pub by: ExtendBy,
    pub etag: Option<String>,
}

pub fn extend(request: proto::ExtendSandboxRequest) -> Result<ExtendRequest> {
    use proto::extend_sandbox_request::Extension;
    let mut violations = Vec::new();
    let id = collect(sandbox_id(&request.sandbox_id), &mut violations);
    let by = match request.extension {
        None => {
            violations.push(FieldViolation::new("extension", "set ttl_extension or expire_time"));
            None
        }
        Some(Extension::TtlExtension(duration)) => {
            match positive_duration("ttl_extension", &duration) {
                Ok(duration) => Some(ExtendBy::Duration(duration)),
                Err(violation) => {
                    violations.push(violation);
                    None
                }
            }
        }
        Some(Extension::ExpireTime(time)) => match convert::datetime(&time) {
            Some(time) => Some(ExtendBy::Until(time)),
            None => {
                violations.push(FieldViolation::new("expire_time", "is not a valid timestamp"));
                None
            }
        },
    };
    let etag = (!request.etag.is_empty()).then_some(request.etag);
    match (id, by) {
        (Some(id), Some(by)) if violations.is_empty() => Ok(ExtendRequest { id, by, etag }),
        _ => Err(Error::InvalidArgument(violations)),
    }
}

/// A parsed ListAuditEvents request.
pub struct AuditRequest {
    pub sandbox_id: Option<SandboxId>,
    pub page_size: u32,
    pub page_token: String,
}

pub fn audit(request: proto::ListAuditEventsRequest) -> Result<AuditRequest> {
    let mut violations = Vec::new();
    let sandbox_id = collect(optional_sandbox_id(&request.sandbox_id), &mut violations).flatten();
    let page_size = collect(page_token::page_size(request.page_size), &mut violations);
    let parsed = AuditRequest {
        sandbox_id,
        page_size: page_size.unwrap_or_default(),
        page_token: request.page_token,
    };
    violations_to_result(parsed, violations)
}

/// The position a watch of `stream` resumes after: none for an empty `token`, and a violation
/// of `resume_token` for a token that is not one of this stream's.
pub(super) fn resume_after(
    stream: &str,
    token: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<i64> {
    if token.is_empty() {
        return None;
    }
    let after = convert::decode_resume_token(stream, token);
    if after.is_none() {
        violations
            .push(FieldViolation::new("resume_token", "is not a resume token of this stream"));
    }
    after
}

pub fn watch(request: proto::WatchSandboxesRequest) -> Result<WatchSpec> {
    let mut violations = Vec::new();
    let after =
        resume_after(convert::SANDBOX_EVENTS_STREAM, &request.resume_token, &mut violations);
    let sandbox_id = collect(optional_sandbox_id(&request.sandbox_id), &mut violations).flatten();
    let owner = optional_subject("owner", request.owner, &mut violations);
    violations_to_result(WatchSpec { after, sandbox_id, owner }, violations)
}
