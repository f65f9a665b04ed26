//! Parsing of Exec and RunHook requests (validation at the edge).

use std::collections::BTreeMap;

use super::convert::{positive_duration, struct_to_json, violations_to_result};
use crate::{
    error::{FieldViolation, Result},
    proto,
    sandbox::{
        SandboxId,
        exec::{CommandSpec, HookSpec},
        validate,
    },
    template::is_hook_name,
};

/// Most arguments of one command.
const MAX_ARGS: usize = 4096;
/// Longest argument, environment value or working directory.
const MAX_VALUE_BYTES: usize = 128 * 1024;
const MAX_ENV_VARS: usize = 256;
const MAX_CONVERSATION_ID: usize = 256;

pub fn exec(request: proto::ExecRequest, max_stdin: usize) -> Result<(SandboxId, CommandSpec)> {
    let id = SandboxId::parse("sandbox_id", &request.sandbox_id)?;
    let mut violations = Vec::new();
    if request.command.is_empty() || request.command[0].is_empty() {
        violations.push(FieldViolation::new("command", "must name a program to run"));
    } else if request.command.len() > MAX_ARGS {
        violations.push(FieldViolation::new("command", format!("has more than {MAX_ARGS} items")));
    }
    violations.extend(validate::check_each("command", &request.command, |index, arg| {
        (arg.contains('\0') || arg.len() > MAX_VALUE_BYTES).then(|| {
            FieldViolation::new(
                format!("command[{index}]"),
                format!("must have no NUL byte and at most {MAX_VALUE_BYTES} bytes"),
            )
        })
    }));
    let env: BTreeMap<String, String> = request.env.into_iter().collect();
    if env.len() > MAX_ENV_VARS {
        violations
            .push(FieldViolation::new("env", format!("has more than {MAX_ENV_VARS} entries")));
    }
    violations.extend(validate::check_each("env", &env, |_, (key, value)| {
        (!is_env_name(key) || value.contains('\0') || value.len() > MAX_VALUE_BYTES).then(|| {
            FieldViolation::new(
                format!("env[{key:?}]"),
                format!(
                    "names must match [A-Za-z_][A-Za-z0-9_]* (at most {MAX_ENV_NAME_BYTES} bytes); values must have no NUL byte and at most {MAX_VALUE_BYTES} bytes"
                ),
            )
        })
    }));
    if let Some(violation) = validate::check_relative_path("working_dir", &request.working_dir) {
        violations.push(violation);
    }
    let timeout = match request.timeout.as_ref().map(|t| positive_duration("timeout", t)) {
        None => None,
        Some(Ok(timeout)) => Some(timeout),
        Some(Err(violation)) => {
            violations.push(violation);
            None
        }
    };
    if request.stdin.len() > max_stdin {
        violations.push(FieldViolation::new(
            "stdin",
            format!("must be at most {max_stdin} bytes (runtime.max_stdin_bytes)"),
        ));
    }
    let spec = CommandSpec {
        argv: request.command,
        env,
        working_dir: request.working_dir.trim_end_matches('/').to_string(),
        timeout,
        stdin: request.stdin,
    };
    violations_to_result((id, spec), violations)
}

pub fn hook(request: proto::RunHookRequest) -> Result<(SandboxId, HookSpec)> {
    let id = SandboxId::parse("sandbox_id", &request.sandbox_id)?;
    let mut violations = Vec::new();
    if !is_hook_name(&request.hook) {
        violations.push(FieldViolation::new(
            "hook",
            "is required: [a-z][a-z0-9_-]*, at most 63 characters",
        ));
    }
    if request.conversation_id.len() > MAX_CONVERSATION_ID
        || request.conversation_id.chars().any(char::is_control)
    {
        violations.push(FieldViolation::new(
            "conversation_id",
            format!("must be at most {MAX_CONVERSATION_ID} bytes without control characters"),
        ));
    }
    let input = match request.input.map(|input| struct_to_json("input", input)) {
        None => None,
        Some(Ok(map)) => Some(serde_json::Value::Object(map)),
        Some(Err(violation)) => {
            violations.push(violation);
            None
        }
    };
    let spec = HookSpec { hook: request.hook, conversation_id: request.conversation_id, input };
    violations_to_result((id, spec), violations)
}

/// Longest environment variable name.
const MAX_ENV_NAME_BYTES: usize = 256;

fn is_env_name(name: &str) -> bool {
    name.len() <= MAX_ENV_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
