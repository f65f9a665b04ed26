//! `sandboxctl artifact publish|ls|get|cat|approve|reject`: artifacts and their review from the
//! terminal.

use std::{io::Write, path::PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;

use super::{Connection, output::time, sandboxes::id_of};
use crate::proto::{
    self, Artifact, ArtifactType, GetArtifactRequest, ListArtifactsRequest, PublishArtifactHeader,
    PublishArtifactRequest, ReadArtifactRequest, ReviewArtifactRequest, ReviewDecision,
    ReviewState, artifact_service_client::ArtifactServiceClient, publish_artifact_request::Content,
};

/// Bytes per PublishArtifact message.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    File,
    Diff,
    Log,
    Image,
    Text,
    Other,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StateArg {
    Pending,
    Approved,
    Rejected,
}

#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// Publish a local file (or standard input, with `-`) from a sandbox for review.
    Publish {
        sandbox: String,
        /// The file to publish; `-` reads standard input.
        local: PathBuf,
        #[arg(long = "type", value_enum, default_value = "file")]
        kind: KindArg,
        #[arg(long)]
        title: String,
        /// Media type [default: by type].
        #[arg(long, default_value = "")]
        content_type: String,
        #[arg(long, default_value = "")]
        conversation: String,
        /// The workspace path the content came from (recorded only).
        #[arg(long, default_value = "")]
        sandbox_path: String,
        /// Idempotency key: publishing again with it returns the first artifact.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List artifacts, newest first.
    Ls {
        /// Only this sandbox's (id or name).
        #[arg(long)]
        sandbox: Option<String>,
        #[arg(long, default_value = "")]
        conversation: String,
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// Show an artifact's record.
    Get { artifact: String },
    /// Write an artifact's bytes to standard output.
    Cat { artifact: String },
    /// Approve a pending artifact.
    Approve(ReviewArgs),
    /// Reject a pending artifact.
    Reject(ReviewArgs),
}

/// What `approve` and `reject` take.
#[derive(Args)]
pub struct ReviewArgs {
    artifact: String,
    #[arg(long, default_value = "")]
    comment: String,
    /// Fail if the artifact changed since this etag was read.
    #[arg(long, default_value = "")]
    etag: String,
}

pub async fn run(
    connection: &Connection,
    command: ArtifactCommand,
    json: bool,
) -> anyhow::Result<()> {
    let mut client =
        ArtifactServiceClient::with_interceptor(connection.channel(), connection.bearer());
    match command {
        ArtifactCommand::Publish {
            sandbox,
            local,
            kind,
            title,
            content_type,
            conversation,
            sandbox_path,
            request_id,
        } => {
            let sandbox_id = id_of(&mut connection.control(), &sandbox).await?;
            let mut content = Vec::new();
            if local.as_os_str() == "-" {
                tokio::io::stdin().read_to_end(&mut content).await?;
            } else {
                content = tokio::fs::read(&local).await?;
            }
            let header = PublishArtifactHeader {
                sandbox_id,
                conversation_id: conversation,
                r#type: wire_type(kind).into(),
                title,
                content_type,
                sandbox_path,
                request_id,
            };
            let messages = publish_messages(header, &content);
            let artifact = client.publish_artifact(tokio_stream::iter(messages)).await?;
            print_artifact(&artifact.into_inner(), json);
        }
        ArtifactCommand::Ls { sandbox, conversation, state } => {
            let sandbox_id = match sandbox {
                Some(sandbox) => id_of(&mut connection.control(), &sandbox).await?,
                None => String::new(),
            };
            let review_state = state.map_or(ReviewState::Unspecified, wire_state);
            let mut page_token = String::new();
            if !json {
                println!(
                    "{:<36}  {:<8}  {:<6}  {:>10}  {:<20}  TITLE",
                    "ARTIFACT", "STATE", "TYPE", "BYTES", "CREATED"
                );
            }
            loop {
                let request = ListArtifactsRequest {
                    sandbox_id: sandbox_id.clone(),
                    conversation_id: conversation.clone(),
                    review_state: review_state.into(),
                    page_size: 200,
                    page_token,
                };
                let page = client.list_artifacts(request).await?.into_inner();
                for artifact in &page.artifacts {
                    if json {
                        println!("{}", artifact_json(artifact));
                    } else {
                        println!(
                            "{:<36}  {:<8}  {:<6}  {:>10}  {:<20}  {}",
                            artifact.artifact_id,
                            state_name(artifact.review_state()),
                            type_name(artifact.r#type()),
                            artifact.size_bytes,
                            time(&artifact.create_time),
                            artifact.title
                        );
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        ArtifactCommand::Get { artifact } => {
            let request = GetArtifactRequest { artifact_id: artifact };
            print_artifact(&client.get_artifact(request).await?.into_inner(), json);
        }
        ArtifactCommand::Cat { artifact } => {
            let request = ReadArtifactRequest { artifact_id: artifact };
            let mut stream = client.read_artifact(request).await?.into_inner();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                stdout.write_all(&chunk?.chunk)?;
            }
            stdout.flush()?;
        }
        ArtifactCommand::Approve(review) => {
            let request = review.request(ReviewDecision::Approve);
            print_artifact(&client.review_artifact(request).await?.into_inner(), json);
        }
        ArtifactCommand::Reject(review) => {
            let request = review.request(ReviewDecision::Reject);
            print_artifact(&client.review_artifact(request).await?.into_inner(), json);
        }
    }
    Ok(())
}

impl ReviewArgs {
    fn request(self, decision: ReviewDecision) -> ReviewArtifactRequest {
        ReviewArtifactRequest {
            artifact_id: self.artifact,
            decision: decision.into(),
            comment: self.comment,
            etag: self.etag,
        }
    }
}

/// The `PublishArtifact` stream for `content`: the header, then the content in chunks.
pub(crate) fn publish_messages(
    header: PublishArtifactHeader,
    content: &[u8],
) -> Vec<PublishArtifactRequest> {
    let mut messages = vec![PublishArtifactRequest { content: Some(Content::Header(header)) }];
    messages.extend(
        content
            .chunks(UPLOAD_CHUNK)
            .map(|chunk| PublishArtifactRequest { content: Some(Content::Chunk(chunk.to_vec())) }),
    );
    messages
}

/// The artifact type a name (`file`, `diff`, ... as `--type` takes it, any case) stands for.
pub(crate) fn parse_type(name: &str) -> Option<ArtifactType> {
    KindArg::from_str(name.trim(), true).ok().map(wire_type)
}

/// The review state a name (`pending`, `approved`, `rejected`, any case) stands for.
pub(crate) fn parse_state(name: &str) -> Option<ReviewState> {
    StateArg::from_str(name.trim(), true).ok().map(wire_state)
}

fn wire_type(kind: KindArg) -> ArtifactType {
    match kind {
        KindArg::File => ArtifactType::File,
        KindArg::Diff => ArtifactType::Diff,
        KindArg::Log => ArtifactType::Log,
        KindArg::Image => ArtifactType::Image,
        KindArg::Text => ArtifactType::Text,
        KindArg::Other => ArtifactType::Other,
    }
}

fn wire_state(state: StateArg) -> ReviewState {
    match state {
        StateArg::Pending => ReviewState::Pending,
        StateArg::Approved => ReviewState::Approved,
        StateArg::Rejected => ReviewState::Rejected,
    }
}

pub(crate) fn type_name(kind: ArtifactType) -> &'static str {
    match kind {
        ArtifactType::Unspecified => "?",
        ArtifactType::File => "file",
        ArtifactType::Diff => "diff",
        ArtifactType::Log => "log",
        ArtifactType::Image => "image",
        ArtifactType::Text => "text",
        ArtifactType::Other => "other",
    }
}

pub(crate) fn state_name(state: ReviewState) -> &'static str {
    match state {
        ReviewState::Unspecified => "?",
        ReviewState::Pending => "PENDING",
        ReviewState::Approved => "APPROVED",
        ReviewState::Rejected => "REJECTED",
    }
}

fn artifact_json(artifact: &Artifact) -> Value {
    json!({
        "artifact_id": artifact.artifact_id,
        "sandbox_id": artifact.sandbox_id,
        "tenant": artifact.tenant,
        "conversation_id": artifact.conversation_id,
        "type": type_name(artifact.r#type()),
        "title": artifact.title,
        "content_type": artifact.content_type,
        "sandbox_path": artifact.sandbox_path,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "preview": artifact.preview,
        "publisher": artifact.publisher,
        "review_state": state_name(artifact.review_state()),
        "reviewer": artifact.reviewer,
        "review_comment": artifact.review_comment,
        "review_time": time(&artifact.review_time),
        "create_time": time(&artifact.create_time),
        "expire_time": time(&artifact.expire_time),
        "etag": artifact.etag,
    })
}

fn print_artifact(artifact: &proto::Artifact, json: bool) {
    if json {
        println!("{}", artifact_json(artifact));
        return;
    }
    let rows = [
        ("artifact", artifact.artifact_id.clone()),
        ("sandbox", artifact.sandbox_id.clone()),
        ("type", type_name(artifact.r#type()).to_string()),
        ("title", artifact.title.clone()),
        ("content type", artifact.content_type.clone()),
        ("size", format!("{} bytes", artifact.size_bytes)),
        ("sha256", artifact.sha256.clone()),
        ("publisher", artifact.publisher.clone()),
        ("conversation", artifact.conversation_id.clone()),
        ("state", state_name(artifact.review_state()).to_string()),
        ("reviewer", artifact.reviewer.clone()),
        ("comment", artifact.review_comment.clone()),
        ("reviewed", time(&artifact.review_time)),
        ("created", time(&artifact.create_time)),
        ("expires", time(&artifact.expire_time)),
        ("etag", artifact.etag.clone()),
    ];
    for (label, value) in rows {
        if !value.is_empty() {
            println!("{label:<13} {value}");
        }
    }
}
