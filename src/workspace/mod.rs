//! Sandbox workspaces: incremental sync between a workspace directory and the object store.

pub mod sync;
