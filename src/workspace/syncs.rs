//! The object store client and the per-sandbox sync state of one replica: each sandbox's
//! workspace has a mutex its syncs take (two pushes never interleave their manifests) and a
//! hash cache. The object store is optional (`s3.enabled`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;
use uuid::Uuid;

use super::sync::{HashCache, SyncSettings, SyncTarget};
use crate::{
    config::S3Config,
    error::{Error, Result},
};

/// The object store and the per-sandbox sync state of this replica.
pub struct WorkspaceSyncs {
    s3: S3Config,
    settings: SyncSettings,
    client: OnceCell<aws_sdk_s3::Client>,
    sandboxes: Mutex<HashMap<Uuid, Arc<SandboxSync>>>,
}

/// One sandbox's sync state: the mutex its syncs take and its hash cache.
#[derive(Default)]
pub(crate) struct SandboxSync {
    pub(crate) running: tokio::sync::Mutex<()>,
    pub(crate) cache: HashCache,
}

impl WorkspaceSyncs {
    pub fn new(s3: S3Config, settings: SyncSettings) -> Self {
        Self { s3, settings, client: OnceCell::new(), sandboxes: Mutex::default() }
    }

    pub(crate) fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    pub(crate) fn enabled(&self) -> bool {
        self.s3.enabled
    }

    pub(crate) async fn target(&self, id: Uuid) -> Result<SyncTarget> {
        if !self.enabled() {
            return Err(Error::FailedPrecondition {
                reason: "OBJECT_STORE_DISABLED",
                message: "this server has no object store configured (s3.enabled = false)".into(),
            });
        }
        Ok(SyncTarget::for_sandbox(self.client().await, &self.s3.bucket, id))
    }

    /// The object store client (built on first use) and the configured bucket, for whoever
    /// stores objects beside the workspaces (artifacts).
    pub(crate) async fn client(&self) -> aws_sdk_s3::Client {
        self.client.get_or_init(|| crate::objectstore::client(&self.s3)).await.clone()
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.s3.bucket
    }

    pub(crate) fn state(&self, id: Uuid) -> Arc<SandboxSync> {
        let mut sandboxes =
            self.sandboxes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sandboxes.entry(id).or_default().clone()
    }

    pub(crate) fn forget(&self, id: Uuid) {
        let mut sandboxes =
            self.sandboxes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sandboxes.remove(&id);
    }
}
