//! gRPC adapters, one file per service: authenticate, decode the request into domain types,
//! call the domain, encode the answer. No SQL and no business rules live here.

mod artifact_convert;
mod artifact_requests;
mod artifacts;
mod convert;
mod files;
mod git;
mod guild_routing;
mod locks;
#[cfg(test)]
mod parsing_properties;
mod requests;
mod runtime_requests;
mod sandbox_control;
mod sync_service;
mod workspace_sync;

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

pub use artifacts::ArtifactServiceApi;
pub use guild_routing::GuildRoutingApi;
pub use sandbox_control::SandboxControlApi;
pub use sync_service::SyncServiceApi;

/// The response stream type of every server-streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
