//! Sandbox domain: identity, lifecycle state machine, validation and the manager that provisions
//! and destroys sandboxes.

pub mod activity;
pub mod boot;
pub mod connection;
pub mod create;
pub mod destroy;
pub mod exec;
pub mod extend;
pub mod git;
pub mod git_remote;
pub mod inspect;
pub mod listing;
pub mod manager;
pub mod model;
pub mod page_token;
pub mod state;
pub mod validate;
pub mod watch;
pub mod workspace_sync;

pub use create::CreateSpec;
pub use manager::{SandboxManager, SandboxSelector};
pub use model::{Sandbox, SandboxId, SandboxState};
