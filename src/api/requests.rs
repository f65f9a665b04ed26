//! Parsing of SandboxControl requests into domain types (validation happens here, at the edge).

use std::collections::BTreeMap;

use super::convert::{positive_duration, struct_to_json, violations_to_result};
use crate::{
    error::{Error, FieldViolation, Result},
    proto,
    sandbox::{CreateSpec, SandboxId, SandboxSelector, validate},
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
    let spec = CreateSpec { template: request.template, name, labels, metadata, ttl, request_id };
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

/// A parsed DestroySandbox request.
pub struct DestroyRequest {
    pub id: SandboxId,
    pub reason: String,
    pub etag: Option<String>,
}

pub fn destroy(request: proto::DestroySandboxRequest) -> Result<DestroyRequest> {
    let mut violations = Vec::new();
    let id = SandboxId::parse("sandbox_id", &request.sandbox_id);
    if let Err(Error::InvalidArgument(found)) = &id {
        violations.extend(found.iter().cloned());
    }
    if let Some(violation) = validate::check_reason("reason", &request.reason) {
        violations.push(violation);
    }
    if request.final_sync {
        return Err(Error::Unimplemented("final workspace sync on destroy (SyncService)"));
    }
    let etag = (!request.etag.is_empty()).then_some(request.etag);
    match id {
        Ok(id) => {
            violations_to_result(DestroyRequest { id, reason: request.reason, etag }, violations)
        }
        Err(_) => Err(Error::InvalidArgument(violations)),
    }
}
