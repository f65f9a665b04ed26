//! sandboxctl commands over `SandboxControl`.

use std::time::Duration;

use clap::Subcommand;
use futures::StreamExt;
use tonic::Status;

use super::{Client, Connection, output};
use crate::proto::{
    CreateSandboxRequest, DestroySandboxRequest, EnsureSandboxRequest, ExtendSandboxRequest,
    GetConnectionDetailsRequest, GetSandboxHealthRequest, GetSandboxRequest, GetSchemaStatsRequest,
    ListAuditEventsRequest, ListSandboxesRequest, ListTemplatesRequest, ReleaseSandboxRequest,
    Sandbox, SandboxState, WatchSandboxesRequest, extend_sandbox_request::Extension,
    get_sandbox_request::Selector,
};

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// List the templates the server knows.
    Templates,
    /// Create a sandbox from a template.
    Create {
        template: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        options: CreateOptions,
    },
    /// Get-or-create a sandbox by name; says whether it was created.
    Ensure {
        template: String,
        name: String,
        #[command(flatten)]
        options: CreateOptions,
    },
    /// Show a sandbox by id or name.
    Get { sandbox: String },
    /// List sandboxes, newest first.
    List {
        #[arg(long)]
        owner: Option<String>,
        /// Only these states (e.g. running, destroyed); repeatable.
        #[arg(long = "state", value_parser = parse_state)]
        states: Vec<SandboxState>,
        #[arg(long)]
        template: Option<String>,
        /// Label selector key=value; repeatable; all must match.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Stop after this many sandboxes (all pages are fetched until then).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Extend a sandbox's lifetime by a duration (capped at the template maximum).
    Extend {
        sandbox: String,
        #[arg(value_parser = humantime::parse_duration)]
        by: Duration,
    },
    /// Destroy a sandbox by id or name (idempotent).
    Destroy {
        sandbox: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Hand a sandbox claimed from a warm pool back to it, by id or name: reset and READY (you
    /// no longer see it afterwards), or destroyed when it cannot go back (pool full, unhealthy).
    Release {
        sandbox: String,
        /// Only if the sandbox still has this etag (else ABORTED, ETAG_MISMATCH).
        #[arg(long)]
        etag: Option<String>,
    },
    /// Run the sandbox's health checks.
    Health { sandbox: String },
    /// Connection details (schema, search_path, prefixes) and the env vars a worker needs.
    Conn { sandbox: String },
    /// Tables of the sandbox schema with exact row counts.
    Stats { sandbox: String },
    /// The audit trail of a sandbox, or of the whole tenant without one; newest first.
    Audit {
        sandbox: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Stream lifecycle events until interrupted; `--resume TOKEN` continues a previous watch.
    Watch {
        #[arg(long)]
        sandbox: Option<String>,
        #[arg(long)]
        resume: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct CreateOptions {
    /// Label as key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Lifetime, e.g. 2h or 30m (default: the template's).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Idempotency key: retrying with the same id returns the same sandbox.
    #[arg(long)]
    request_id: Option<String>,
    /// Start the workspace from this earlier sandbox's pushed workspace.
    #[arg(long)]
    init_from_store: Option<String>,
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("label {value:?} is not key=value"))
}

fn parse_state(value: &str) -> Result<SandboxState, String> {
    let name = format!("SANDBOX_STATE_{}", value.to_ascii_uppercase());
    SandboxState::from_str_name(&name)
        .filter(|state| *state != SandboxState::Unspecified)
        .ok_or_else(|| format!("unknown state {value:?}"))
}

pub(crate) fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

fn create_request(
    template: String,
    name: Option<String>,
    options: CreateOptions,
) -> CreateSandboxRequest {
    CreateSandboxRequest {
        template,
        name: name.unwrap_or_default(),
        labels: options.labels.into_iter().collect(),
        ttl: options.ttl.map(proto_duration),
        request_id: options.request_id.unwrap_or_default(),
        metadata: None,
        init_from_store: options.init_from_store.unwrap_or_default(),
    }
}

pub async fn run(
    connection: &Connection,
    command: SandboxCommand,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = connection.control();
    match command {
        SandboxCommand::Templates => {
            let templates =
                client.list_templates(ListTemplatesRequest {}).await?.into_inner().templates;
            output::templates(&templates, json);
        }
        SandboxCommand::Create { template, name, options } => {
            let sandbox =
                client.create_sandbox(create_request(template, name, options)).await?.into_inner();
            output::sandbox(&sandbox, json);
        }
        SandboxCommand::Ensure { template, name, options } => {
            let create = create_request(template, Some(name), options);
            let request = EnsureSandboxRequest {
                template: create.template,
                name: create.name,
                labels: create.labels,
                metadata: create.metadata,
                ttl: create.ttl,
                request_id: create.request_id,
                init_from_store: create.init_from_store,
            };
            let response = client.ensure_sandbox(request).await?.into_inner();
            if !json {
                println!("{}", if response.created { "created" } else { "already existed" });
            }
            output::sandbox(&response.sandbox.unwrap_or_default(), json);
        }
        SandboxCommand::Get { sandbox } => {
            output::sandbox(&get(&mut client, &sandbox).await?, json)
        }
        SandboxCommand::List { owner, states, template, labels, limit } => {
            let mut request = ListSandboxesRequest {
                page_size: limit.min(1000) as i32,
                owner: owner.unwrap_or_default(),
                states: states.into_iter().map(i32::from).collect(),
                template: template.unwrap_or_default(),
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let mut all = Vec::new();
            loop {
                let page = client.list_sandboxes(request.clone()).await?.into_inner();
                all.extend(page.sandboxes);
                if page.next_page_token.is_empty() || all.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            all.truncate(limit);
            output::sandbox_table(&all, json);
        }
        SandboxCommand::Extend { sandbox, by } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let request = ExtendSandboxRequest {
                sandbox_id,
                extension: Some(Extension::TtlExtension(proto_duration(by))),
                etag: String::new(),
            };
            let response = client.extend_sandbox(request).await?.into_inner();
            if response.capped && !json {
                println!("capped at the template's maximum lifetime");
            }
            output::sandbox(&response.sandbox.unwrap_or_default(), json);
        }
        SandboxCommand::Destroy { sandbox, reason } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let request = DestroySandboxRequest { sandbox_id, reason, ..Default::default() };
            output::sandbox(&client.destroy_sandbox(request).await?.into_inner(), json);
        }
        SandboxCommand::Release { sandbox, etag } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let request = ReleaseSandboxRequest { sandbox_id, etag: etag.unwrap_or_default() };
            let released = client.release_sandbox(request).await?.into_inner();
            if !json {
                match released.state() {
                    SandboxState::Ready => {
                        println!("released to the pool (it is no longer visible to you)")
                    }
                    _ => println!("destroyed instead of pooled: {}", released.destroy_reason),
                }
            }
            output::sandbox(&released, json);
        }
        SandboxCommand::Health { sandbox } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let report = client
                .get_sandbox_health(GetSandboxHealthRequest { sandbox_id })
                .await?
                .into_inner();
            output::health(&report, json);
        }
        SandboxCommand::Conn { sandbox } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let details = client
                .get_connection_details(GetConnectionDetailsRequest { sandbox_id })
                .await?
                .into_inner();
            output::connection(&details, json);
        }
        SandboxCommand::Stats { sandbox } => {
            let sandbox_id = get(&mut client, &sandbox).await?.sandbox_id;
            let stats =
                client.get_schema_stats(GetSchemaStatsRequest { sandbox_id }).await?.into_inner();
            output::stats(&stats, json);
        }
        SandboxCommand::Audit { sandbox, limit } => {
            let sandbox_id = match sandbox {
                Some(sandbox) => get(&mut client, &sandbox).await?.sandbox_id,
                None => String::new(),
            };
            let request = ListAuditEventsRequest {
                sandbox_id,
                page_size: limit.min(1000) as i32,
                ..Default::default()
            };
            let events = client.list_audit_events(request).await?.into_inner().audit_events;
            output::audit(&events, json);
        }
        SandboxCommand::Watch { sandbox, resume } => {
            let sandbox_id = match sandbox {
                Some(sandbox) => get(&mut client, &sandbox).await?.sandbox_id,
                None => String::new(),
            };
            let request = WatchSandboxesRequest {
                resume_token: resume.unwrap_or_default(),
                sandbox_id,
                owner: String::new(),
            };
            let mut stream = client.watch_sandboxes(request).await?.into_inner();
            // The server has fixed the start position once the call is answered.
            eprintln!("watching sandbox events (Ctrl-C stops)");
            while let Some(response) = stream.next().await {
                output::watch_event(&response?, json);
            }
        }
    }
    Ok(())
}

/// Looks a sandbox up by id when the argument is a UUID, else by name.
pub(crate) async fn get(client: &mut Client, id_or_name: &str) -> Result<Sandbox, Status> {
    let selector = if uuid::Uuid::try_parse(id_or_name).is_ok() {
        Selector::SandboxId(id_or_name.to_string())
    } else {
        Selector::Name(id_or_name.to_string())
    };
    Ok(client.get_sandbox(GetSandboxRequest { selector: Some(selector) }).await?.into_inner())
}

/// The id of a sandbox named by id or name (a UUID is taken as it is, without a call).
pub(crate) async fn id_of(client: &mut Client, id_or_name: &str) -> Result<String, Status> {
    if uuid::Uuid::try_parse(id_or_name).is_ok() {
        return Ok(id_or_name.to_string());
    }
    Ok(get(client, id_or_name).await?.sandbox_id)
}
