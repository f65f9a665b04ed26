//! `sandboxctl pool`: the warm pools of the server's templates.

use clap::Subcommand;

use super::{Connection, output};
use crate::proto::GetPoolStatusRequest;

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Sizes, ready and in-use members, hits, misses and reuse rate of every template's pool
    /// (or of one).
    Status { template: Option<String> },
}

pub async fn run(connection: &Connection, command: PoolCommand, json: bool) -> anyhow::Result<()> {
    let mut client = connection.control();
    match command {
        PoolCommand::Status { template } => {
            let request = GetPoolStatusRequest { template: template.unwrap_or_default() };
            let pools = client.get_pool_status(request).await?.into_inner().pools;
            output::pool_status(&pools, json);
        }
    }
    Ok(())
}
