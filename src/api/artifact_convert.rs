//! Encoding of artifacts and their events on the wire.

use super::{
    artifact_requests::ARTIFACT_EVENTS_STREAM,
    convert::{encode_resume_token, timestamp},
};
use crate::{
    artifacts::{Artifact, ArtifactEvent, ArtifactEventKind, ArtifactType, ReviewState},
    proto,
};

/// `expire_time` is the artifact's removal time, when its sandbox is destroyed.
pub fn artifact(
    artifact: Artifact,
    expire_time: Option<chrono::DateTime<chrono::Utc>>,
) -> proto::Artifact {
    proto::Artifact {
        etag: artifact.etag(),
        artifact_id: artifact.id.to_string(),
        sandbox_id: artifact.sandbox_id.to_string(),
        tenant: artifact.tenant,
        conversation_id: artifact.conversation_id.unwrap_or_default(),
        r#type: wire_type(artifact.artifact_type).into(),
        title: artifact.title,
        content_type: artifact.content_type,
        sandbox_path: artifact.sandbox_path.unwrap_or_default(),
        size_bytes: artifact.size_bytes,
        sha256: artifact.sha256,
        preview: artifact.preview,
        publisher: artifact.publisher,
        review_state: wire_review_state(artifact.review_state).into(),
        reviewer: artifact.reviewer.unwrap_or_default(),
        review_comment: artifact.review_comment.unwrap_or_default(),
        review_time: artifact.review_time.map(timestamp),
        create_time: Some(timestamp(artifact.create_time)),
        expire_time: expire_time.map(timestamp),
    }
}

pub fn event(
    event: ArtifactEvent,
    expire_time: Option<chrono::DateTime<chrono::Utc>>,
) -> proto::WatchArtifactsResponse {
    let event_type = match event.kind {
        ArtifactEventKind::Published => proto::ArtifactEventType::Published,
        ArtifactEventKind::Reviewed => proto::ArtifactEventType::Reviewed,
        ArtifactEventKind::Removed => proto::ArtifactEventType::Removed,
    };
    proto::WatchArtifactsResponse {
        event_type: event_type.into(),
        artifact: Some(artifact(event.artifact, expire_time)),
        event_time: Some(timestamp(event.time)),
        resume_token: encode_resume_token(ARTIFACT_EVENTS_STREAM, event.id),
    }
}

fn wire_type(kind: ArtifactType) -> proto::ArtifactType {
    match kind {
        ArtifactType::File => proto::ArtifactType::File,
        ArtifactType::Diff => proto::ArtifactType::Diff,
        ArtifactType::Log => proto::ArtifactType::Log,
        ArtifactType::Image => proto::ArtifactType::Image,
        ArtifactType::Text => proto::ArtifactType::Text,
        ArtifactType::Other => proto::ArtifactType::Other,
    }
}

fn wire_review_state(state: ReviewState) -> proto::ReviewState {
    match state {
        ReviewState::Pending => proto::ReviewState::Pending,
        ReviewState::Approved => proto::ReviewState::Approved,
        ReviewState::Rejected => proto::ReviewState::Rejected,
    }
}
