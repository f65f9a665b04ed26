//! Guild routing: Discord guild ids → sandboxes, served from an in-memory table kept current
//! across replicas, so the resolve hot path never touches PostgreSQL.

mod guild_id;
pub mod service;
pub mod table;

pub use guild_id::GuildId;
pub use service::RoutingService;
pub use table::{ResolvedRoute, RoutingTable};
