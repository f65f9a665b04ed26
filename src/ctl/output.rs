//! How sandboxctl prints things: aligned key/value views for people, JSON for scripts.

use serde_json::{Value, json};
use tonic::Status;
use tonic_types::StatusExt;

use crate::proto::{
    AuditEvent, ConnectionDetails, HealthLevel, PoolStatus, Sandbox, SandboxHealth, SandboxState,
    SchemaStats, Template, WatchSandboxesResponse,
};

pub(super) fn time(timestamp: &Option<prost_types::Timestamp>) -> String {
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
        "from_pool": sandbox.from_pool,
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
        ("from pool", if sandbox.from_pool { "yes" } else { "no" }.to_string()),
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

/// A template as JSON, the same for `sandboxctl templates --json` and the MCP resource.
pub fn template_json(t: &Template) -> Value {
    json!({
        "name": t.name, "description": t.description, "runtime": t.runtime,
        "tables": t.tables, "hooks": t.hooks,
        "default_ttl_seconds": t.default_ttl.map(|d| d.seconds),
        "max_ttl_seconds": t.max_ttl.map(|d| d.seconds),
    })
}

pub fn templates(templates: &[Template], as_json: bool) {
    if as_json {
        let list: Vec<Value> = templates.iter().map(template_json).collect();
        println!("{:#}", Value::Array(list));
        return;
    }
    println!("{:<16} {:<8} {:<32} DESCRIPTION", "NAME", "RUNTIME", "TABLES");
    for t in templates {
        println!("{:<16} {:<8} {:<32} {}", t.name, t.runtime, t.tables.join(","), t.description);
    }
}

/// Warm pools as a table (or a JSON array); templates without a pool show `off`.
pub fn pool_status(pools: &[PoolStatus], as_json: bool) {
    if as_json {
        let list: Vec<Value> = pools
            .iter()
            .map(|p| {
                json!({
                    "template": p.template, "enabled": p.enabled, "min_ready": p.min_ready,
                    "max_size": p.max_size, "ready": p.ready_count, "in_use": p.in_use_count,
                    "hits": p.hits, "misses": p.misses, "reuse_rate": p.reuse_rate,
                })
            })
            .collect();
        println!("{:#}", Value::Array(list));
        return;
    }
    println!(
        "{:<16} {:<4} {:>9} {:>8} {:>6} {:>6} {:>8} {:>8} {:>6}",
        "TEMPLATE", "POOL", "MIN_READY", "MAX_SIZE", "READY", "IN_USE", "HITS", "MISSES", "REUSE"
    );
    for p in pools {
        let (pool, min_ready, max_size) = if p.enabled {
            ("on", p.min_ready.to_string(), p.max_size.to_string())
        } else {
            ("off", "-".to_string(), "-".to_string())
        };
        let reuse = if p.hits + p.misses > 0 {
            format!("{:.1}%", p.reuse_rate * 100.0)
        } else {
            "-".to_string()
        };
        println!(
            "{:<16} {:<4} {:>9} {:>8} {:>6} {:>6} {:>8} {:>8} {:>6}",
            p.template,
            pool,
            min_ready,
            max_size,
            p.ready_count,
            p.in_use_count,
            p.hits,
            p.misses,
            reuse
        );
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

/// Sandboxes as a table (or a JSON array).
pub fn sandbox_table(sandboxes: &[Sandbox], as_json: bool) {
    if as_json {
        println!("{:#}", Value::Array(sandboxes.iter().map(sandbox_json).collect()));
        return;
    }
    println!(
        "{:<36}  {:<20} {:<10} {:<14} {:<12} {:<20} EXPIRES",
        "ID", "NAME", "STATE", "TEMPLATE", "OWNER", "CREATED"
    );
    for s in sandboxes {
        println!(
            "{:<36}  {:<20} {:<10} {:<14} {:<12} {:<20} {}",
            s.sandbox_id,
            s.name,
            state_name(s),
            s.template,
            s.owner,
            time(&s.create_time),
            time(&s.expire_time)
        );
    }
}

fn level_name(level: i32) -> &'static str {
    match HealthLevel::try_from(level).unwrap_or_default() {
        HealthLevel::Unspecified => "UNSPECIFIED",
        HealthLevel::Healthy => "HEALTHY",
        HealthLevel::Degraded => "DEGRADED",
        HealthLevel::Unhealthy => "UNHEALTHY",
    }
}

fn millis(duration: &Option<prost_types::Duration>) -> f64 {
    duration.as_ref().map(|d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6).unwrap_or_default()
}

pub fn health(report: &SandboxHealth, as_json: bool) {
    let checks: Vec<Value> = report
        .checks
        .iter()
        .map(|c| json!({"name": c.name, "level": level_name(c.level), "detail": c.detail, "latency_ms": millis(&c.latency)}))
        .collect();
    if as_json {
        println!(
            "{:#}",
            json!({"sandbox_id": report.sandbox_id, "level": level_name(report.level), "checks": checks})
        );
        return;
    }
    println!("{} {}", report.sandbox_id, level_name(report.level));
    for c in &report.checks {
        println!(
            "  {:<8} {:<10} {:>8.2} ms  {}",
            c.name,
            level_name(c.level),
            millis(&c.latency),
            c.detail
        );
    }
}

pub fn connection(details: &ConnectionDetails, as_json: bool) {
    if as_json {
        println!(
            "{:#}",
            json!({
                "sandbox_id": details.sandbox_id, "schema": details.schema, "search_path": details.search_path,
                "redis_prefix": details.redis_prefix, "subject_prefix": details.subject_prefix,
                "object_prefix": details.object_prefix, "role_name": details.role_name,
                "role_password": details.role_password, "database_url": details.database_url,
                "redis_user": details.redis_user, "redis_password": details.redis_password,
                "redis_url": details.redis_url, "secrets_withheld": details.secrets_withheld,
                "env": details.env,
            })
        );
        return;
    }
    let mut env: Vec<_> = details.env.iter().collect();
    env.sort();
    for (key, value) in env {
        println!("export {key}='{value}'");
    }
}

pub fn stats(stats: &SchemaStats, as_json: bool) {
    if as_json {
        let tables: Vec<Value> = stats
            .tables
            .iter()
            .map(|t| json!({"table": t.table_name, "rows": t.row_count}))
            .collect();
        println!(
            "{:#}",
            json!({"sandbox_id": stats.sandbox_id, "schema": stats.schema, "tables": tables})
        );
        return;
    }
    println!("{:<32} ROWS", format!("TABLE ({})", stats.schema));
    for t in &stats.tables {
        println!("{:<32} {}", t.table_name, t.row_count);
    }
}

fn struct_json(value: &Option<prost_types::Struct>) -> Value {
    fn convert(value: &prost_types::Value) -> Value {
        use prost_types::value::Kind;
        match &value.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(convert).collect()),
            Some(Kind::StructValue(s)) => {
                Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
            }
        }
    }
    let fields =
        value.as_ref().map(|s| s.fields.iter().map(|(k, v)| (k.clone(), convert(v))).collect());
    Value::Object(fields.unwrap_or_default())
}

pub fn audit(events: &[AuditEvent], as_json: bool) {
    if as_json {
        let list: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({"event_id": e.event_id, "sandbox_id": e.sandbox_id, "actor": e.actor,
                       "event_type": e.event_type, "details": struct_json(&e.details), "time": time(&e.create_time)})
            })
            .collect();
        println!("{:#}", Value::Array(list));
        return;
    }
    println!("{:<20} {:<36} {:<20} {:<20} DETAILS", "TIME", "SANDBOX", "EVENT", "ACTOR");
    for e in events {
        println!(
            "{:<20} {:<36} {:<20} {:<20} {}",
            time(&e.create_time),
            e.sandbox_id,
            e.event_type,
            e.actor,
            struct_json(&e.details)
        );
    }
}

pub fn watch_event(response: &WatchSandboxesResponse, as_json: bool) {
    let Some(event) = &response.event else { return };
    let sandbox = event.sandbox.clone().unwrap_or_default();
    let kind = event.event_type().as_str_name().trim_start_matches("SANDBOX_EVENT_TYPE_");
    if as_json {
        println!(
            "{}",
            json!({"event": kind, "time": time(&event.event_time), "sandbox": sandbox_json(&sandbox),
                   "resume_token": response.resume_token})
        );
    } else {
        println!(
            "{} {:<14} {} {:<20} {}  (resume: {})",
            time(&event.event_time),
            kind,
            sandbox.sandbox_id,
            sandbox.name,
            state_name(&sandbox),
            response.resume_token
        );
    }
}
