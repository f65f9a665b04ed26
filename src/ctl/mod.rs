//! The `sandboxctl` client CLI. It speaks only the public gRPC API (the generated client), so
//! it is also a worked example of calling sandboxd from Rust.

mod bench;
mod output;

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::proto::{
    CreateSandboxRequest, DestroySandboxRequest, GetSandboxRequest, ListTemplatesRequest, Sandbox,
    get_sandbox_request::Selector, sandbox_control_client::SandboxControlClient,
};

#[derive(Parser)]
#[command(name = "sandboxctl", version, about = "Client CLI for sandboxd")]
struct Cli {
    /// sandboxd address.
    #[arg(long, global = true, env = "SANDBOXD_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// API key (sent as `authorization: Bearer <key>`).
    #[arg(long, global = true, env = "SANDBOXD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of a human-readable view.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the templates the server knows.
    Templates,
    /// Create a sandbox from a template.
    Create {
        template: String,
        #[arg(long)]
        name: Option<String>,
        /// Label as key=value; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Lifetime, e.g. 2h or 30m (default: the template's).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Idempotency key: retrying with the same id returns the same sandbox.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a sandbox by id or name.
    Get { sandbox: String },
    /// Destroy a sandbox by id or name (idempotent).
    Destroy {
        sandbox: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Benchmarks against the server (e.g. `bench lifecycle`).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("label {value:?} is not key=value"))
}

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = SandboxControlClient<InterceptedService<Channel, Bearer>>;

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<Status>() {
                Some(status) => eprintln!("{}", output::describe_status(status)),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(cli.addr.clone())
        .with_context(|| format!("invalid address {:?}", cli.addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("cannot connect to sandboxd at {}", cli.addr))?;
    let bearer = match &cli.api_key {
        Some(key) => {
            Some(format!("Bearer {key}").parse().context("the API key is not valid ASCII")?)
        }
        None => None,
    };
    Ok(SandboxControlClient::with_interceptor(channel, Bearer(bearer)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = connect(&cli).await?;
    let json = cli.json;
    match cli.command {
        Command::Templates => {
            let templates =
                client.list_templates(ListTemplatesRequest {}).await?.into_inner().templates;
            output::templates(&templates, json);
        }
        Command::Create { template, name, labels, ttl, request_id } => {
            let request = CreateSandboxRequest {
                template,
                name: name.unwrap_or_default(),
                labels: labels.into_iter().collect(),
                ttl: ttl.map(|ttl| prost_types::Duration {
                    seconds: ttl.as_secs() as i64,
                    nanos: ttl.subsec_nanos() as i32,
                }),
                request_id: request_id.unwrap_or_default(),
                ..Default::default()
            };
            let sandbox = client.create_sandbox(request).await?.into_inner();
            output::sandbox(&sandbox, json);
        }
        Command::Get { sandbox } => {
            let sandbox = get(&mut client, &sandbox).await?;
            output::sandbox(&sandbox, json);
        }
        Command::Destroy { sandbox, reason } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let request = DestroySandboxRequest { sandbox_id, reason, ..Default::default() };
            let sandbox = client.destroy_sandbox(request).await?.into_inner();
            output::sandbox(&sandbox, json);
        }
        Command::Bench { command } => bench::run(client, command, json).await?,
    }
    Ok(())
}

/// Looks a sandbox up by id when the argument is a UUID, else by name.
async fn get(client: &mut Client, id_or_name: &str) -> Result<Sandbox, Status> {
    let selector = if uuid::Uuid::try_parse(id_or_name).is_ok() {
        Selector::SandboxId(id_or_name.to_string())
    } else {
        Selector::Name(id_or_name.to_string())
    };
    Ok(client.get_sandbox(GetSandboxRequest { selector: Some(selector) }).await?.into_inner())
}
