//! Parsing of ArtifactService requests into domain types (validation at the edge; every bad
//! field named in one INVALID_ARGUMENT).

use uuid::Uuid;

use super::{
    convert::violations_to_result,
    requests::{collect, optional_sandbox_id, resume_after, sandbox_id},
};
use crate::{
    artifacts::{
        ArtifactFilter, ArtifactType, ArtifactWatchSpec, Decision, PublishSpec, ReviewSpec,
        ReviewState,
    },
    error::{Error, FieldViolation, Result},
    proto,
    sandbox::{page_token, validate},
};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONVERSATION_ID_CHARS: usize = 128;
pub const MAX_CONTENT_TYPE_BYTES: usize = 127;
pub const MAX_SANDBOX_PATH_BYTES: usize = 1024;
pub const MAX_COMMENT_BYTES: usize = 4096;
/// The media types an image artifact may have.
pub const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The stream name inside WatchArtifacts resume tokens.
pub const ARTIFACT_EVENTS_STREAM: &str = "ar1";

pub fn artifact_id(value: &str) -> Result<Uuid> {
    let invalid = || Error::invalid("artifact_id", "must be a UUID in its hyphenated form");
    if value.is_empty() {
        return Err(Error::invalid("artifact_id", "is required"));
    }
    if value.len() != 36 {
        return Err(invalid());
    }
    Uuid::try_parse(value).map_err(|_| invalid())
}

pub fn header(header: proto::PublishArtifactHeader) -> Result<PublishSpec> {
    let mut violations = Vec::new();
    let sandbox_id = collect(sandbox_id(&header.sandbox_id), &mut violations);
    let conversation_id = optional_conversation_id(header.conversation_id, &mut violations);
    let artifact_type = proto::ArtifactType::try_from(header.r#type).ok().and_then(domain_type);
    if artifact_type.is_none() {
        violations.push(FieldViolation::new("type", "is required: one of the artifact types"));
    }
    let title_chars = header.title.chars().count();
    if title_chars == 0
        || title_chars > MAX_TITLE_CHARS
        || header.title.chars().any(char::is_control)
    {
        violations.push(FieldViolation::new(
            "title",
            format!("must be 1-{MAX_TITLE_CHARS} characters without control characters"),
        ));
    }
    let content_type = match (header.content_type.is_empty(), artifact_type) {
        (true, Some(kind)) => kind.default_content_type().to_string(),
        (true, None) => String::new(),
        (false, _) => {
            if let Some(violation) = check_content_type(&header.content_type) {
                violations.push(violation);
            }
            header.content_type
        }
    };
    if artifact_type == Some(ArtifactType::Image) && !IMAGE_TYPES.contains(&content_type.as_str()) {
        violations.push(FieldViolation::new(
            "content_type",
            format!("an image must be one of {}", IMAGE_TYPES.join(", ")),
        ));
    }
    let sandbox_path = (!header.sandbox_path.is_empty()).then_some(header.sandbox_path);
    if let Some(path) = sandbox_path.as_deref() {
        if path.len() > MAX_SANDBOX_PATH_BYTES {
            violations.push(FieldViolation::new(
                "sandbox_path",
                format!("must be at most {MAX_SANDBOX_PATH_BYTES} bytes"),
            ));
        } else if let Some(violation) = validate::check_relative_path("sandbox_path", path) {
            violations.push(violation);
        }
    }
    let request_id = (!header.request_id.is_empty()).then_some(header.request_id);
    if let Some(violation) =
        request_id.as_deref().and_then(|id| validate::check_request_id("request_id", id))
    {
        violations.push(violation);
    }
    let (Some(sandbox_id), Some(artifact_type)) = (sandbox_id, artifact_type) else {
        return Err(Error::InvalidArgument(violations));
    };
    let spec = PublishSpec {
        sandbox_id,
        conversation_id,
        artifact_type,
        title: header.title,
        content_type,
        sandbox_path,
        request_id,
    };
    violations_to_result(spec, violations)
}

/// A parsed ListArtifacts request.
pub struct ListRequest {
    pub filter: ArtifactFilter,
    pub page_size: u32,
    pub page_token: String,
}

pub fn list(request: proto::ListArtifactsRequest) -> Result<ListRequest> {
    let mut violations = Vec::new();
    let sandbox_id = collect(optional_sandbox_id(&request.sandbox_id), &mut violations).flatten();
    let conversation_id = optional_conversation_id(request.conversation_id, &mut violations);
    let review_state = match proto::ReviewState::try_from(request.review_state) {
        Ok(state) => domain_review_state(state),
        Err(_) => {
            violations.push(FieldViolation::new("review_state", "is not a review state"));
            None
        }
    };
    let page_size = collect(page_token::page_size(request.page_size), &mut violations);
    let list = ListRequest {
        filter: ArtifactFilter { sandbox_id, conversation_id, review_state },
        page_size: page_size.unwrap_or_default(),
        page_token: request.page_token,
    };
    violations_to_result(list, violations)
}

pub fn review(request: proto::ReviewArtifactRequest) -> Result<ReviewSpec> {
    let mut violations = Vec::new();
    let id = collect(artifact_id(&request.artifact_id), &mut violations);
    let decision = match proto::ReviewDecision::try_from(request.decision) {
        Ok(proto::ReviewDecision::Approve) => Some(Decision::Approve),
        Ok(proto::ReviewDecision::Reject) => Some(Decision::Reject),
        Ok(proto::ReviewDecision::Unspecified) | Err(_) => {
            violations.push(FieldViolation::new("decision", "is required: approve or reject"));
            None
        }
    };
    if request.comment.len() > MAX_COMMENT_BYTES {
        violations.push(FieldViolation::new(
            "comment",
            format!("must be at most {MAX_COMMENT_BYTES} bytes"),
        ));
    }
    if request.comment.contains('\0') {
        violations.push(FieldViolation::new("comment", "must not contain NUL characters"));
    }
    let (Some(id), Some(decision)) = (id, decision) else {
        return Err(Error::InvalidArgument(violations));
    };
    let spec = ReviewSpec {
        id,
        decision,
        comment: (!request.comment.is_empty()).then_some(request.comment),
        etag: (!request.etag.is_empty()).then_some(request.etag),
    };
    violations_to_result(spec, violations)
}

pub fn watch(request: proto::WatchArtifactsRequest) -> Result<ArtifactWatchSpec> {
    let mut violations = Vec::new();
    let after = resume_after(ARTIFACT_EVENTS_STREAM, &request.resume_token, &mut violations);
    let sandbox_id = collect(optional_sandbox_id(&request.sandbox_id), &mut violations).flatten();
    let conversation_id = optional_conversation_id(request.conversation_id, &mut violations);
    violations_to_result(ArtifactWatchSpec { after, sandbox_id, conversation_id }, violations)
}

fn optional_conversation_id(value: String, violations: &mut Vec<FieldViolation>) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let ok = value.len() <= MAX_CONVERSATION_ID_CHARS
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        violations.push(FieldViolation::new(
            "conversation_id",
            format!("must be 1-{MAX_CONVERSATION_ID_CHARS} characters of [A-Za-z0-9_.:-]"),
        ));
        return None;
    }
    Some(value)
}

/// `type/subtype` of RFC 6838 token characters, at most [`MAX_CONTENT_TYPE_BYTES`].
fn check_content_type(value: &str) -> Option<FieldViolation> {
    let token = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    let ok = value.len() <= MAX_CONTENT_TYPE_BYTES
        && value.split_once('/').is_some_and(|(kind, subtype)| token(kind) && token(subtype));
    (!ok).then(|| {
        FieldViolation::new(
            "content_type",
            format!(
                "must be a media type type/subtype of at most {MAX_CONTENT_TYPE_BYTES} characters"
            ),
        )
    })
}

fn domain_type(wire: proto::ArtifactType) -> Option<ArtifactType> {
    Some(match wire {
        proto::ArtifactType::Unspecified => return None,
        proto::ArtifactType::File => ArtifactType::File,
        proto::ArtifactType::Diff => ArtifactType::Diff,
        proto::ArtifactType::Log => ArtifactType::Log,
        proto::ArtifactType::Image => ArtifactType::Image,
        proto::ArtifactType::Text => ArtifactType::Text,
        proto::ArtifactType::Other => ArtifactType::Other,
    })
}

fn domain_review_state(wire: proto::ReviewState) -> Option<ReviewState> {
    match wire {
        proto::ReviewState::Unspecified => None,
        proto::ReviewState::Pending => Some(ReviewState::Pending),
        proto::ReviewState::Approved => Some(ReviewState::Approved),
        proto::ReviewState::Rejected => Some(ReviewState::Rejected),
    }
}
