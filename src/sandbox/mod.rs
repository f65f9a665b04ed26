//! Sandbox domain: identity, lifecycle state machine, validation and the manager that provisions
//! and destroys sandboxes.

pub mod manager;
pub mod model;
pub mod state;
pub mod validate;

pub use manager::{CreateSpec, SandboxManager, SandboxSelector};
pub use model::{Sandbox, SandboxId, SandboxState};
