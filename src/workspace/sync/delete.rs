//! Deleting objects in batches (DeleteObjects takes at most 1,000 keys).

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{SyncTarget, s3_failure};
use crate::error::{Error, Result};

const BATCH: usize = 1000;

/// Deletes every object under `target.prefix` (for destroy): lists a page of up to 1,000 keys
/// and deletes it in one DeleteObjects, until none are left. Returns how many were deleted.
/// Refuses a prefix that is empty or does not end with `/` (it would reach other sandboxes'
/// objects).
#[tracing::instrument(name = "s3.delete_prefix", skip_all)]
pub async fn delete_prefix(target: &SyncTarget) -> Result<u64> {
    delete_prefix_keeping(target, None).await
}

/// As [`delete_prefix`], but objects under `target.prefix` + `keep` (e.g. `artifacts/`, which
/// outlive the sandbox for their own retention) stay.
#[tracing::instrument(name = "s3.delete_prefix", skip_all)]
pub async fn delete_prefix_keeping(target: &SyncTarget, keep: Option<&str>) -> Result<u64> {
    let kept = keep.map(|keep| format!("{}{keep}", target.prefix));
    if target.prefix.is_empty() || !target.prefix.ends_with('/') {
        return Err(Error::invalid("prefix", "must be non-empty and end with '/'"));
    }
    let mut deleted = 0;
    let mut continuation: Option<String> = None;
    loop {
        let page = target
            .client
            .list_objects_v2()
            .bucket(&target.bucket)
            .prefix(&target.prefix)
            .max_keys(BATCH as i32)
            .set_continuation_token(continuation.take())
            .send()
            .await
            .map_err(|error| s3_failure(format!("ListObjectsV2 {}", target.prefix), error))?;
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_string))
            .filter(|key| kept.as_deref().is_none_or(|kept| !key.starts_with(kept)))
            .collect();
        deleted += delete_keys(target, keys).await?;
        match page.next_continuation_token() {
            Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.into()),
            _ => return Ok(deleted),
        }
    }
}

/// Deletes `keys` (any number), 1,000 per request. Deleting a missing key succeeds (S3 is
/// idempotent here); a key S3 reports as not deleted fails the call.
#[tracing::instrument(name = "s3.delete_objects", skip_all)]
pub(super) async fn delete_keys(target: &SyncTarget, keys: Vec<String>) -> Result<u64> {
    let mut deleted = 0;
    for batch in keys.chunks(BATCH) {
        let objects = batch
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                Error::Internal(anyhow::Error::new(error).context("building DeleteObjects"))
            })?;
        let delete =
            Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|error| {
                Error::Internal(anyhow::Error::new(error).context("building DeleteObjects"))
            })?;
        let output = target
            .client
            .delete_objects()
            .bucket(&target.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|error| s3_failure(format!("DeleteObjects under {}", target.prefix), error))?;
        if let Some(failure) = output.errors().first() {
            return Err(Error::unavailable(
                "object store",
                anyhow::anyhow!(
                    "DeleteObjects: {} of {} keys not deleted, e.g. {:?}: {} {}",
                    output.errors().len(),
                    batch.len(),
                    failure.key().unwrap_or_default(),
                    failure.code().unwrap_or_default(),
                    failure.message().unwrap_or_default()
                ),
            ));
        }
        deleted += batch.len() as u64;
    }
    Ok(deleted)
}
