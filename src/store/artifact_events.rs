//! Artifact events in the audit log (`artifact_published`, `artifact_reviewed`,
//! `artifact_removed`), read after a position for WatchArtifacts. Each event's details hold the
//! artifact as it was right after the event (see `artifacts::snapshot`), so a removed artifact
//! can still be shown.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Store, audit::event};
use crate::{
    artifacts::{Artifact, ArtifactEvent, ArtifactEventKind},
    error::{Error, Result},
    sandbox::SandboxId,
};

/// Which artifact events a caller may read.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactEventScope<'a> {
    pub tenant: &'a str,
    /// Members: only events of their own sandboxes.
    pub owner: Option<&'a str>,
    pub sandbox_id: Option<SandboxId>,
    pub conversation_id: Option<&'a str>,
}

/// The audit log's copy of an artifact.
#[derive(Deserialize)]
struct Snapshot {
    artifact_id: Uuid,
    sandbox_id: Uuid,
    conversation_id: Option<String>,
    #[serde(rename = "type")]
    artifact_type: String,
    title: String,
    content_type: String,
    sandbox_path: Option<String>,
    size_bytes: i64,
    sha256: String,
    publisher: String,
    review_state: String,
    reviewer: Option<String>,
    review_comment: Option<String>,
    review_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
    version: i64,
    sandbox_destroyed_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    fn into_domain(self, tenant: String) -> Result<Artifact> {
        Ok(Artifact {
            id: self.artifact_id,
            tenant,
            sandbox_id: SandboxId::from_uuid(self.sandbox_id),
            conversation_id: self.conversation_id,
            artifact_type: self.artifact_type.parse()?,
            title: self.title,
            content_type: self.content_type,
            sandbox_path: self.sandbox_path,
            size_bytes: self.size_bytes,
            sha256: self.sha256,
            preview: String::new(),
            publisher: self.publisher,
            review_state: self.review_state.parse()?,
            reviewer: self.reviewer,
            review_comment: self.review_comment,
            review_time: self.review_time,
            create_time: self.create_time,
            version: self.version,
            sandbox_destroyed_at: self.sandbox_destroyed_at,
        })
    }
}

fn kind_of(event_type: &str) -> Option<ArtifactEventKind> {
    match event_type {
        event::ARTIFACT_PUBLISHED => Some(ArtifactEventKind::Published),
        event::ARTIFACT_REVIEWED => Some(ArtifactEventKind::Reviewed),
        event::ARTIFACT_REMOVED => Some(ArtifactEventKind::Removed),
        _ => None,
    }
}

impl Store {
    /// Artifact events after `after_id`, oldest first.
    #[tracing::instrument(name = "store.artifact_events.after", skip(self))]
    pub async fn artifact_events_after(
        &self,
        scope: ArtifactEventScope<'_>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ArtifactEvent>> {
        let rows: Vec<(i64, String, String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "SELECT e.id, e.tenant, e.event_type, e.details, e.created_at
             FROM audit_events e
             WHERE e.tenant = $1 AND e.id > $2 AND e.event_type = ANY($3)
               AND ($4::uuid IS NULL OR e.sandbox_id = $4)
               AND ($5::text IS NULL OR e.sandbox_id IN
                    (SELECT id FROM sandboxes WHERE tenant = $1 AND owner = $5))
               AND ($6::text IS NULL OR e.details #>> '{artifact,conversation_id}' = $6)
             ORDER BY e.id
             LIMIT $7",
        )
        .bind(scope.tenant)
        .bind(after_id)
        .bind(&event::ARTIFACT[..])
        .bind(scope.sandbox_id.map(|id| id.as_uuid()))
        .bind(scope.owner)
        .bind(scope.conversation_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .filter_map(|(id, tenant, event_type, details, time)| {
                let kind = kind_of(&event_type)?;
                Some((id, tenant, kind, details, time))
            })
            .map(|(id, tenant, kind, mut details, time)| {
                let snapshot: Snapshot = serde_json::from_value(details["artifact"].take())
                    .map_err(|error| {
                        Error::Internal(
                            anyhow::Error::new(error).context(format!("artifact event {id}")),
                        )
                    })?;
                Ok(ArtifactEvent { id, kind, artifact: snapshot.into_domain(tenant)?, time })
            })
            .collect()
    }
}
