//! Tool errors a model can act on. A failed gRPC call becomes an MCP tool error (`isError`
//! result, not a JSON-RPC error, so the model sees it) whose text names the gRPC code, the
//! `ErrorInfo` reason, every `BadRequest` field violation (under the tool's own argument names)
//! and what to do next; the same facts are in `structuredContent.error`.

use std::{collections::BTreeMap, future::Future};

use rmcp::{
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One bad argument: the tool argument (or server field) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub field: String,
    pub description: String,
}

/// How rmcp's message for arguments that do not deserialize begins.
const ARGUMENTS_ERROR_PREFIX: &str = "failed to deserialize parameters:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolError {
    pub code: Code,
    pub reason: String,
    pub message: String,
    pub violations: Vec<Violation>,
    /// `ErrorInfo.metadata` (e.g. `resource`, `id`, `error_id`); never holds secrets.
    pub metadata: BTreeMap<String, String>,
}

impl From<Status> for ToolError {
    fn from(status: Status) -> Self {
        let info = status.get_details_error_info();
        let mut violations: Vec<Violation> = status
            .get_details_bad_request()
            .map(|bad| bad.field_violations)
            .unwrap_or_default()
            .into_iter()
            .map(|v| Violation { field: v.field, description: v.description })
            .collect();
        if let Some(quota) = status.get_details_quota_failure() {
            violations.extend(
                quota
                    .violations
                    .into_iter()
                    .map(|v| Violation { field: v.subject, description: v.description }),
            );
        }
        ToolError {
            code: status.code(),
            reason: info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
            message: status.message().to_string(),
            violations,
            metadata: info.map(|i| i.metadata.into_iter().collect()).unwrap_or_default(),
        }
    }
}

impl ToolError {
    /// A bad argument caught here, before any call: shaped like the server's INVALID_ARGUMENT.
    pub(crate) fn invalid(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        ToolError {
            code: Code::InvalidArgument,
            reason: "INVALID_ARGUMENT".into(),
            message: format!("invalid argument: {field}: {description}"),
            violations: vec![Violation { field: field.into(), description }],
            metadata: BTreeMap::new(),
        }
    }

    /// Arguments that do not match the tool's input schema, as rmcp reports them (serde's
    /// message, e.g. "missing field `template`"): the first back-quoted name is the field.
    pub(crate) fn undecodable_arguments(serde_message: &str) -> Self {
        let description = serde_message
            .strip_prefix(ARGUMENTS_ERROR_PREFIX)
            .unwrap_or(serde_message)
            .trim()
            .to_string();
        let field = description.split('`').nth(1).filter(|f| !f.is_empty()).unwrap_or("arguments");
        let mut error = ToolError::invalid(field, description.clone());
        error.message =
            format!("the arguments do not match the tool's input schema: {description}");
        error
    }

    /// Reshapes rmcp's plain-text error for undecodable arguments into this module's form.
    pub(crate) fn reshape_argument_error(response: CallToolResponse) -> CallToolResponse {
        let CallToolResponse::Complete(result) = &response else { return response };
        let undecodable = result.is_error == Some(true) && result.structured_content.is_none();
        let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone());
        match text.filter(|text| undecodable && text.starts_with(ARGUMENTS_ERROR_PREFIX)) {
            Some(text) => ToolError::undecodable_arguments(&text).to_result().into(),
            None => response,
        }
    }

    pub(crate) fn cancelled() -> Self {
        ToolError {
            code: Code::Cancelled,
            reason: "CANCELLED".into(),
            message: "the MCP request was cancelled, and the gRPC call with it".into(),
            violations: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    pub(crate) fn not_offered(tool: &str) -> Self {
        ToolError {
            code: Code::Unimplemented,
            reason: "NOT_IMPLEMENTED".into(),
            message: format!("the connected sandboxd server does not offer {tool}"),
            violations: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Renames the server's field `from` (and its sub-fields, `from[...]`, `from.x`) to the
    /// tool argument `to`, so a violation names what the model actually sent.
    pub(crate) fn with_alias(mut self, from: &str, to: &str) -> Self {
        for violation in &mut self.violations {
            let field = &violation.field;
            let rest = field.strip_prefix(from);
            if let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with(['[', '.'])) {
                violation.field = format!("{to}{rest}");
            }
        }
        self
    }

    fn retryable(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted
        ) && self.reason != "QUOTA_EXCEEDED"
    }

    fn hint(&self) -> &'static str {
        match self.code {
            Code::InvalidArgument => "Fix the arguments named above and call the tool again.",
            Code::NotFound => {
                "Check the id or name: sandbox_list lists your sandboxes, the sandboxd://templates \
                 resource lists the templates; file tools take paths relative to the workspace root."
            }
            Code::AlreadyExists => {
                "Pick another name, or call sandbox_create with ensure: true to reuse the sandbox \
                 that has this name."
            }
            Code::ResourceExhausted if self.reason == "QUOTA_EXCEEDED" => {
                "Destroy sandboxes you no longer need (sandbox_list, sandbox_destroy), then retry."
            }
            Code::ResourceExhausted => "Send less at once (smaller content or fewer items).",
            Code::FailedPrecondition if self.reason == super::artifacts::TOO_LARGE_TO_READ => {
                "Too large for one tool result: read it outside MCP (sandboxctl artifact cat), or \
                 read its sandbox_path in pieces with file_read while the sandbox runs."
            }
            Code::FailedPrecondition => {
                "The target is not in a state that allows this; inspect it (sandbox_get, \
                 git_status) and change it first. Retrying unchanged will fail the same way."
            }
            Code::Aborted => {
                "A concurrent change or a held lock won; re-read the state and retry, with backoff."
            }
            Code::OutOfRange => "Start again from the beginning (without the token or offset).",
            Code::Unauthenticated => {
                "The MCP server's SANDBOXD_API_KEY is missing, wrong, expired or revoked; a person \
                 must fix the server's configuration. Retrying will not help."
            }
            Code::PermissionDenied if self.reason == "FOUR_EYES_REQUIRED" => {
                "This tenant requires four eyes: whoever published an artifact may not review it. \
                 Leave the review to a person with another key; retrying will not help."
            }
            Code::PermissionDenied => "The API key's role may not do this; retrying will not help.",
            Code::Unimplemented => "This server does not offer it; do not retry.",
            Code::Unavailable | Code::DeadlineExceeded => {
                "Temporary: sandboxd or one of its dependencies did not answer. Retry shortly."
            }
            Code::Cancelled => "The call was cancelled before it finished.",
            Code::Internal | Code::Unknown | Code::DataLoss => {
                "A server fault; report the error id. Retrying is unlikely to help."
            }
            Code::Ok => "",
        }
    }

    /// The text the model reads.
    pub(crate) fn phrase(&self) -> String {
        let mut text = format!("Error {}", code_name(self.code));
        if !self.reason.is_empty() {
            text.push_str(&format!(" (reason {})", self.reason));
        }
        text.push_str(&format!(": {}", self.message));
        if !self.violations.is_empty() {
            text.push_str("\nInvalid arguments:");
            for violation in &self.violations {
                text.push_str(&format!("\n- {}: {}", violation.field, violation.description));
            }
        }
        let details: Vec<String> =
            self.metadata.iter().map(|(key, value)| format!("{key}={value}")).collect();
        if !details.is_empty() {
            text.push_str(&format!("\nDetails: {}", details.join(", ")));
        }
        text.push_str(&format!("\nWhat to do: {}", self.hint()));
        text
    }

    pub(crate) fn to_result(&self) -> CallToolResult {
        let violations: Vec<_> = self
            .violations
            .iter()
            .map(|v| json!({"field": v.field, "description": v.description}))
            .collect();
        let mut result = CallToolResult::error(vec![ContentBlock::text(self.phrase())]);
        result.structured_content = Some(json!({"error": {
            "code": code_name(self.code),
            "reason": self.reason,
            "message": self.message,
            "field_violations": violations,
            "metadata": self.metadata,
            "retryable": self.retryable(),
        }}));
        result
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        Ok(self.to_result().into())
    }
}

/// A gRPC call that ends when the MCP request is cancelled: the call's future is dropped, which
/// cancels the RPC (and, for `Exec`, makes the server kill the command).
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, ToolError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(ToolError::cancelled()),
        result = call => result.map_err(ToolError::from),
    }
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    fn invalid_status() -> Status {
        let mut details =
            ErrorDetails::with_error_info("INVALID_ARGUMENT", "sandboxd", HashMap::new());
        details.add_bad_request_violation("sandbox_id", "is not a UUID");
        details.add_bad_request_violation("labels[\"Bad Key\"]", "keys are lowercase");
        Status::with_error_details(Code::InvalidArgument, "invalid argument: ...", details)
    }

    #[test]
    fn a_bad_request_names_the_code_the_reason_and_every_field_under_the_tool_argument_name() {
        let error = ToolError::from(invalid_status()).with_alias("sandbox_id", "sandbox");
        let text = error.phrase();
        assert!(text.starts_with("Error INVALID_ARGUMENT (reason INVALID_ARGUMENT)"), "{text}");
        assert!(text.contains("\n- sandbox: is not a UUID"), "{text}");
        assert!(text.contains("\n- labels[\"Bad Key\"]: keys are lowercase"), "{text}");
        assert!(text.contains("Fix the arguments named above"), "{text}");
        let result = error.to_result();
        assert_eq!(result.is_error, Some(true));
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(structured["error"]["field_violations"][0]["field"], "sandbox");
        assert_eq!(structured["error"]["retryable"], false);
    }

    #[test]
    fn a_missing_template_says_where_to_look_and_keeps_the_error_info_metadata() {
        let metadata = HashMap::from([("resource".to_string(), "template".to_string())]);
        let details = ErrorDetails::with_error_info("TEMPLATE_NOT_FOUND", "sandboxd", metadata);
        let status =
            Status::with_error_details(Code::NotFound, "template \"nope\" not found", details);
        let text = ToolError::from(status).phrase();
        assert!(
            text.starts_with("Error NOT_FOUND (reason TEMPLATE_NOT_FOUND): template \"nope\""),
            "{text}"
        );
        assert!(
            text.contains("resource=template") && text.contains("sandboxd://templates"),
            "{text}"
        );
    }

    #[test]
    fn arguments_off_the_schema_name_the_field_serde_complained_about() {
        let plain = CallToolResult::error(vec![ContentBlock::text(
            "failed to deserialize parameters: unknown field `sandboxx`, expected `sandbox`",
        )]);
        let CallToolResponse::Complete(result) = ToolError::reshape_argument_error(plain.into())
        else {
            panic!("not complete")
        };
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(structured["error"]["field_violations"][0]["field"], "sandboxx");
        let text = result.content[0].as_text().unwrap().text.clone();
        assert!(
            text.contains("- sandboxx: unknown field `sandboxx`, expected `sandbox`"),
            "{text}"
        );
        let missing = ToolError::undecodable_arguments(
            "failed to deserialize parameters: invalid type: null, expected a string",
        );
        assert_eq!(missing.violations[0].field, "arguments");
    }

    #[test]
    fn an_alias_renames_only_the_field_and_its_sub_fields() {
        let error = ToolError::invalid("sandbox_identity", "x").with_alias("sandbox_id", "sandbox");
        assert_eq!(error.violations[0].field, "sandbox_identity");
        let unavailable = ToolError::from(Status::unavailable("redis unavailable"));
        assert!(unavailable.retryable());
        assert!(unavailable.phrase().contains("Retry shortly"));
    }
}
