//! ReadArtifact: the object streamed in chunks of at most [`READ_CHUNK`] bytes while its
//! SHA-256 is computed; a stream whose bytes (or size) do not match the record ends with
//! DATA_LOSS instead of ending cleanly.

use futures::Stream;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ArtifactService, objects::corrupt};
use crate::{auth::Principal, error::Result};

pub const READ_CHUNK: usize = 64 * 1024;

/// One chunk of an artifact's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentChunk {
    pub bytes: Vec<u8>,
    pub offset: i64,
    pub size_bytes: i64,
}

impl ArtifactService {
    /// The content of an artifact visible to the caller.
    #[tracing::instrument(name = "artifact.read", skip_all, fields(tenant = %principal.tenant))]
    pub async fn read(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<impl Stream<Item = Result<ContentChunk>> + Send + 'static> {
        let artifact = self.get(principal, id).await?;
        let objects = self.objects().await?;
        let mut body = objects.open(&artifact.object_key()).await?;
        let size_bytes = artifact.size_bytes;
        Ok(async_stream::try_stream! {
            let mut hasher = Sha256::new();
            let mut offset = 0i64;
            let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK);
            loop {
                let next = body.try_next().await.map_err(|error| {
                    crate::error::Error::unavailable("object store", anyhow::Error::new(error).context("reading an artifact"))
                })?;
                let Some(bytes) = next else { break };
                hasher.update(&bytes);
                pending.extend_from_slice(&bytes);
                while pending.len() >= READ_CHUNK {
                    let rest = pending.split_off(READ_CHUNK);
                    let chunk = std::mem::replace(&mut pending, rest);
                    let len = chunk.len() as i64;
                    yield ContentChunk { bytes: chunk, offset, size_bytes };
                    offset += len;
                }
            }
            let total = offset + pending.len() as i64;
            let digest = hex::encode(hasher.finalize());
            if total != size_bytes || digest != artifact.sha256 {
                Err(corrupt("its stored bytes do not match the recorded size and SHA-256"))?;
            }
            if !pending.is_empty() || total == 0 {
                yield ContentChunk { bytes: pending, offset, size_bytes };
            }
        })
    }
}
