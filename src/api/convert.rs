//! Conversions between wire types and domain types. Request parsers collect every field
//! violation, so one INVALID_ARGUMENT names all bad fields.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::{Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

use crate::{
    error::{Error, FieldViolation},
    proto,
    sandbox::{Sandbox, SandboxState},
};

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

pub fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: value.as_secs() as i64, nanos: value.subsec_nanos() as i32 }
}

/// A positive, well-formed protobuf duration.
pub fn positive_duration(
    field: &str,
    value: &prost_types::Duration,
) -> Result<Duration, FieldViolation> {
    let valid = value.seconds >= 0 && (0..1_000_000_000).contains(&value.nanos);
    let positive = value.seconds > 0 || value.nanos > 0;
    if !valid || !positive {
        return Err(FieldViolation::new(field, "must be a positive duration"));
    }
    Ok(Duration::new(value.seconds as u64, value.nanos as u32))
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
            value_to_json(&path, value).map(|json| (key, json))
        })
        .collect()
}

fn value_to_json(field: &str, value: Value) -> Result<Json, FieldViolation> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
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
