//! The manifest: what a prefix holds after the last completed push, one JSON object.

use std::collections::BTreeMap;

use aws_sdk_s3::{error::SdkError, primitives::ByteStream};
use serde::{Deserialize, Serialize};

use super::{SyncTarget, hash_cache::Digest, s3_failure};
use crate::error::{Error, Result};

pub const MANIFEST_VERSION: u32 = 1;

/// Every synced file by workspace-relative path (sorted, so the JSON is stable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub size: u64,
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
    /// Permission bits (`0o7777`), restored by pull.
    pub mode: u32,
}

impl Manifest {
    pub fn new() -> Self {
        Self { version: MANIFEST_VERSION, files: BTreeMap::new() }
    }
}

/// Reads the manifest; `None` when the prefix has none (nothing was pushed yet).
#[tracing::instrument(name = "s3.get_manifest", skip_all)]
pub async fn load_manifest(target: &SyncTarget) -> Result<Option<Manifest>> {
    let key = target.manifest_key();
    let response = match target.client.get_object().bucket(&target.bucket).key(&key).send().await {
        Ok(response) => response,
        Err(SdkError::ServiceError(error)) if error.err().is_no_such_key() => return Ok(None),
        Err(error) => return Err(s3_failure(format!("GET {key}"), error)),
    };
    let bytes = response.body.collect().await.map_err(|error| {
        Error::unavailable("object store", anyhow::Error::new(error).context(format!("GET {key}")))
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes.into_bytes()).map_err(|error| Error::FailedPrecondition {
            reason: "SYNC_MANIFEST_INVALID",
            message: format!("the sync manifest {key} is not valid: {error}"),
        })?;
    if manifest.version != MANIFEST_VERSION {
        return Err(Error::FailedPrecondition {
            reason: "SYNC_MANIFEST_INVALID",
            message: format!(
                "the sync manifest {key} has version {}; this sandboxd reads version {MANIFEST_VERSION}",
                manifest.version
            ),
        });
    }
    Ok(Some(manifest))
}

/// Writes the manifest in one PUT (S3 makes it visible atomically).
#[tracing::instrument(name = "s3.put_manifest", skip_all)]
pub(super) async fn store_manifest(target: &SyncTarget, manifest: &Manifest) -> Result<()> {
    let key = target.manifest_key();
    let body = serde_json::to_vec(manifest).map_err(|error| {
        Error::Internal(anyhow::Error::new(error).context("encoding the manifest"))
    })?;
    target
        .client
        .put_object()
        .bucket(&target.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|error| s3_failure(format!("PUT {key}"), error))?;
    Ok(())
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use super::Digest;

    pub fn serialize<S: Serializer>(digest: &Digest, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest).map_err(D::Error::custom)?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut manifest = Manifest::new();
        manifest.files.insert("a/b".into(), FileEntry { size: 3, sha256: [0xab; 32], mode: 0o755 });
        let text = serde_json::to_string(&manifest).expect("encodes");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).expect("decodes"), manifest);
        assert!(
            serde_json::from_str::<Manifest>(
                r#"{"version":1,"files":{"a":{"size":1,"sha256":"zz","mode":0}}}"#
            )
            .is_err()
        );
    }
}
