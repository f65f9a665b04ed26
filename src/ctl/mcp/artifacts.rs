//! Artifact tools: publish what the agent produced for human review, list, get and read
//! artifacts, and review one. An agent should usually leave the review to a person: a tenant
//! that requires four eyes refuses a review by the artifact's own publisher, and that refusal
//! comes back as a tool error (`PERMISSION_DENIED`, reason `FOUR_EYES_REQUIRED`).

use base64::Engine;
use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{
    SandboxdMcp,
    convert::{sandbox_id, time},
    errors::{ToolError, cancellable},
};
use crate::{
    ctl::artifacts::{parse_state, parse_type, publish_messages, state_name, type_name},
    proto::{
        self, GetArtifactRequest, ListArtifactsRequest, PublishArtifactHeader, ReadArtifactRequest,
        ReviewArtifactRequest, ReviewDecision,
    },
};

/// The largest artifact read_artifact returns (before base64), as file_read's largest read.
pub(crate) const READ_MAX: u64 = 1024 * 1024;
/// The reason of read_artifact's error for a larger artifact.
pub(crate) const TOO_LARGE_TO_READ: &str = "ARTIFACT_TOO_LARGE_TO_READ";

/// An artifact's record as the tools report it (not its bytes: read_artifact returns those).
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ArtifactView {
    /// The artifact id (a UUID).
    artifact_id: String,
    /// The sandbox that published it.
    sandbox_id: String,
    tenant: String,
    /// Empty when it was published without one.
    conversation_id: String,
    /// file, diff, log, image, text or other.
    r#type: String,
    title: String,
    /// The media type, e.g. text/plain, text/x-diff, image/png.
    content_type: String,
    /// The workspace path the content came from; empty when none was given.
    sandbox_path: String,
    size_bytes: i64,
    /// SHA-256 of the content, lowercase hex.
    sha256: String,
    /// The first bytes (at most 4 KiB) of a text, diff or log artifact; empty for other types.
    preview: String,
    /// Who published it.
    publisher: String,
    /// PENDING (waiting for a review), APPROVED (may be used) or REJECTED (must not be used).
    review_state: String,
    /// Who reviewed it; empty while PENDING.
    reviewer: String,
    review_comment: String,
    review_time: Option<String>,
    create_time: Option<String>,
    /// When the server removes it (its sandbox's destroy time plus the retention); unset while
    /// the sandbox lives.
    expire_time: Option<String>,
    /// Pass to review_artifact to review only this version of the record.
    etag: String,
}

impl From<proto::Artifact> for ArtifactView {
    fn from(artifact: proto::Artifact) -> Self {
        ArtifactView {
            r#type: type_name(artifact.r#type()).into(),
            review_state: state_name(artifact.review_state()).into(),
            review_time: time(&artifact.review_time),
            create_time: time(&artifact.create_time),
            expire_time: time(&artifact.expire_time),
            artifact_id: artifact.artifact_id,
            sandbox_id: artifact.sandbox_id,
            tenant: artifact.tenant,
            conversation_id: artifact.conversation_id,
            title: artifact.title,
            content_type: artifact.content_type,
            sandbox_path: artifact.sandbox_path,
            size_bytes: artifact.size_bytes,
            sha256: artifact.sha256,
            preview: artifact.preview,
            publisher: artifact.publisher,
            reviewer: artifact.reviewer,
            review_comment: artifact.review_comment,
            etag: artifact.etag,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishArgs {
    /// The publishing sandbox's id or name; it must be RUNNING.
    sandbox: String,
    /// What it is: file, diff, log, image, text or other.
    r#type: String,
    /// A title for the reviewer, 1-200 characters.
    title: String,
    /// The content as UTF-8 text. Give exactly one of `text` and `base64`.
    #[serde(default)]
    text: Option<String>,
    /// The content as base64 (for binary content such as an image). Give exactly one of
    /// `text` and `base64`.
    #[serde(default)]
    base64: Option<String>,
    /// The media type (default: text/plain for text and log, text/x-diff for diff,
    /// application/octet-stream otherwise; an image must be image/png, image/jpeg, image/gif
    /// or image/webp).
    #[serde(default)]
    content_type: Option<String>,
    /// The conversation it belongs to: 1-128 characters of letters, digits and `_.:-`.
    #[serde(default)]
    conversation_id: Option<String>,
    /// The workspace path the content came from (recorded only; the content is what you send).
    #[serde(default)]
    sandbox_path: Option<String>,
    /// Idempotency key (letters, digits, `_-`): publishing again with it returns the first
    /// artifact instead of a second one.
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// Only the artifacts of this sandbox (id or name).
    #[serde(default)]
    sandbox: Option<String>,
    /// Only the artifacts of this conversation.
    #[serde(default)]
    conversation_id: Option<String>,
    /// Only artifacts in this review state: PENDING, APPROVED or REJECTED.
    #[serde(default)]
    review_state: Option<String>,
    /// At most this many (default 50, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_page_token` of a previous call with the same filters, for the next page.
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListResult {
    /// Newest first.
    artifacts: Vec<ArtifactView>,
    /// Pass as `page_token` for more; empty on the last page.
    next_page_token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArtifactArg {
    /// The artifact id (publish_artifact and list_artifacts return it).
    artifact: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReadResult {
    artifact_id: String,
    content_type: String,
    /// The whole content: text when `encoding` is "utf-8", else base64.
    content: String,
    /// "utf-8" for a text-like content type (text/*, JSON, XML, YAML) whose bytes are valid
    /// UTF-8, else "base64".
    encoding: String,
    size_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewArgs {
    /// The artifact id; it must be PENDING.
    artifact: String,
    /// "approve" or "reject".
    decision: String,
    /// Why, for the record (at most 4 KiB).
    #[serde(default)]
    comment: Option<String>,
    /// The etag from get_artifact or list_artifacts: the review then fails with ABORTED if the
    /// artifact changed since.
    #[serde(default)]
    etag: Option<String>,
}

/// The content of a publish, exactly one of `text` and `base64`, and the argument it came in.
fn content_of(
    text: Option<String>,
    base64: Option<String>,
) -> Result<(Vec<u8>, &'static str), ToolError> {
    match (text, base64) {
        (Some(text), None) => Ok((text.into_bytes(), "text")),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map(|bytes| (bytes, "base64"))
            .map_err(|e| ToolError::invalid("base64", format!("is not valid base64: {e}"))),
        (None, None) => Err(ToolError::invalid("text", "give the content as text or base64")),
        (Some(_), Some(_)) => {
            Err(ToolError::invalid("base64", "give the content as text or base64, not both"))
        }
    }
}

/// Whether read_artifact returns content of this media type as text (when it is UTF-8).
fn is_text_like(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind == "text"
        || (kind == "application"
            && (matches!(subtype, "json" | "xml" | "yaml" | "x-yaml" | "toml" | "x-diff")
                || subtype.ends_with("+json")
                || subtype.ends_with("+xml")))
}

fn too_large_to_read(artifact_id: &str, size: u64) -> ToolError {
    ToolError {
        code: Code::FailedPrecondition,
        reason: TOO_LARGE_TO_READ.into(),
        message: format!(
            "artifact {artifact_id} is {size} bytes; read_artifact returns at most {READ_MAX}"
        ),
        violations: Vec::new(),
        metadata: [("size_bytes", size.to_string()), ("limit", READ_MAX.to_string())]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
    }
}

fn decision_of(decision: &str) -> Result<ReviewDecision, ToolError> {
    match decision.trim().to_ascii_lowercase().as_str() {
        "approve" => Ok(ReviewDecision::Approve),
        "reject" => Ok(ReviewDecision::Reject),
        _ => Err(ToolError::invalid("decision", format!("{decision:?} is not approve or reject"))),
    }
}

#[tool_router(router = artifact_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "Publish something you produced in a sandbox (a diff, a report, a log, \
        an image) as an artifact for human review; it starts PENDING. Give the content as text \
        or base64. Publish, then let a person review it (list_artifacts shows its state).")]
    async fn publish_artifact(
        &self,
        Parameters(args): Parameters<PublishArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ArtifactView>, ToolError> {
        let kind = parse_type(&args.r#type).ok_or_else(|| {
            ToolError::invalid(
                "type",
                format!("{:?} is not file, diff, log, image, text or other", args.r#type),
            )
        })?;
        let (content, content_argument) = content_of(args.text, args.base64)?;
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let header = PublishArtifactHeader {
            sandbox_id,
            conversation_id: args.conversation_id.unwrap_or_default(),
            r#type: kind.into(),
            title: args.title,
            content_type: args.content_type.unwrap_or_default(),
            sandbox_path: args.sandbox_path.unwrap_or_default(),
            request_id: args.request_id.unwrap_or_default(),
        };
        let messages = tokio_stream::iter(publish_messages(header, &content));
        let artifact = cancellable(&cancel, self.artifacts().publish_artifact(messages))
            .await
            .map_err(|e| {
                e.with_alias("sandbox_id", "sandbox").with_alias("chunk", content_argument)
            })?
            .into_inner();
        Ok(Json(artifact.into()))
    }

    #[tool(description = "List the artifacts you may see, newest first, optionally only those \
        of a sandbox, of a conversation or in a review state (PENDING, APPROVED, REJECTED).")]
    async fn list_artifacts(
        &self,
        Parameters(args): Parameters<ListArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ListResult>, ToolError> {
        let review_state = match args.review_state.as_deref() {
            None => proto::ReviewState::Unspecified,
            Some(name) => parse_state(name).ok_or_else(|| {
                ToolError::invalid(
                    "review_state",
                    format!("{name:?} is not PENDING, APPROVED or REJECTED"),
                )
            })?,
        };
        let sandbox_id = match args.sandbox.as_deref() {
            Some(sandbox) => sandbox_id(&mut self.control(), &cancel, sandbox).await?,
            None => String::new(),
        };
        let request = ListArtifactsRequest {
            sandbox_id,
            conversation_id: args.conversation_id.unwrap_or_default(),
            review_state: review_state.into(),
            page_size: i32::try_from(args.limit.unwrap_or(50).min(1000)).unwrap_or(50),
            page_token: args.page_token.unwrap_or_default(),
        };
        let page = cancellable(&cancel, self.artifacts().list_artifacts(request))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox").with_alias("page_size", "limit"))?
            .into_inner();
        let artifacts = page.artifacts.into_iter().map(ArtifactView::from).collect();
        Ok(Json(ListResult { artifacts, next_page_token: page.next_page_token }))
    }

    #[tool(description = "Get one artifact's record: type, title, size, review state, reviewer \
        and comment, etag (not its content: read_artifact returns that).")]
    async fn get_artifact(
        &self,
        Parameters(args): Parameters<ArtifactArg>,
        cancel: CancellationToken,
    ) -> Result<Json<ArtifactView>, ToolError> {
        let request = GetArtifactRequest { artifact_id: args.artifact };
        let artifact = cancellable(&cancel, self.artifacts().get_artifact(request))
            .await
            .map_err(|e| e.with_alias("artifact_id", "artifact"))?
            .into_inner();
        Ok(Json(artifact.into()))
    }

    #[tool(description = "Read an artifact's whole content (at most 1 MiB; a larger one fails \
        with FAILED_PRECONDITION/ARTIFACT_TOO_LARGE_TO_READ). Text-like content types come back \
        as text, everything else as base64.")]
    async fn read_artifact(
        &self,
        Parameters(args): Parameters<ArtifactArg>,
        cancel: CancellationToken,
    ) -> Result<Json<ReadResult>, ToolError> {
        let record = GetArtifactRequest { artifact_id: args.artifact.clone() };
        let artifact = cancellable(&cancel, self.artifacts().get_artifact(record))
            .await
            .map_err(|e| e.with_alias("artifact_id", "artifact"))?
            .into_inner();
        let size = u64::try_from(artifact.size_bytes).unwrap_or(0);
        if size > READ_MAX {
            return Err(too_large_to_read(&artifact.artifact_id, size));
        }
        let request = ReadArtifactRequest { artifact_id: artifact.artifact_id.clone() };
        // Stops at the first chunk past the cap, so a record and content that disagree cannot
        // make this buffer more than the cap and one chunk.
        let read = async {
            let mut stream = self.artifacts().read_artifact(request).await?.into_inner();
            let mut content = Vec::new();
            while let Some(chunk) = stream.next().await {
                content.extend_from_slice(&chunk?.chunk);
                if content.len() as u64 > READ_MAX {
                    break;
                }
            }
            Ok(content)
        };
        let content = cancellable(&cancel, read)
            .await
            .map_err(|e| e.with_alias("artifact_id", "artifact"))?;
        let size_bytes = content.len() as u64;
        if size_bytes > READ_MAX {
            return Err(too_large_to_read(&artifact.artifact_id, size_bytes));
        }
        let (content, encoding) = match String::from_utf8(content) {
            Ok(text) if is_text_like(&artifact.content_type) => (text, "utf-8"),
            Ok(text) => (base64::engine::general_purpose::STANDARD.encode(text), "base64"),
            Err(error) => {
                (base64::engine::general_purpose::STANDARD.encode(error.into_bytes()), "base64")
            }
        };
        Ok(Json(ReadResult {
            artifact_id: artifact.artifact_id,
            content_type: artifact.content_type,
            content,
            encoding: encoding.into(),
            size_bytes,
        }))
    }

    #[tool(description = "Approve or reject a PENDING artifact, with a comment. Usually a \
        person's job, not yours: a tenant that requires four eyes refuses a review by the \
        artifact's publisher, returned as a tool error PERMISSION_DENIED (reason \
        FOUR_EYES_REQUIRED). Fails with FAILED_PRECONDITION when it was already reviewed and \
        ABORTED when the etag no longer matches.")]
    async fn review_artifact(
        &self,
        Parameters(args): Parameters<ReviewArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ArtifactView>, ToolError> {
        let request = ReviewArtifactRequest {
            artifact_id: args.artifact,
            decision: decision_of(&args.decision)?.into(),
            comment: args.comment.unwrap_or_default(),
            etag: args.etag.unwrap_or_default(),
        };
        let artifact = cancellable(&cancel, self.artifacts().review_artifact(request))
            .await
            .map_err(|e| e.with_alias("artifact_id", "artifact"))?
            .into_inner();
        Ok(Json(artifact.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_is_exactly_one_of_text_and_base64() {
        assert_eq!(content_of(Some("hi".into()), None).unwrap(), (b"hi".to_vec(), "text"));
        let binary = content_of(None, Some(" AAH/ ".into())).unwrap();
        assert_eq!(binary, (vec![0, 1, 255], "base64"));
        assert_eq!(content_of(None, None).unwrap_err().violations[0].field, "text");
        let both = content_of(Some("hi".into()), Some("aGk=".into())).unwrap_err();
        assert!(both.violations[0].description.contains("not both"), "{both:?}");
        assert_eq!(content_of(None, Some("%%".into())).unwrap_err().violations[0].field, "base64");
    }

    #[test]
    fn text_like_types_are_text_and_others_are_not() {
        for text in ["text/plain", "text/x-diff; charset=utf-8", "application/json", "Text/CSV"] {
            assert!(is_text_like(text), "{text}");
        }
        assert!(is_text_like("application/vnd.api+json"));
        for binary in ["image/png", "application/octet-stream", "", "text"] {
            assert!(!is_text_like(binary), "{binary}");
        }
    }

    #[test]
    fn too_large_to_read_says_the_size_and_the_limit_and_is_not_retryable() {
        let error = too_large_to_read("a1", READ_MAX + 1);
        let text = error.phrase();
        assert!(text.contains("(reason ARTIFACT_TOO_LARGE_TO_READ)"), "{text}");
        assert!(text.contains(&format!("limit={READ_MAX}")), "{text}");
        assert!(text.contains("sandboxctl artifact cat"), "{text}");
        assert_eq!(error.to_result().structured_content.unwrap()["error"]["retryable"], false);
    }

    #[test]
    fn decisions_are_approve_or_reject() {
        assert_eq!(decision_of("Approve").unwrap(), ReviewDecision::Approve);
        assert_eq!(decision_of("reject").unwrap(), ReviewDecision::Reject);
        assert_eq!(decision_of("maybe").unwrap_err().violations[0].field, "decision");
    }
}
