//! An artifact's bytes in the object store: one object per artifact, written whole (content is
//! at most `artifacts.max_bytes`, buffered while its SHA-256 is computed), read as a stream.

use aws_sdk_s3::{Client, primitives::ByteStream};

use crate::{
    error::{Error, Result},
    workspace::sync::s3_failure,
};

/// The bucket holding artifacts, and the client to reach it.
#[derive(Clone)]
pub struct ArtifactObjects {
    client: Client,
    bucket: String,
}

impl ArtifactObjects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }

    #[tracing::instrument(name = "s3.artifact.put", skip(self, content))]
    pub async fn put(&self, key: &str, content: Vec<u8>, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(content))
            .send()
            .await
            .map_err(|error| s3_failure(format!("PutObject {key}"), error))?;
        Ok(())
    }

    /// The object's bytes; a missing object is DATA_LOSS (its record says it exists).
    #[tracing::instrument(name = "s3.artifact.get", skip(self))]
    pub async fn open(&self, key: &str) -> Result<ByteStream> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => Ok(output.body),
            Err(error) => {
                let error = aws_sdk_s3::Error::from(error);
                if matches!(error, aws_sdk_s3::Error::NoSuchKey(_)) {
                    return Err(corrupt("its bytes are missing from the object store"));
                }
                Err(s3_failure(format!("GetObject {key}"), error))
            }
        }
    }

    /// Deletes the object; deleting a missing one succeeds.
    #[tracing::instrument(name = "s3.artifact.delete", skip(self))]
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| s3_failure(format!("DeleteObject {key}"), error))?;
        Ok(())
    }
}

/// DATA_LOSS: the stored bytes do not match the artifact's record.
pub fn corrupt(what: &str) -> Error {
    Error::DataLoss {
        reason: "ARTIFACT_CORRUPT",
        message: format!("the artifact is corrupt: {what}"),
    }
}
