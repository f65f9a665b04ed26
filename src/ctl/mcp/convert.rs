//! Shared pieces of the tools: durations and times as models write and read them, and sandbox
//! references by id or name.

use std::time::Duration;

use super::errors::ToolError;
use crate::ctl::{Client, sandboxes::proto_duration};

/// A duration argument: `"90s"`, `"30m"`, `"2h 30m"` or a bare number of seconds.
pub(crate) fn duration(
    field: &str,
    value: Option<&str>,
) -> Result<Option<prost_types::Duration>, ToolError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let parsed = match value.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(value),
    };
    parsed.map(|d| Some(proto_duration(d))).map_err(|error| {
        ToolError::invalid(
            field,
            format!("{value:?} is not a duration ({error}); write e.g. \"90s\", \"30m\" or \"2h\""),
        )
    })
}

/// A timestamp as RFC 3339 (UTC, seconds); `None` when unset.
pub(crate) fn time(timestamp: &Option<prost_types::Timestamp>) -> Option<String> {
    let t = timestamp.as_ref()?;
    let time = chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))?;
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub(crate) fn millis(duration: &Option<prost_types::Duration>) -> u64 {
    duration
        .as_ref()
        .map(|d| u64::try_from(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000).unwrap_or(0))
        .unwrap_or(0)
}

/// The id of the sandbox the model named by id or name; errors name the `sandbox` argument.
pub(crate) async fn sandbox_id(
    client: &mut Client,
    cancel: &tokio_util::sync::CancellationToken,
    sandbox: &str,
) -> Result<String, ToolError> {
    if sandbox.trim().is_empty() {
        return Err(ToolError::invalid("sandbox", "is empty; pass a sandbox id or name"));
    }
    super::errors::cancellable(cancel, crate::ctl::sandboxes::id_of(client, sandbox))
        .await
        .map_err(|e| e.with_alias("sandbox_id", "sandbox").with_alias("name", "sandbox"))
}
