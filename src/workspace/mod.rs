//! Sandbox workspaces on the host: confined file access (`files`) and object-store sync.

pub mod files;
