//! Sandbox workspaces on the host: confined file access (`files`) and incremental sync with
//! the object store (`sync`).

pub mod files;
pub mod sync;
pub mod syncs;
