//! PublishArtifact: the header is checked (the sandbox must be visible and RUNNING), the
//! content read up to `artifacts.max_bytes` while its SHA-256 is computed, the object written
//! and only then the row inserted, so a row never points at nothing. A stream that fails, is
//! cancelled or runs over the limit ends before anything is written; an insert that fails
//! removes the object again. Writing the object and the row runs on a tracked task, so a client
//! that goes away mid-write leaves neither half behind.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Artifact, ArtifactService, ArtifactType, PublishSpec, ReviewState};
use crate::{
    auth::Principal,
    error::{Error, Result},
    sandbox::{SandboxSelector, SandboxState},
};

/// Longest preview of a text, diff or log artifact.
pub const PREVIEW_BYTES: usize = 4096;

impl ArtifactService {
    /// Publishes an artifact from `spec` and the content `chunks`.
    #[tracing::instrument(name = "artifact.publish", skip_all, fields(tenant = %principal.tenant))]
    pub async fn publish(
        &self,
        principal: &Principal,
        spec: PublishSpec,
        chunks: impl Stream<Item = Result<Vec<u8>>> + Send,
    ) -> Result<Artifact> {
        principal.require_manager()?;
        let sandbox = self.manager.get(principal, &SandboxSelector::Id(spec.sandbox_id)).await?;
        if sandbox.state != SandboxState::Running {
            return Err(Error::FailedPrecondition {
                reason: "SANDBOX_NOT_RUNNING",
                message: format!(
                    "sandbox {} is {}; artifacts are published from a RUNNING sandbox",
                    sandbox.id, sandbox.state
                ),
            });
        }
        let objects = self.objects().await?;
        if let Some(request_id) = spec.request_id.as_deref()
            && let Some(first) = self.first_publication(principal, request_id).await?
        {
            return Ok(first);
        }
        let (content, sha256) = read_limited(chunks, self.config.max_bytes).await?;
        if spec.artifact_type == ArtifactType::Image {
            check_image(&spec.content_type, &content)?;
        }
        let artifact = Artifact {
            id: Uuid::now_v7(),
            tenant: sandbox.tenant.clone(),
            sandbox_id: sandbox.id,
            conversation_id: spec.conversation_id,
            artifact_type: spec.artifact_type,
            title: spec.title,
            content_type: spec.content_type,
            sandbox_path: spec.sandbox_path,
            size_bytes: content.len() as i64,
            sha256,
            preview: if spec.artifact_type.has_preview() {
                preview(&content)
            } else {
                String::new()
            },
            publisher: principal.subject.clone(),
            review_state: ReviewState::Pending,
            reviewer: None,
            review_comment: None,
            review_time: None,
            create_time: now_in_micros(),
            sandbox_destroyed_at: None,
            version: 1,
        };
        let (store, actor) = (self.store().clone(), principal.actor());
        let request_id = spec.request_id.clone();
        let stored = self
            .manager
            .run_to_completion(async move {
                let key = artifact.object_key();
                objects.put(&key, content, &artifact.content_type).await?;
                match store.insert_artifact(&artifact, request_id.as_deref(), &actor).await {
                    Ok(true) => Ok(Some(artifact)),
                    // A concurrent publication with the same request id won.
                    Ok(false) => objects.delete(&key).await.map(|()| None),
                    Err(error) => {
                        if let Err(cleanup) = objects.delete(&key).await {
                            tracing::warn!(%key, error = %cleanup, "could not remove the object of an artifact whose insert failed");
                        }
                        Err(error)
                    }
                }
            })
            .await?;
        match stored {
            Some(artifact) => {
                self.metrics.record_artifact_published(artifact.artifact_type.as_str());
                Ok(artifact)
            }
            None => {
                let request_id = spec.request_id.as_deref().unwrap_or_default();
                self.first_publication(principal, request_id).await?.ok_or_else(|| Error::Aborted {
                    reason: "CONCURRENT_MODIFICATION",
                    message: "a publication with this request id was removed meanwhile; retry"
                        .into(),
                })
            }
        }
    }

    /// AIP-155: the artifact this publisher published with `request_id`.
    async fn first_publication(
        &self,
        principal: &Principal,
        request_id: &str,
    ) -> Result<Option<Artifact>> {
        self.store()
            .get_artifact_by_request_id(&principal.tenant, &principal.subject, request_id)
            .await
    }
}

/// The whole content and its SHA-256 (lowercase hex); RESOURCE_EXHAUSTED past `max_bytes`.
async fn read_limited(
    chunks: impl Stream<Item = Result<Vec<u8>>> + Send,
    max_bytes: usize,
) -> Result<(Vec<u8>, String)> {
    let mut chunks = std::pin::pin!(chunks);
    let mut content = Vec::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if content.len() + chunk.len() > max_bytes {
            return Err(Error::TooLarge {
                reason: "ARTIFACT_TOO_LARGE",
                message: format!(
                    "the artifact's content is over this server's limit of {max_bytes} bytes"
                ),
            });
        }
        hasher.update(&chunk);
        content.extend_from_slice(&chunk);
    }
    Ok((content, hex::encode(hasher.finalize())))
}

/// The first [`PREVIEW_BYTES`] of `content` as text, cut at a UTF-8 boundary (invalid
/// sequences before it are replaced).
pub fn preview(content: &[u8]) -> String {
    let head = &content[..content.len().min(PREVIEW_BYTES)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text.to_string(),
        // Cut inside a character at the end: keep what is whole.
        Err(error) if error.error_len().is_none() => {
            String::from_utf8_lossy(&head[..error.valid_up_to()]).into_owned()
        }
        Err(_) => {
            let lossy = String::from_utf8_lossy(head).into_owned();
            let mut end = lossy.len().min(PREVIEW_BYTES);
            while !lossy.is_char_boundary(end) {
                end -= 1;
            }
            lossy[..end].to_string()
        }
    };
    // PostgreSQL text holds no NUL.
    text.replace('\0', "\u{FFFD}")
}

/// An image's bytes must be what its content type says (checked by magic bytes).
fn check_image(content_type: &str, content: &[u8]) -> Result<()> {
    let matches = match content_type {
        "image/png" => content.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => content.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/gif" => content.starts_with(b"GIF87a") || content.starts_with(b"GIF89a"),
        "image/webp" => {
            content.len() >= 12 && content.starts_with(b"RIFF") && &content[8..12] == b"WEBP"
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(Error::invalid("chunk", format!("the content is not a {content_type} image")))
    }
}

/// Now, at the precision PostgreSQL keeps, so a record reads back as it was returned.
pub(super) fn now_in_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_at_character_boundaries() {
        let text = "é".repeat(PREVIEW_BYTES);
        let cut = preview(text.as_bytes());
        assert!(cut.len() <= PREVIEW_BYTES && cut.chars().all(|c| c == 'é'));
        assert_eq!(cut.len(), PREVIEW_BYTES);
        let odd = format!("a{}", "é".repeat(PREVIEW_BYTES));
        let cut = preview(odd.as_bytes());
        assert_eq!(cut.len(), PREVIEW_BYTES - 1);
        assert_eq!(preview(b"short\0"), "short\u{FFFD}");
    }

    #[test]
    fn images_are_sniffed() {
        assert!(check_image("image/png", b"\x89PNG\r\n\x1a\nrest").is_ok());
        assert!(check_image("image/png", b"GIF89a").is_err());
        assert!(check_image("image/webp", b"RIFF\0\0\0\0WEBPVP8 ").is_ok());
    }
}
