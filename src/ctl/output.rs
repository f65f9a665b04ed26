//! How sandboxctl prints things: aligned key/value views for people, JSON for scripts.

use serde_json::{Value, json};
use tonic::Status;
use tonic_types::StatusExt;

use crate::proto::{Sandbox, SandboxState, Template};

fn time(timestamp: &Option<prost_types::Timestamp>) -> String {
    timestamp
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn state_name(sandbox: &Sandbox) -> &'static str {
    match sandbox.state() {
        SandboxState::Unspecified => "UNSPECIFIED",
        SandboxState::Pending => "PENDING",
        SandboxState::Creating => "CREATING",
        SandboxState::Ready => "READY",
        SandboxState::Running => "RUNNING",
        SandboxState::Expired => "EXPIRED",
        SandboxState::Destroying => "DESTROYING",
        SandboxState::Destroyed => "DESTROYED",
        SandboxState::Failed => "FAILED",
    }
}

pub fn sandbox_json(sandbox: &Sandbox) -> Value {
    let resources = sandbox.resources.clone().unwrap_or_default();
    json!({
        "sandbox_id": sandbox.sandbox_id,
        "name": sandbox.name,
        "tenant": sandbox.tenant,
        "owner": sandbox.owner,
        "template": sandbox.template,
        "state": state_name(sandbox),
        "labels": sandbox.labels,
        "create_time": time(&sandbox.create_time),
        "expire_time": time(&sandbox.expire_time),
        "destroy_time": time(&sandbox.destroy_time),
        "last_error": sandbox.last_error,
        "destroy_reason": sandbox.destroy_reason,
        "etag": sandbox.etag,
        "resources": {
            "schema": resources.schema,
            "redis_prefix": resources.redis_prefix,
            "subject_prefix": resources.subject_prefix,
            "object_prefix": resources.object_prefix,
        },
    })
}

pub fn sandbox(sandbox: &Sandbox, as_json: bool) {
    if as_json {
        println!("{:#}", sandbox_json(sandbox));
        return;
    }
    let resources = sandbox.resources.clone().unwrap_or_default();
    let mut labels: Vec<String> = sandbox.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let rows = [
        ("id", sandbox.sandbox_id.clone()),
        ("name", sandbox.name.clone()),
        ("state", state_name(sandbox).to_string()),
        ("template", sandbox.template.clone()),
        ("tenant/owner", format!("{}/{}", sandbox.tenant, sandbox.owner)),
        ("labels", labels.join(",")),
        ("created", time(&sandbox.create_time)),
        ("expires", time(&sandbox.expire_time)),
        ("destroyed", time(&sandbox.destroy_time)),
        ("destroy reason", sandbox.destroy_reason.clone()),
        ("last error", sandbox.last_error.clone()),
        ("schema", resources.schema),
        ("redis prefix", resources.redis_prefix),
        ("subject prefix", resources.subject_prefix),
        ("object prefix", resources.object_prefix),
    ];
    for (key, value) in rows.iter().filter(|(_, value)| !value.is_empty()) {
        println!("{key:<15} {value}");
    }
}

pub fn templates(templates: &[Template], as_json: bool) {
    if as_json {
        let list: Vec<Value> = templates
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "description": t.description, "runtime": t.runtime,
                    "tables": t.tables, "hooks": t.hooks,
                    "default_ttl_seconds": t.default_ttl.map(|d| d.seconds),
                    "max_ttl_seconds": t.max_ttl.map(|d| d.seconds),
                })
            })
            .collect();
        println!("{:#}", Value::Array(list));
        return;
    }
    println!("{:<16} {:<8} {:<32} DESCRIPTION", "NAME", "RUNTIME", "TABLES");
    for t in templates {
        println!("{:<16} {:<8} {:<32} {}", t.name, t.runtime, t.tables.join(","), t.description);
    }
}

/// A gRPC error as a person wants to read it: code, message, reason and bad fields.
pub fn describe_status(status: &Status) -> String {
    let mut text = format!("error: {:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        text.push_str(&format!("\n  reason: {}", info.reason));
    }
    if let Some(bad_request) = status.get_details_bad_request() {
        for violation in bad_request.field_violations {
            text.push_str(&format!("\n  {}: {}", violation.field, violation.description));
        }
    }
    text
}
