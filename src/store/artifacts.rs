//! The `artifacts` table: insert (with its `artifact_published` audit event, in one statement),
//! lookups and listings scoped like sandboxes (members see the artifacts of their own
//! sandboxes), and the review's compare-and-set. Removal is in `artifact_removal`, the event
//! log in `artifact_events`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Store,
    audit::{Events, event, recording_ctes},
    sandboxes::Scope,
};
use crate::{
    artifacts::{Artifact, ArtifactFilter, ReviewState},
    error::Result,
    sandbox::SandboxId,
};

/// The columns of [`ArtifactRow`], from `artifacts a JOIN sandboxes s`.
pub(super) const COLUMNS: &str = "a.id, a.tenant, a.sandbox_id, a.conversation_id, a.type, a.title, \
    a.content_type, a.sandbox_path, a.size_bytes, a.sha256, a.preview, a.publisher, a.review_state, \
    a.reviewer, a.review_comment, a.review_time, a.create_time, a.version, \
    CASE WHEN s.state = 'DESTROYED' THEN s.destroyed_at END AS sandbox_destroyed_at";

/// Artifacts joined with their sandbox, scoped: `$1` tenant, `$2` owner (members) or NULL.
/// Artifacts being removed are no longer shown.
const SCOPED_FROM: &str = "FROM artifacts a JOIN sandboxes s ON s.id = a.sandbox_id
     WHERE a.tenant = $1 AND ($2::text IS NULL OR s.owner = $2) AND a.removing_since IS NULL";

#[derive(sqlx::FromRow)]
pub(super) struct ArtifactRow {
    id: Uuid,
    tenant: String,
    sandbox_id: Uuid,
    conversation_id: Option<String>,
    #[sqlx(rename = "type")]
    artifact_type: String,
    title: String,
    content_type: String,
    sandbox_path: Option<String>,
    size_bytes: i64,
    sha256: String,
    preview: String,
    publisher: String,
    review_state: String,
    reviewer: Option<String>,
    review_comment: Option<String>,
    review_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
    version: i64,
    sandbox_destroyed_at: Option<DateTime<Utc>>,
}

impl ArtifactRow {
    pub(super) fn into_domain(self) -> Result<Artifact> {
        Ok(Artifact {
            id: self.id,
            tenant: self.tenant,
            sandbox_id: SandboxId::from_uuid(self.sandbox_id),
            conversation_id: self.conversation_id,
            artifact_type: self.artifact_type.parse()?,
            title: self.title,
            content_type: self.content_type,
            sandbox_path: self.sandbox_path,
            size_bytes: self.size_bytes,
            sha256: self.sha256,
            preview: self.preview,
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

/// The audit log's copy of an artifact (all but the preview), from which watchers rebuild it.
pub(super) fn snapshot(artifact: &Artifact) -> Value {
    json!({
        "artifact_id": artifact.id,
        "sandbox_id": artifact.sandbox_id.as_uuid(),
        "conversation_id": artifact.conversation_id,
        "type": artifact.artifact_type.as_str(),
        "title": artifact.title,
        "content_type": artifact.content_type,
        "sandbox_path": artifact.sandbox_path,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "publisher": artifact.publisher,
        "review_state": artifact.review_state.as_str(),
        "reviewer": artifact.reviewer,
        "review_comment": artifact.review_comment,
        "review_time": artifact.review_time,
        "create_time": artifact.create_time,
        "version": artifact.version,
        "sandbox_destroyed_at": artifact.sandbox_destroyed_at,
    })
}

/// An event's details: the artifact as it is right after the event, plus `extra` fields.
pub(super) fn event_details(artifact: &Artifact, extra: Value) -> Value {
    let mut details = json!({ "artifact_id": artifact.id, "artifact": snapshot(artifact) });
    if let (Some(details), Value::Object(extra)) = (details.as_object_mut(), extra) {
        details.extend(extra);
    }
    details
}

/// Position after the last artifact of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactCursor {
    pub create_time: DateTime<Utc>,
    pub id: Uuid,
}

impl Store {
    /// Inserts a published artifact and records `artifact_published`, in one statement.
    /// Returns `false` (and writes nothing) when the publisher already used `request_id`.
    #[tracing::instrument(name = "store.artifacts.insert", skip(self, artifact), fields(artifact_id = %artifact.id))]
    pub async fn insert_artifact(
        &self,
        artifact: &Artifact,
        request_id: Option<&str>,
        actor: &str,
    ) -> Result<bool> {
        let sql = format!(
            "WITH inserted AS (
                 INSERT INTO artifacts (id, tenant, sandbox_id, conversation_id, type, title,
                     content_type, sandbox_path, size_bytes, sha256, preview, publisher,
                     review_state, create_time, request_id, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (tenant, publisher, request_id) WHERE request_id IS NOT NULL
                 DO NOTHING
                 RETURNING tenant, sandbox_id AS id
             ),
             changed AS (SELECT tenant, id FROM inserted), {}
             SELECT count(*) FROM inserted",
            recording_ctes("changed", 17)
        );
        let events =
            Events::new().push(event::ARTIFACT_PUBLISHED, event_details(artifact, json!({})));
        let query = sqlx::query_as::<_, (i64,)>(&sql)
            .bind(artifact.id)
            .bind(&artifact.tenant)
            .bind(artifact.sandbox_id.as_uuid())
            .bind(artifact.conversation_id.as_deref())
            .bind(artifact.artifact_type.as_str())
            .bind(&artifact.title)
            .bind(&artifact.content_type)
            .bind(artifact.sandbox_path.as_deref())
            .bind(artifact.size_bytes)
            .bind(&artifact.sha256)
            .bind(&artifact.preview)
            .bind(&artifact.publisher)
            .bind(artifact.review_state.as_str())
            .bind(artifact.create_time)
            .bind(request_id)
            .bind(artifact.version);
        let (inserted,) = events.bind_to(query, actor).fetch_one(self.pool()).await?;
        Ok(inserted > 0)
    }

    /// The artifact a publisher published with `request_id`, whatever its visibility now.
    #[tracing::instrument(name = "store.artifacts.get_by_request_id", skip(self))]
    pub async fn get_artifact_by_request_id(
        &self,
        tenant: &str,
        publisher: &str,
        request_id: &str,
    ) -> Result<Option<Artifact>> {
        let row = sqlx::query_as::<_, ArtifactRow>(&format!(
            "SELECT {COLUMNS} FROM artifacts a JOIN sandboxes s ON s.id = a.sandbox_id
             WHERE a.tenant = $1 AND a.publisher = $2 AND a.request_id = $3"
        ))
        .bind(tenant)
        .bind(publisher)
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(ArtifactRow::into_domain).transpose()
    }

    #[tracing::instrument(name = "store.artifacts.get", skip(self))]
    pub async fn get_artifact(&self, scope: Scope<'_>, id: Uuid) -> Result<Option<Artifact>> {
        let row = sqlx::query_as::<_, ArtifactRow>(&format!(
            "SELECT {COLUMNS} {SCOPED_FROM} AND a.id = $3"
        ))
        .bind(scope.tenant)
        .bind(scope.owner)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(ArtifactRow::into_domain).transpose()
    }

    /// Up to `limit` artifacts after `cursor`, newest first.
    #[tracing::instrument(name = "store.artifacts.list", skip(self, filter))]
    pub async fn list_artifacts(
        &self,
        scope: Scope<'_>,
        filter: &ArtifactFilter,
        cursor: Option<ArtifactCursor>,
        limit: u32,
    ) -> Result<Vec<Artifact>> {
        let rows = sqlx::query_as::<_, ArtifactRow>(&format!(
            "SELECT {COLUMNS} {SCOPED_FROM}
               AND ($3::uuid IS NULL OR a.sandbox_id = $3)
               AND ($4::text IS NULL OR a.conversation_id = $4)
               AND ($5::text IS NULL OR a.review_state = $5)
               AND ($6::timestamptz IS NULL OR (a.create_time, a.id) < ($6, $7))
             ORDER BY a.create_time DESC, a.id DESC
             LIMIT $8"
        ))
        .bind(scope.tenant)
        .bind(scope.owner)
        .bind(filter.sandbox_id.map(|id| id.as_uuid()))
        .bind(filter.conversation_id.as_deref())
        .bind(filter.review_state.as_ref().map(ReviewState::as_str))
        .bind(cursor.map(|c| c.create_time))
        .bind(cursor.map(|c| c.id))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ArtifactRow::into_domain).collect()
    }

    /// Writes a review (`reviewed`, the record after it) if the artifact is still PENDING at
    /// version `expected_version`, and records `artifact_reviewed`, in one statement. `false`
    /// when another change came first.
    #[tracing::instrument(name = "store.artifacts.review", skip(self, reviewed), fields(artifact_id = %reviewed.id))]
    pub async fn review_artifact(
        &self,
        reviewed: &Artifact,
        expected_version: i64,
        decision: &str,
        actor: &str,
    ) -> Result<bool> {
        let sql = format!(
            "WITH updated AS (
                 UPDATE artifacts SET review_state = $1, reviewer = $2, review_comment = $3,
                     review_time = $4, version = $5
                 WHERE id = $6 AND tenant = $7 AND version = $8 AND review_state = 'PENDING'
                   AND removing_since IS NULL
                 RETURNING tenant, sandbox_id AS id
             ),
             changed AS (SELECT tenant, id FROM updated), {}
             SELECT count(*) FROM updated",
            recording_ctes("changed", 9)
        );
        let details = event_details(
            reviewed,
            json!({
                "decision": decision,
                "reviewer": reviewed.reviewer,
                "comment": reviewed.review_comment,
            }),
        );
        let events = Events::new().push(event::ARTIFACT_REVIEWED, details);
        let query = sqlx::query_as::<_, (i64,)>(&sql)
            .bind(reviewed.review_state.as_str())
            .bind(reviewed.reviewer.as_deref())
            .bind(reviewed.review_comment.as_deref())
            .bind(reviewed.review_time)
            .bind(reviewed.version)
            .bind(reviewed.id)
            .bind(&reviewed.tenant)
            .bind(expected_version);
        let (updated,) = events.bind_to(query, actor).fetch_one(self.pool()).await?;
        Ok(updated > 0)
    }
}
