//! Object transfers: one PUT for small files, multipart uploads for large ones, and downloads
//! written atomically (temporary file in the same directory, then rename).

use std::{
    fs::File,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aws_sdk_s3::{
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use tokio::{io::AsyncWriteExt, sync::Semaphore, task::JoinSet};

use super::{
    SyncSettings, SyncTarget,
    hash_cache::{Digest, Hasher},
    join_failure, local_failure, s3_failure,
    scan::{FileStat, TEMP_PREFIX},
};
use crate::error::{Error, Result};

/// S3's largest part count per upload.
const MAX_PARTS: u64 = 10_000;

/// Uploads `bytes` in one PUT; S3 checks them against their SHA-256.
#[tracing::instrument(name = "s3.put_object", skip_all)]
pub(super) async fn put_small(
    target: &SyncTarget,
    relative: &str,
    bytes: Vec<u8>,
    hash: &Digest,
) -> Result<()> {
    let key = target.file_key(relative);
    target
        .client
        .put_object()
        .bucket(&target.bucket)
        .key(&key)
        .content_length(bytes.len() as i64)
        .checksum_sha256(BASE64.encode(hash))
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|error| s3_failure(format!("PUT {key}"), error))?;
    Ok(())
}

/// Uploads an open file in parts, reading it once from the start: each part is read (and
/// hashed) only after a request permit is held, so at most `concurrency` parts are in memory.
/// Returns the bytes and hash of what was uploaded, and the file. Any failure aborts the
/// multipart upload, so no parts are left behind; `cancelled` (another file failed) stops it
/// between parts.
#[tracing::instrument(name = "s3.multipart_upload", skip_all)]
pub(super) async fn put_multipart(
    target: &SyncTarget,
    relative: &str,
    file: File,
    settings: &SyncSettings,
    permits: &Arc<Semaphore>,
    cancelled: &AtomicBool,
) -> Result<(u64, Digest, File)> {
    let key = target.file_key(relative);
    let created = target
        .client
        .create_multipart_upload()
        .bucket(&target.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|error| s3_failure(format!("CreateMultipartUpload {key}"), error))?;
    let upload_id = created.upload_id.ok_or_else(|| {
        Error::unavailable(
            "object store",
            anyhow::anyhow!("CreateMultipartUpload {key} returned no upload id"),
        )
    })?;
    let uploaded = upload_parts(target, &key, &upload_id, file, settings, permits, cancelled).await;
    let completed = match uploaded {
        Ok((parts, size, hash, file)) => target
            .client
            .complete_multipart_upload()
            .bucket(&target.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map(|_| (size, hash, file))
            .map_err(|error| s3_failure(format!("CompleteMultipartUpload {key}"), error)),
        Err(error) => Err(error),
    };
    if completed.is_err() {
        let aborted = target
            .client
            .abort_multipart_upload()
            .bucket(&target.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(error) = aborted {
            let error = aws_sdk_s3::Error::from(error);
            tracing::warn!(key, error = %error, "aborting a failed multipart upload failed");
        }
    }
    completed
}

async fn upload_parts(
    target: &SyncTarget,
    key: &str,
    upload_id: &str,
    file: File,
    settings: &SyncSettings,
    permits: &Arc<Semaphore>,
    cancelled: &AtomicBool,
) -> Result<(Vec<CompletedPart>, u64, Digest, File)> {
    let size_hint = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let part_size = settings.part_size.max(size_hint.div_ceil(MAX_PARTS)) as usize;
    let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut state = (file, Hasher::default());
    let mut total = 0u64;
    for number in 1.. {
        if cancelled.load(Ordering::Relaxed) {
            return Err(Error::unavailable(
                "object store",
                anyhow::anyhow!("upload of {key} stopped: another transfer failed"),
            ));
        }
        if number as u64 > MAX_PARTS {
            return Err(Error::FailedPrecondition {
                reason: "SYNC_FILE_TOO_LARGE",
                message: format!("{key} grew past {MAX_PARTS} parts while being uploaded"),
            });
        }
        let permit = permits.clone().acquire_owned().await.map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("request permits closed"))
        })?;
        let (file, hasher) = state;
        let (file, mut hasher, chunk) =
            tokio::task::spawn_blocking(move || read_part(file, hasher, part_size))
                .await
                .map_err(join_failure)?
                .map_err(|error| local_failure(format!("reading {key}"), error))?;
        let last = chunk.len() < part_size;
        if chunk.is_empty() && number > 1 {
            state = (file, hasher);
            break;
        }
        hasher.update(&chunk);
        total += chunk.len() as u64;
        state = (file, hasher);
        let request = target
            .client
            .upload_part()
            .bucket(&target.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(chunk.len() as i64)
            .body(ByteStream::from(chunk));
        let what = format!("UploadPart {number} of {key}");
        tasks.spawn(async move {
            let output = request.send().await.map_err(|error| s3_failure(what, error))?;
            drop(permit);
            Ok(CompletedPart::builder().part_number(number).set_e_tag(output.e_tag).build())
        });
        // Fail fast on a part that already failed.
        while let Some(done) = tasks.try_join_next() {
            parts.push(done.map_err(join_failure)??);
        }
        if last {
            break;
        }
    }
    while let Some(done) = tasks.join_next().await {
        parts.push(done.map_err(join_failure)??);
    }
    parts.sort_by_key(|part| part.part_number);
    let (file, hasher) = state;
    Ok((parts, total, hasher.finish(), file))
}

/// Reads up to `part_size` bytes (fewer only at the end of the file). The hasher rides along
/// so the caller keeps one owner for it.
fn read_part(
    mut file: File,
    hasher: Hasher,
    part_size: usize,
) -> std::io::Result<(File, Hasher, Vec<u8>)> {
    let mut chunk = Vec::with_capacity(part_size);
    (&mut file).take(part_size as u64).read_to_end(&mut chunk)?;
    Ok((file, hasher, chunk))
}

/// The owner that pulled files and directories get (the workspace root's). Changing it needs
/// root; when sandboxd is not root, the first refusal turns it off.
#[derive(Debug, Clone)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
    enabled: Arc<AtomicBool>,
}

impl Owner {
    pub(super) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self { uid: metadata.uid(), gid: metadata.gid(), enabled: Arc::new(AtomicBool::new(true)) }
    }

    fn differs(&self, metadata: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.enabled.load(Ordering::Relaxed)
            && (metadata.uid() != self.uid || metadata.gid() != self.gid)
    }

    /// `chown` of an open file (so a path swapped meanwhile is never followed).
    pub(super) fn apply_to_file(&self, file: &File, path: &Path) -> Result<()> {
        let metadata = file
            .metadata()
            .map_err(|error| local_failure(format!("reading {}", path.display()), error))?;
        if !self.differs(&metadata) {
            return Ok(());
        }
        self.refused_is_ok(std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid)), path)
    }

    /// `lchown` of a directory pull just created.
    pub(super) fn apply_to_dir(&self, path: &Path) -> Result<()> {
        let metadata = std::fs::symlink_metadata(path)
            .map_err(|error| local_failure(format!("reading {}", path.display()), error))?;
        if !self.differs(&metadata) {
            return Ok(());
        }
        self.refused_is_ok(std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)), path)
    }

    fn refused_is_ok(&self, result: std::io::Result<()>, path: &Path) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EPERM) => {
                if self.enabled.swap(false, Ordering::Relaxed) {
                    tracing::debug!("not running as root: pulled files keep this process's owner");
                }
                Ok(())
            }
            Err(error) => {
                Err(local_failure(format!("changing the owner of {}", path.display()), error))
            }
        }
    }
}

/// What a download wrote.
pub(super) struct Downloaded {
    pub size: u64,
    pub hash: Digest,
    /// Of the file after it was renamed into place.
    pub stat: FileStat,
}

/// Downloads `relative` to `destination` (its parent exists): the body goes to a temporary
/// file beside it, gets `mode` and `owner`, and is renamed over `destination`. On failure the
/// temporary file is removed and `destination` is untouched.
#[tracing::instrument(name = "s3.get_object", skip_all)]
pub(super) async fn download(
    target: &SyncTarget,
    relative: &str,
    destination: PathBuf,
    mode: u32,
    owner: &Owner,
    permits: &Semaphore,
) -> Result<Downloaded> {
    let _permit = permits.acquire().await.map_err(|error| {
        Error::Internal(anyhow::Error::new(error).context("request permits closed"))
    })?;
    let key = target.file_key(relative);
    let response = target
        .client
        .get_object()
        .bucket(&target.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|error| s3_failure(format!("GET {key}"), error))?;
    let directory = destination.parent().map(Path::to_path_buf).unwrap_or_default();
    let temp = directory.join(format!("{TEMP_PREFIX}{:016x}.tmp", rand::random::<u64>()));
    let written = write_temp(response.body, &key, &temp, &destination, mode, owner).await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    written
}

async fn write_temp(
    mut body: ByteStream,
    key: &str,
    temp: &Path,
    destination: &Path,
    mode: u32,
    owner: &Owner,
) -> Result<Downloaded> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .await
        .map_err(|error| local_failure(format!("creating {}", temp.display()), error))?;
    let mut hasher = Hasher::default();
    let mut size = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|error| {
        Error::unavailable("object store", anyhow::Error::new(error).context(format!("GET {key}")))
    })? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|error| local_failure(format!("writing {}", temp.display()), error))?;
    }
    file.flush()
        .await
        .map_err(|error| local_failure(format!("writing {}", temp.display()), error))?;
    let file = file.into_std().await;
    let temp = temp.to_path_buf();
    let destination = destination.to_path_buf();
    let owner = owner.clone();
    let placed = tokio::task::spawn_blocking(move || -> Result<FileStat> {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|error| local_failure(format!("chmod {}", temp.display()), error))?;
        owner.apply_to_file(&file, &temp)?;
        std::fs::rename(&temp, &destination).map_err(|error| {
            local_failure(
                format!("renaming {} to {}", temp.display(), destination.display()),
                error,
            )
        })?;
        let metadata = file
            .metadata()
            .map_err(|error| local_failure(format!("reading {}", destination.display()), error))?;
        Ok(FileStat::of(&metadata))
    });
    let stat = placed.await.map_err(join_failure)??;
    Ok(Downloaded { size, hash: hasher.finish(), stat })
}
