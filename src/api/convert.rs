//! Conversions between wire types and domain types. Request parsers collect every field
//! violation, so one INVALID_ARGUMENT names all bad fields.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::{Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

use crate::{
    error::{Error, FieldViolation},
    pool::PoolStatus,
    proto,
    routing::{ResolvedRoute, service::WatchItem},
    runtime::{ExecEvent, ExitStatus},
    sandbox::{
        Sandbox, SandboxState,
        connection::ConnectionInfo,
        exec::HookOutcome,
        inspect::{HealthLevel, HealthReport},
    },
    store::{
        audit::{AuditEvent, event as audit_event},
        routes::{ChangeKind, RouteRecord},
    },
};

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

pub fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: value.as_secs() as i64, nanos: value.subsec_nanos() as i32 }
}

/// Longest duration any request may carry (100 years): every TTL, extension, timeout or
/// staleness a caller sends is far below it, and anything up to it can be added to any
/// timestamp PostgreSQL and chrono hold without overflow.
pub const MAX_REQUEST_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A positive, well-formed protobuf duration of at most [`MAX_REQUEST_DURATION`].
pub fn positive_duration(
    field: &str,
    value: &prost_types::Duration,
) -> Result<Duration, FieldViolation> {
    let valid = value.seconds >= 0 && (0..1_000_000_000).contains(&value.nanos);
    let positive = value.seconds > 0 || value.nanos > 0;
    if !valid || !positive {
        return Err(FieldViolation::new(field, "must be a positive duration"));
    }
    let duration = Duration::new(value.seconds as u64, value.nanos as u32);
    if duration > MAX_REQUEST_DURATION {
        return Err(FieldViolation::new(field, "must be at most 100 years"));
    }
    Ok(duration)
}

pub fn state(state: SandboxState) -> proto::SandboxState {
    match state {
        SandboxState::Pending => proto::SandboxState::Pending,
        SandboxState::Creating => proto::SandboxState::Creating,
        SandboxState::Ready => proto::SandboxState::Ready,
        SandboxState::Running => proto::SandboxState::Running,
        SandboxState::Expired => proto::SandboxState::Expired,
        SandboxState::Destroying => proto::SandboxState::Destroying,
        SandboxState::Destroyed => proto::SandboxState::Destroyed,
        SandboxState::Failed => proto::SandboxState::Failed,
    }
}

pub fn sandbox(sandbox: Sandbox, object_bucket: &str) -> proto::Sandbox {
    let resources = proto::SandboxResources {
        schema: sandbox.id.schema_name(),
        redis_prefix: sandbox.id.redis_prefix(),
        subject_prefix: sandbox.id.subject_prefix(),
        object_prefix: sandbox.id.object_prefix(object_bucket),
    };
    proto::Sandbox {
        sandbox_id: sandbox.id.to_string(),
        etag: sandbox.etag(),
        name: sandbox.name.unwrap_or_default(),
        tenant: sandbox.tenant,
        owner: sandbox.owner,
        template: sandbox.template,
        state: state(sandbox.state).into(),
        labels: sandbox.labels.into_iter().collect(),
        metadata: Some(json_to_struct(sandbox.metadata)),
        create_time: Some(timestamp(sandbox.created_at)),
        update_time: Some(timestamp(sandbox.updated_at)),
        expire_time: Some(timestamp(sandbox.expire_at)),
        last_activity_time: Some(timestamp(sandbox.last_activity_at)),
        destroy_time: sandbox.destroyed_at.map(timestamp),
        from_pool: sandbox.from_pool,
        last_error: sandbox.last_error.unwrap_or_default(),
        destroy_reason: sandbox.destroy_reason.unwrap_or_default(),
        resources: Some(resources),
    }
}

/// A `google.protobuf.Struct` as a JSON object; non-finite numbers are rejected because JSON
/// cannot hold them.
pub fn struct_to_json(field: &str, value: Struct) -> Result<Map<String, Json>, FieldViolation> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let path = format!("{field}.{key}");
            if key.contains('\0') {
                return Err(FieldViolation::new(path, "keys must not contain NUL characters"));
            }
            value_to_json(&path, value).map(|json| (key, json))
        })
        .collect()
}

fn value_to_json(field: &str, value: Value) -> Result<Json, FieldViolation> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) if s.contains('\0') => {
            return Err(FieldViolation::new(field, "strings must not contain NUL characters"));
        }
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => Json::Number(
            Number::from_f64(n)
                .ok_or_else(|| FieldViolation::new(field, "numbers must be finite"))?,
        ),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(field, s)?),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(index, item)| value_to_json(&format!("{field}[{index}]"), item))
                .collect::<Result<_, _>>()?,
        ),
    })
}

pub fn json_to_struct(map: Map<String, Json>) -> Struct {
    Struct { fields: map.into_iter().map(|(key, value)| (key, json_to_value(value))).collect() }
}

fn json_to_value(value: Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// Turns collected violations into a result.
pub fn violations_to_result<T>(value: T, violations: Vec<FieldViolation>) -> Result<T, Error> {
    if violations.is_empty() { Ok(value) } else { Err(Error::InvalidArgument(violations)) }
}

pub fn domain_state(state: proto::SandboxState) -> Option<SandboxState> {
    Some(match state {
        proto::SandboxState::Unspecified => return None,
        proto::SandboxState::Pending => SandboxState::Pending,
        proto::SandboxState::Creating => SandboxState::Creating,
        proto::SandboxState::Ready => SandboxState::Ready,
        proto::SandboxState::Running => SandboxState::Running,
        proto::SandboxState::Expired => SandboxState::Expired,
        proto::SandboxState::Destroying => SandboxState::Destroying,
        proto::SandboxState::Destroyed => SandboxState::Destroyed,
        proto::SandboxState::Failed => SandboxState::Failed,
    })
}

pub fn datetime(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// Resume tokens of the watch streams: an opaque form of the last delivered log id, tagged with
/// the stream it belongs to (`ev1` sandbox events, `rt1` route changes).
pub fn encode_resume_token(stream: &str, id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{stream}:{id}"))
}

pub fn decode_resume_token(stream: &str, token: &str) -> Option<i64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(stream)?.strip_prefix(':')?.parse().ok().filter(|id| *id >= 0)
}

pub const SANDBOX_EVENTS_STREAM: &str = "ev1";
pub const ROUTE_CHANGES_STREAM: &str = "rt1";

fn health_level(level: HealthLevel) -> proto::HealthLevel {
    match level {
        HealthLevel::Healthy => proto::HealthLevel::Healthy,
        HealthLevel::Degraded => proto::HealthLevel::Degraded,
        HealthLevel::Unhealthy => proto::HealthLevel::Unhealthy,
    }
}

pub fn health(report: HealthReport) -> proto::SandboxHealth {
    proto::SandboxHealth {
        sandbox_id: report.sandbox_id.to_string(),
        level: health_level(report.level).into(),
        checks: report
            .checks
            .into_iter()
            .map(|check| proto::HealthCheck {
                name: check.name.into(),
                level: health_level(check.level).into(),
                detail: check.detail,
                latency: Some(duration(check.latency)),
            })
            .collect(),
        check_time: Some(timestamp(report.checked_at)),
    }
}

/// The details on the wire: the only place a sandbox's passwords leave their [`Secret`]s.
pub fn connection(info: ConnectionInfo) -> proto::ConnectionDetails {
    let exposed = |secret: Option<&crate::secret::Secret>| {
        secret.map(|secret| secret.expose().to_string()).unwrap_or_default()
    };
    let role = info.role.as_ref();
    let redis = info.redis_user.as_ref();
    let mut env: std::collections::HashMap<String, String> = info.env.into_iter().collect();
    env.extend(info.secret_env.iter().map(|(name, value)| (name.clone(), value.expose().into())));
    proto::ConnectionDetails {
        sandbox_id: info.sandbox_id.to_string(),
        schema: info.schema,
        search_path: info.search_path,
        role_name: role.map(|r| r.user.clone()).unwrap_or_default(),
        role_password: exposed(role.and_then(|r| r.password.as_ref())),
        database_url: exposed(role.map(|r| &r.dsn)),
        redis_prefix: info.redis_prefix,
        redis_user: redis.map(|r| r.user.clone()).unwrap_or_default(),
        redis_password: exposed(redis.and_then(|r| r.password.as_ref())),
        redis_url: exposed(redis.map(|r| &r.dsn)),
        subject_prefix: info.subject_prefix,
        object_prefix: info.object_prefix,
        env,
        secrets_withheld: info.secrets_withheld,
    }
}

pub fn audit_event(event: AuditEvent) -> proto::AuditEvent {
    let details = match event.details {
        Json::Object(map) => map,
        other => Map::from_iter([("value".to_string(), other)]),
    };
    proto::AuditEvent {
        event_id: event.id.to_string(),
        sandbox_id: event.sandbox_id.map(|id| id.to_string()).unwrap_or_default(),
        actor: event.actor,
        event_type: event.event_type,
        details: Some(json_to_struct(details)),
        create_time: Some(timestamp(event.created_at)),
    }
}

/// A lifecycle audit event as a watch message. The sandbox shows the state the event moved it
/// to (it may have moved on since).
pub fn watch_event(
    event: AuditEvent,
    mut current: Sandbox,
    object_bucket: &str,
) -> proto::WatchSandboxesResponse {
    let state_in = |key: &str| {
        event.details.get(key).and_then(Json::as_str).and_then(|s| s.parse::<SandboxState>().ok())
    };
    let (event_type, previous) = match event.event_type.as_str() {
        audit_event::SANDBOX_CREATED => (proto::SandboxEventType::Created, None),
        audit_event::SANDBOX_DESTROYED => (proto::SandboxEventType::Destroyed, state_in("from")),
        audit_event::TTL_EXTENDED => (proto::SandboxEventType::Updated, None),
        _ => (proto::SandboxEventType::StateChanged, state_in("from")),
    };
    match event.event_type.as_str() {
        // The state the sandbox was born in (events written before that was recorded: PENDING).
        audit_event::SANDBOX_CREATED => {
            current.state = state_in("to").unwrap_or(SandboxState::Pending);
        }
        audit_event::TTL_EXTENDED => {}
        _ => current.state = state_in("to").unwrap_or(current.state),
    }
    proto::WatchSandboxesResponse {
        event: Some(proto::SandboxEvent {
            event_type: event_type.into(),
            sandbox: Some(sandbox(current, object_bucket)),
            previous_state: previous.map(state).unwrap_or(proto::SandboxState::Unspecified).into(),
            event_time: Some(timestamp(event.created_at)),
        }),
        resume_token: encode_resume_token(SANDBOX_EVENTS_STREAM, event.id),
    }
}

pub fn pool_status(status: PoolStatus) -> proto::PoolStatus {
    let pool = &status.template.pool;
    proto::PoolStatus {
        template: status.template.name.clone(),
        enabled: pool.enabled,
        min_ready: saturating_i32(pool.min_ready),
        max_size: saturating_i32(pool.max_size),
        ready_count: saturating_i32(status.ready),
        in_use_count: saturating_i32(status.in_use),
        hits: status.hits,
        misses: status.misses,
        reuse_rate: status.reuse_rate(),
    }
}

fn saturating_i32(value: impl TryInto<i32>) -> i32 {
    value.try_into().unwrap_or(i32::MAX)
}

pub fn guild_route(route: RouteRecord) -> proto::GuildRoute {
    proto::GuildRoute {
        guild_id: route.guild_id,
        sandbox_id: route.sandbox_id.to_string(),
        tenant: route.tenant,
        registered_by: route.registered_by,
        create_time: Some(timestamp(route.created_at)),
    }
}

/// A resolved route, or the default (production) route when there is none.
pub fn route(guild_id: String, resolved: Option<&ResolvedRoute>) -> proto::Route {
    match resolved {
        Some(route) => proto::Route {
            guild_id,
            target: proto::RouteTarget::Sandbox.into(),
            sandbox_id: route.sandbox_id.clone(),
            sandbox_state: proto::SandboxState::Running.into(),
            schema: route.schema.clone(),
            redis_prefix: route.redis_prefix.clone(),
            subject_prefix: route.subject_prefix.clone(),
        },
        None => proto::Route {
            guild_id,
            target: proto::RouteTarget::Default.into(),
            ..Default::default()
        },
    }
}

pub fn route_watch_item(item: WatchItem) -> proto::WatchGuildRoutesResponse {
    use proto::watch_guild_routes_response::Event;
    match item {
        WatchItem::Snapshot { routes, last_batch, position } => proto::WatchGuildRoutesResponse {
            event: Some(Event::Snapshot(proto::GuildRouteSnapshot {
                routes: routes.into_iter().map(guild_route).collect(),
                last_batch,
            })),
            resume_token: if last_batch {
                encode_resume_token(ROUTE_CHANGES_STREAM, position)
            } else {
                String::new()
            },
        },
        WatchItem::Change(change) => {
            let kind = match change.kind {
                ChangeKind::Added => proto::GuildRouteChangeKind::Added,
                ChangeKind::Removed => proto::GuildRouteChangeKind::Removed,
            };
            proto::WatchGuildRoutesResponse {
                event: Some(Event::Change(proto::GuildRouteChange {
                    kind: kind.into(),
                    route: Some(guild_route(change.route)),
                })),
                resume_token: encode_resume_token(ROUTE_CHANGES_STREAM, change.id),
            }
        }
    }
}

pub fn exec_event(event: ExecEvent) -> proto::ExecResponse {
    use proto::exec_response::Output;
    let output = match event {
        ExecEvent::Stdout(chunk) => Output::StdoutChunk(chunk),
        ExecEvent::Stderr(chunk) => Output::StderrChunk(chunk),
        ExecEvent::Exit(exit) => Output::Exit(exit_status(exit)),
    };
    proto::ExecResponse { output: Some(output) }
}

fn exit_status(exit: ExitStatus) -> proto::ExitStatus {
    proto::ExitStatus { exit_code: exit.code, signal: exit.signal, timed_out: exit.timed_out }
}

pub fn hook_outcome(outcome: HookOutcome) -> proto::RunHookResponse {
    proto::RunHookResponse {
        exit_code: outcome.exit.code,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        duration: Some(duration(outcome.duration)),
    }
}
