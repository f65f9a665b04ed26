//! `sandboxctl lock acquire|renew|release`: the distributed locks from the terminal.

use std::time::Duration;

use clap::Subcommand;

use super::{Connection, sandboxes::proto_duration};
use crate::proto::{self, AcquireLockRequest, ReleaseLockRequest, RenewLockRequest};

#[derive(Subcommand)]
pub enum LockCommand {
    /// Acquire a lock; prints its owner token and fencing token.
    Acquire {
        resource: String,
        /// Lease duration, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How long to wait while another owner holds it, e.g. 5s (0: try once).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// Who holds it, for diagnostics.
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// Extend a held lease.
    Renew {
        resource: String,
        owner_token: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Release a held lease.
    Release { resource: String, owner_token: String },
}

pub async fn run(connection: &Connection, command: LockCommand, json: bool) -> anyhow::Result<()> {
    let mut client = connection.sync();
    match command {
        LockCommand::Acquire { resource, ttl, wait, owner } => {
            let ttl = ttl.map(proto_duration);
            let wait = wait.map(proto_duration);
            let request = AcquireLockRequest { resource, ttl, wait, owner };
            print_lease(&client.acquire_lock(request).await?.into_inner(), json);
        }
        LockCommand::Renew { resource, owner_token, ttl } => {
            let request = RenewLockRequest { resource, owner_token, ttl: ttl.map(proto_duration) };
            print_lease(&client.renew_lock(request).await?.into_inner(), json);
        }
        LockCommand::Release { resource, owner_token } => {
            let request = ReleaseLockRequest { resource, owner_token };
            let released = client.release_lock(request).await?.into_inner().released;
            if json {
                println!("{}", serde_json::json!({ "released": released }));
            } else {
                println!(
                    "{}",
                    if released { "released" } else { "was not held (expired or released)" }
                );
            }
        }
    }
    Ok(())
}

fn print_lease(lease: &proto::Lease, json: bool) {
    let expires = lease.expire_time.map(|t| t.seconds).unwrap_or_default();
    if json {
        let value = serde_json::json!({
            "resource": lease.resource,
            "owner_token": lease.owner_token,
            "fencing_token": lease.fencing_token,
            "expire_time_unix": expires,
        });
        println!("{value}");
    } else {
        println!("resource       {}", lease.resource);
        println!("owner token    {}", lease.owner_token);
        println!("fencing token  {}", lease.fencing_token);
        println!("expires (unix) {expires}");
    }
}
