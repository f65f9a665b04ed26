//! The `sandboxctl` client CLI. It speaks only the public gRPC API (the generated clients), so
//! it is also a worked example of calling sandboxd from Rust.

mod artifacts;
mod bench;
mod bench_bare;
mod bench_exec;
mod bench_git;
mod bench_listing;
mod bench_locks;
mod bench_pool;
mod bench_resolve;
mod bench_router;
mod bench_router_sides;
mod bench_sync;
mod exec;
mod git;
mod lock;
mod mcp;
mod output;
mod pool;
mod routes;
mod sandboxes;
mod stats;
mod workspace;

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::{
    Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::proto::{
    guild_routing_client::GuildRoutingClient, sandbox_control_client::SandboxControlClient,
    sync_service_client::SyncServiceClient,
};

#[derive(Parser)]
#[command(name = "sandboxctl", version, about = "Client CLI for sandboxd")]
struct Cli {
    /// sandboxd address: http:// (plaintext) or https:// (TLS).
    #[arg(long, global = true, env = "SANDBOXD_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// API key (sent as `authorization: Bearer <key>`).
    #[arg(long, global = true, env = "SANDBOXD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of a human-readable view.
    #[arg(long, global = true)]
    json: bool,
    /// PEM CA certificates trusted for an https:// address [default: the system's].
    #[arg(long, global = true, env = "SANDBOXD_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server that requires mTLS (with --tls-key).
    #[arg(long, global = true, env = "SANDBOXD_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "SANDBOXD_TLS_KEY", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Sandbox(sandboxes::SandboxCommand),
    /// Artifacts and their review: publish, ls, get, cat, approve, reject.
    Artifact {
        #[command(subcommand)]
        command: artifacts::ArtifactCommand,
    },
    /// Guild routes: add, rm, resolve, list, watch.
    Route {
        #[command(subcommand)]
        command: routes::RouteCommand,
    },
    /// Runs a command in a sandbox, streaming its output; exits with its exit code.
    Exec(exec::ExecArgs),
    /// Runs a template hook in a sandbox (e.g. `message`).
    Hook(exec::HookArgs),
    /// Workspace sync with the object store: push, pull, status.
    Sync {
        #[command(subcommand)]
        command: workspace::SyncCommand,
    },
    /// Workspace files: ls, cat, put.
    Files {
        #[command(subcommand)]
        command: workspace::FilesCommand,
    },
    /// The workspace repository: status, diff.
    Git {
        #[command(subcommand)]
        command: git::GitCommand,
    },
    /// Distributed locks: acquire, renew, release.
    Lock {
        #[command(subcommand)]
        command: lock::LockCommand,
    },
    /// Serves sandboxd as an MCP server on stdin/stdout, for coding agents (tools for
    /// sandboxes, exec, files, sync, git and locks; resources for templates and connections).
    Mcp(mcp::McpArgs),
    /// Warm pools: status.
    Pool {
        #[command(subcommand)]
        command: pool::PoolCommand,
    },
    /// Benchmarks against the server (`bench lifecycle`, `bench resolve`, `bench claims`).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// A bare tonic Health server, the ceiling of `bench resolve --bare-addr`.
    #[command(hide = true)]
    BenchBareServer(bench_bare::BareServerArgs),
    /// Workspace sync beside aws-cli and rclone on an in-process S3 server (see
    /// scripts/bench-sync).
    #[command(hide = true)]
    BenchSync(bench_sync::BenchSyncArgs),
}

pub(crate) use crate::bearer::Bearer;

type Client = SandboxControlClient<InterceptedService<Channel, Bearer>>;

/// A connection to sandboxd; each service's client is built on the same channel.
pub(crate) struct Connection {
    endpoint: Endpoint,
    channel: Channel,
    bearer: Bearer,
    /// For clients that open their own connections (the router benchmark runs a router).
    addr: String,
    tls: crate::tls::grpc_client::GrpcClientTls,
    api_key: crate::config::Secret,
}

impl Connection {
    pub(crate) fn control(&self) -> Client {
        SandboxControlClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The TLS files the connection was made with (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub(crate) fn tls(&self) -> &crate::tls::grpc_client::GrpcClientTls {
        &self.tls
    }

    pub(crate) fn api_key(&self) -> &crate::config::Secret {
        &self.api_key
    }

    pub(crate) fn bearer(&self) -> Bearer {
        self.bearer.clone()
    }

    /// Another HTTP/2 connection to the same server (load generators spread over several).
    pub(crate) async fn open_channel(&self) -> anyhow::Result<Channel> {
        Ok(self.endpoint.connect().await?)
    }

    pub(crate) fn sync(&self) -> SyncServiceClient<InterceptedService<Channel, Bearer>> {
        SyncServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn routing(&self) -> GuildRoutingClient<InterceptedService<Channel, Bearer>> {
        GuildRoutingClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            match error.downcast_ref::<Status>() {
                Some(status) => eprintln!("{}", output::describe_status(status)),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// The client TLS settings of the command line.
fn client_tls(cli: &Cli) -> crate::tls::grpc_client::GrpcClientTls {
    crate::tls::grpc_client::GrpcClientTls {
        ca_file: cli.tls_ca.clone(),
        cert_file: cli.tls_cert.clone(),
        key_file: cli.tls_key.clone(),
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Connection> {
    let mut connection = connect_lazily(cli)?;
    connection.channel = connection
        .endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to sandboxd at {}", cli.addr))?;
    Ok(connection)
}

/// A connection made on first use (`sandboxctl mcp` starts before sandboxd may be up).
fn connect_lazily(cli: &Cli) -> anyhow::Result<Connection> {
    let tls = client_tls(cli);
    let endpoint =
        crate::tls::grpc_client::endpoint(&cli.addr, &tls)?.connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect_lazy();
    let bearer = Bearer::new(cli.api_key.as_deref())?;
    let api_key = crate::config::Secret::new(cli.api_key.clone().unwrap_or_default());
    Ok(Connection { endpoint, channel, bearer, addr: cli.addr.clone(), tls, api_key })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A server, not a client: it connects to nothing.
    match cli.command {
        Command::BenchBareServer(args) => {
            return bench_bare::serve(args).await.map(|()| ExitCode::SUCCESS);
        }
        // Runs its own S3 server and talks to no sandboxd.
        Command::BenchSync(args) => {
            return bench_sync::run(args, cli.json).await.map(|()| ExitCode::SUCCESS);
        }
        // Connects lazily: an agent starts the MCP server before sandboxd may be up, and each
        // tool call reports an unreachable server as UNAVAILABLE.
        Command::Mcp(ref args) => {
            let connection = connect_lazily(&cli)?;
            let served = match args.listen {
                Some(listen) => mcp::serve_http(&connection, listen).await,
                None => mcp::serve(&connection).await,
            };
            return served.map(|()| ExitCode::SUCCESS);
        }
        _ => {}
    }
    let connection = connect(&cli).await?;
    let json = cli.json;
    let done = match cli.command {
        Command::Exec(args) => return exec::exec(&connection, args).await,
        Command::Hook(args) => return exec::hook(&connection, args).await,
        Command::Sandbox(command) => sandboxes::run(&connection, command, json).await,
        Command::Route { command } => routes::run(&connection, command, json).await,
        Command::Artifact { command } => artifacts::run(&connection, command, json).await,
        Command::Pool { command } => pool::run(&connection, command, json).await,
        Command::Sync { command } => workspace::sync(&connection, command, json).await,
        Command::Lock { command } => lock::run(&connection, command, json).await,
        Command::Git { command } => git::run(&connection, command, json).await,
        Command::Files { command } => workspace::files(&connection, command, json).await,
        Command::Bench { command } => bench::run(&connection, command, json).await,
        Command::BenchBareServer(_) | Command::BenchSync(_) | Command::Mcp(_) => {
            unreachable!("run above, before connecting")
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}
