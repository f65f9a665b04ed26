//! The `sandboxd` command line: serve, migrate, dev, route-events, keys, tenants.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::{
    auth::{self, Principal, Role},
    config::Config,
    dev::{self, DevOptions},
    store::{self, Store},
};

#[derive(Parser)]
#[command(
    name = "sandboxd",
    version,
    about = "gRPC control plane for isolated, time-limited sandboxes"
)]
struct Cli {
    /// TOML config file (layered over the defaults; `SANDBOXD_*` env vars and flags win over it).
    #[arg(long, global = true, env = "SANDBOXD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Load and validate the configuration as `serve` would (file, `SANDBOXD_*` variables,
    /// flags), print whether it is valid, and exit; connects to nothing. For checking a
    /// deployment's settings before rolling it out.
    CheckConfig {
        /// Address to listen on, as for `serve`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit (serve applies them too).
    Migrate,
    /// One-command local run on throwaway PostgreSQL, Redis and S3 (or DATABASE_URL / REDIS_URL).
    Dev {
        /// Address to listen on [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address of the web dashboard (`/ui`) [default: `[dashboard] listen`, else
        /// 127.0.0.1:8090].
        #[arg(long)]
        dashboard_listen: Option<SocketAddr>,
        /// Keep throwaway state here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start only PostgreSQL and Redis, write `DATABASE_URL=`/`REDIS_URL=` lines to this file
        /// once they answer, and wait for Ctrl-C (used by scripts/test).
        #[arg(long, value_name = "ENV_FILE")]
        deps_only: Option<PathBuf>,
    },
    /// Route Discord events from NATS JetStream to sandboxes or production (the `[router]`
    /// config section; these flags override it).
    RouteEvents(RouteEventsArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Tenant data.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Delete a tenant's artifacts with their objects (refused while the tenant has sandboxes
    /// that are not DESTROYED). Sandbox records, the audit log and API keys are kept.
    Purge { tenant: String },
}

/// Flags of `route-events`; the API key comes only from the config or `SANDBOXD_ROUTER__API_KEY`
/// (a flag would show it in the process list).
#[derive(clap::Args)]
struct RouteEventsArgs {
    /// sandboxd's gRPC address [default: http://127.0.0.1:50051].
    #[arg(long)]
    sandboxd: Option<String>,
    /// NATS server [default: nats://127.0.0.1:4222].
    #[arg(long)]
    nats: Option<String>,
    /// Subjects to consume [default: discord.events.>].
    #[arg(long)]
    subject: Option<String>,
    /// JetStream stream [default: the one capturing --subject].
    #[arg(long)]
    stream: Option<String>,
    /// Durable consumer name [default: sandboxd-router].
    #[arg(long)]
    durable: Option<String>,
}

impl RouteEventsArgs {
    fn apply(self, config: &mut crate::router::RouterConfig) {
        let RouteEventsArgs { sandboxd, nats, subject, stream, durable } = self;
        if let Some(value) = sandboxd {
            config.sandboxd_addr = value;
        }
        if let Some(value) = nats {
            config.nats_url = crate::config::SecretUrl::new(value);
        }
        if let Some(value) = subject {
            config.subject = value;
        }
        if let Some(value) = stream {
            config.stream = value;
        }
        if let Some(value) = durable {
            config.durable = value;
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        #[arg(long)]
        tenant: String,
        /// owner | admin | member | router
        #[arg(long)]
        role: String,
        /// The subject the key acts as (owner of the sandboxes it creates) [default: key-<id>].
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Make the key stop working after this long (e.g. `30d`, `12h`); no expiry by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: Uuid },
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let telemetry = crate::telemetry::init(&config.telemetry)?;
    let result = run_command(config, cli.command).await;
    telemetry.shutdown().await;
    result
}

async fn run_command(mut config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.validate()?;
            tracing::info!(database = %config.database.url, redis = %config.redis.url, "starting sandboxd");
            // The server starts even when PostgreSQL is down (health says NOT_SERVING until it
            // answers), so a failure here is only worth a warning.
            if let Err(error) = store::ensure_database(&config.database).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not check or create the database"
                );
            }
            let server = crate::server::start(config).await?;
            crate::cancel_on_signal(server.shutdown_token());
            server.wait().await
        }
        Command::CheckConfig { listen } => {
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.validate()?;
            println!("configuration is valid (listen {})", config.server.listen);
            Ok(())
        }
        Command::Migrate => {
            config.validate()?;
            store::ensure_database(&config.database).await?;
            let store = Store::connect_lazy(&config.database)?;
            store.migrate().await?;
            println!("migrations applied to {}", config.database.url);
            Ok(())
        }
        Command::Dev { listen, dashboard_listen, data_dir, deps_only } => {
            let given = dev::GivenDependencies::from_env();
            let dev_options =
                DevOptions { listen, dashboard_listen, data_dir, deps_only_env_file: deps_only };
            dev::run(config, given, dev_options).await
        }
        Command::RouteEvents(args) => {
            args.apply(&mut config.router);
            let router = crate::router::start(config.router).await?;
            crate::cancel_on_signal(router.shutdown_token());
            router.wait().await
        }
        Command::Keys { command } => keys(config, command).await,
        Command::Tenants { command: TenantsCommand::Purge { tenant } } => {
            purge_tenant(config, &tenant).await
        }
    }
}

async fn purge_tenant(config: Config, tenant: &str) -> anyhow::Result<()> {
    config.validate()?;
    let store = Store::connect_lazy(&config.database)?;
    store.migrate().await.context("the database is not reachable or not migrated")?;
    let objects = if config.s3.enabled {
        let client = crate::objectstore::client(&config.s3).await;
        Some(crate::artifacts::ArtifactObjects::new(client, &config.s3.bucket))
    } else {
        None
    };
    let removed = crate::artifacts::removal::purge_tenant(&store, objects.as_ref(), tenant).await;
    store.close().await;
    let removed = removed?;
    println!("tenant {tenant:?}: {removed} artifacts removed with their objects");
    Ok(())
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::connect_lazy(&config.database)?;
    store.migrate().await.context("the database is not reachable or not migrated")?;
    match command {
        KeysCommand::Create { tenant, role, subject, description, expires_in } => {
            let role: Role = role.parse()?;
            let subject = subject
                .unwrap_or_else(|| format!("key-{}", &Uuid::new_v4().simple().to_string()[..8]));
            let principal = Principal { tenant, subject, role };
            let expires_at = match expires_in {
                None => None,
                Some(after) => Some(
                    crate::clock::later(chrono::Utc::now(), after)
                        .context("--expires-in is too long")?,
                ),
            };
            let key = auth::create_key_expiring(&store, &principal, &description, None, expires_at)
                .await?;
            eprintln!(
                "created key {} for tenant {:?}, subject {:?}, role {}. It is shown only now:",
                key.id,
                principal.tenant,
                principal.subject,
                role.as_str()
            );
            println!("{}", key.key);
        }
        KeysCommand::List { tenant } => {
            println!(
                "{:<38} {:<16} {:<8} {:<20} {:<14} {:<25} STATUS",
                "ID", "TENANT", "ROLE", "SUBJECT", "PREFIX", "CREATED"
            );
            for key in store.list_api_keys(tenant.as_deref()).await? {
                let status = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    (None, Some(at)) if at <= chrono::Utc::now() => {
                        format!("expired {}", at.format("%Y-%m-%d %H:%M"))
                    }
                    (None, Some(at)) => format!("active, expires {}", at.format("%Y-%m-%d %H:%M")),
                    (None, None) => "active".into(),
                };
                println!(
                    "{:<38} {:<16} {:<8} {:<20} {:<14} {:<25} {status}",
                    key.id,
                    key.tenant,
                    key.role.as_str(),
                    key.subject,
                    format!("{}…", key.key_prefix),
                    key.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_api_key(id).await? {
                anyhow::bail!("no API key with id {id}");
            }
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}
