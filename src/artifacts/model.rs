//! Artifact domain types: what an artifact is, its review state and the decisions on it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{error::Error, sandbox::SandboxId};

/// What kind of content an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactType {
    File,
    Diff,
    Log,
    Image,
    Text,
    Other,
}

impl ArtifactType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ArtifactType::File => "file",
            ArtifactType::Diff => "diff",
            ArtifactType::Log => "log",
            ArtifactType::Image => "image",
            ArtifactType::Text => "text",
            ArtifactType::Other => "other",
        }
    }

    /// Text, diff and log artifacts carry a preview of their first bytes.
    pub fn has_preview(&self) -> bool {
        matches!(self, ArtifactType::Text | ArtifactType::Diff | ArtifactType::Log)
    }

    /// The media type assumed when the publisher gives none.
    pub fn default_content_type(&self) -> &'static str {
        match self {
            ArtifactType::Text | ArtifactType::Log => "text/plain",
            ArtifactType::Diff => "text/x-diff",
            ArtifactType::File | ArtifactType::Image | ArtifactType::Other => {
                "application/octet-stream"
            }
        }
    }
}

impl FromStr for ArtifactType {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        Ok(match value {
            "file" => ArtifactType::File,
            "diff" => ArtifactType::Diff,
            "log" => ArtifactType::Log,
            "image" => ArtifactType::Image,
            "text" => ArtifactType::Text,
            "other" => ArtifactType::Other,
            other => {
                return Err(Error::Internal(anyhow::anyhow!("unknown artifact type {other:?}")));
            }
        })
    }
}

/// `PENDING → APPROVED | REJECTED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewState {
    Pending,
    Approved,
    Rejected,
}

impl ReviewState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReviewState::Pending => "PENDING",
            ReviewState::Approved => "APPROVED",
            ReviewState::Rejected => "REJECTED",
        }
    }
}

impl FromStr for ReviewState {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        Ok(match value {
            "PENDING" => ReviewState::Pending,
            "APPROVED" => ReviewState::Approved,
            "REJECTED" => ReviewState::Rejected,
            other => {
                return Err(Error::Internal(anyhow::anyhow!("unknown review state {other:?}")));
            }
        })
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    pub fn outcome(&self) -> ReviewState {
        match self {
            Decision::Approve => ReviewState::Approved,
            Decision::Reject => ReviewState::Rejected,
        }
    }
}

/// An artifact's record (its bytes are in the object store).
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub id: Uuid,
    pub tenant: String,
    pub sandbox_id: SandboxId,
    pub conversation_id: Option<String>,
    pub artifact_type: ArtifactType,
    pub title: String,
    pub content_type: String,
    pub sandbox_path: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    /// Left out of the audit log's copy of the record (it is up to 4 KiB).
    pub preview: String,
    pub publisher: String,
    pub review_state: ReviewState,
    pub reviewer: Option<String>,
    pub review_comment: Option<String>,
    pub review_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    /// When its sandbox was destroyed (the retention counts from there); `None` while live.
    pub sandbox_destroyed_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl Artifact {
    /// AIP-154 etag: changes with every change of the record.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id.simple(), self.version)
    }

    /// The object key of its bytes, under its sandbox's prefix.
    pub fn object_key(&self) -> String {
        object_key(self.sandbox_id, self.id)
    }
}

/// `sandboxes/<sandbox id>/artifacts/<artifact id>`.
pub fn object_key(sandbox_id: SandboxId, artifact_id: Uuid) -> String {
    format!("sandboxes/{}/{ARTIFACTS_DIR}{artifact_id}", sandbox_id.as_uuid())
}

/// The subprefix of a sandbox's object prefix that holds its artifacts; the destroy's prefix
/// removal leaves it to the artifact retention.
pub const ARTIFACTS_DIR: &str = "artifacts/";

/// What a publisher says about an artifact (the header of PublishArtifact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub sandbox_id: SandboxId,
    pub conversation_id: Option<String>,
    pub artifact_type: ArtifactType,
    pub title: String,
    pub content_type: String,
    pub sandbox_path: Option<String>,
    pub request_id: Option<String>,
}

/// Filters of ListArtifacts (and WatchArtifacts), combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactFilter {
    pub sandbox_id: Option<SandboxId>,
    pub conversation_id: Option<String>,
    pub review_state: Option<ReviewState>,
}

/// A review request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSpec {
    pub id: Uuid,
    pub decision: Decision,
    pub comment: Option<String>,
    pub etag: Option<String>,
}

/// What happened to an artifact (an audit event type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactEventKind {
    Published,
    Reviewed,
    Removed,
}

/// One artifact event of the audit log: the artifact as it was right after.
#[derive(Debug, Clone)]
pub struct ArtifactEvent {
    pub id: i64,
    pub kind: ArtifactEventKind,
    pub artifact: Artifact,
    pub time: DateTime<Utc>,
}
