//! Git for workspaces. Git that touches a workspace always runs inside the sandbox (as its uid,
//! under bubblewrap), never on the host: a workspace's `.git/config` is the sandbox's to write
//! and can name programs to run (`core.fsmonitor`, hooks, filters). Git that talks to remotes
//! runs on the host, in sandboxd's own mirrors ([`mirror`]), with the credentials of
//! [`settings`]; commits cross between the two as bundles ([`scripts`]).

pub mod host;
pub mod mirror;
pub mod pauses;
pub mod scripts;
pub mod settings;
pub mod status;

use std::sync::Arc;

use crate::lock::Locks;

/// Lock scope of pushes. Repositories are the operator's (named by templates), shared by every
/// tenant, so their push locks are not tenant-scoped; this is no tenant name (tenant names
/// have no `:`).
pub const PUSH_LOCK_SCOPE: &str = "sandboxd:git";

/// What GitPush, GitPull and cloning need besides the sandbox.
pub struct GitRemotes {
    pub mirrors: mirror::Mirrors,
    pub locks: Locks,
    pub pauses: pauses::PushPauses,
}

impl GitRemotes {
    pub fn new(settings: settings::GitSettings, locks: Locks) -> Self {
        Self {
            mirrors: mirror::Mirrors::new(Arc::new(settings)),
            locks,
            pauses: pauses::PushPauses::default(),
        }
    }

    pub fn settings(&self) -> &settings::GitSettings {
        self.mirrors.settings()
    }
}
