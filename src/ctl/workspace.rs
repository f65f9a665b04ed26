//! `sandboxctl sync push|pull|status` and `sandboxctl files ls|cat|put`: a sandbox workspace
//! from the terminal.

use std::{io::Write, path::PathBuf, time::Duration};

use clap::Subcommand;
use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;

use super::{
    Connection,
    sandboxes::{id_of, proto_duration},
};
use crate::proto::{
    self, GetSyncStatusRequest, ListFilesRequest, PullWorkspaceRequest, PushWorkspaceRequest,
    ReadFileRequest, WriteFileHeader, WriteFileRequest, write_file_request::Content,
};

/// Bytes per WriteFile message.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Upload the workspace's new and changed files to the sandbox's object-store prefix.
    Push {
        sandbox: String,
        /// Only these workspace paths (files or directories).
        paths: Vec<String>,
        /// Also delete objects whose files are gone.
        #[arg(long)]
        delete: bool,
    },
    /// Download new and changed files from the prefix into the workspace.
    Pull {
        sandbox: String,
        paths: Vec<String>,
        /// Also delete workspace files the prefix does not have.
        #[arg(long)]
        delete: bool,
        /// Skip when the last sync is younger than this, e.g. `5m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_staleness: Option<Duration>,
    },
    /// The last push and pull.
    Status { sandbox: String },
}

#[derive(Subcommand)]
pub enum FilesCommand {
    /// List a workspace directory (recursively with -r).
    Ls {
        sandbox: String,
        #[arg(default_value = "")]
        path: String,
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Print a workspace file.
    Cat { sandbox: String, path: String },
    /// Write a local file (or standard input, with `-`) to a workspace path.
    Put { sandbox: String, local: PathBuf, path: String },
}

pub async fn sync(connection: &Connection, command: SyncCommand, json: bool) -> anyhow::Result<()> {
    let mut client = connection.sync();
    let control = &mut connection.control();
    let result = match command {
        SyncCommand::Push { sandbox, paths, delete } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let request = PushWorkspaceRequest { sandbox_id, paths, delete };
            client.push_workspace(request).await?.into_inner()
        }
        SyncCommand::Pull { sandbox, paths, delete, max_staleness } => {
            let max_staleness = max_staleness.map(proto_duration);
            let sandbox_id = id_of(control, &sandbox).await?;
            let request = PullWorkspaceRequest { sandbox_id, paths, delete, max_staleness };
            client.pull_workspace(request).await?.into_inner()
        }
        SyncCommand::Status { sandbox } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let status =
                client.get_sync_status(GetSyncStatusRequest { sandbox_id }).await?.into_inner();
            for (label, result) in [("push", status.last_push), ("pull", status.last_pull)] {
                match result {
                    Some(result) => print_result(label, &result, json),
                    None if !json => println!("last {label}: never"),
                    None => {}
                }
            }
            return Ok(());
        }
    };
    print_result("sync", &result, json);
    Ok(())
}

fn print_result(label: &str, result: &proto::SyncResult, json: bool) {
    if json {
        let seconds = result.duration.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
        let value = serde_json::json!({
            "kind": label,
            "files_scanned": result.files_scanned,
            "files_transferred": result.files_transferred,
            "files_deleted": result.files_deleted,
            "bytes_transferred": result.bytes_transferred,
            "duration_seconds": seconds,
            "skipped": result.skipped,
        });
        println!("{value}");
    } else if result.skipped {
        println!("{label}: skipped (the last sync is recent enough)");
    } else {
        println!(
            "{label}: {} files scanned, {} transferred ({} bytes), {} deleted",
            result.files_scanned,
            result.files_transferred,
            result.bytes_transferred,
            result.files_deleted
        );
    }
}

pub async fn files(
    connection: &Connection,
    command: FilesCommand,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = connection.sync();
    let control = &mut connection.control();
    match command {
        FilesCommand::Ls { sandbox, path, recursive } => {
            let sandbox = id_of(control, &sandbox).await?;
            let mut page_token = String::new();
            loop {
                let request = ListFilesRequest {
                    sandbox_id: sandbox.clone(),
                    path: path.clone(),
                    recursive,
                    page_size: 1000,
                    page_token,
                };
                let page = client.list_files(request).await?.into_inner();
                for file in &page.files {
                    if json {
                        let value = serde_json::json!({
                            "path": file.path, "size": file.size, "is_dir": file.is_dir,
                        });
                        println!("{value}");
                    } else {
                        let kind = if file.is_dir { "dir " } else { "file" };
                        println!("{kind} {:>12} {}", file.size, file.path);
                    }
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
        FilesCommand::Cat { sandbox, path } => {
            let sandbox = id_of(control, &sandbox).await?;
            let request = ReadFileRequest { sandbox_id: sandbox, path, offset: 0, limit: 0 };
            let mut stream = client.read_file(request).await?.into_inner();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                stdout.write_all(&chunk?.chunk)?;
            }
            stdout.flush()?;
            Ok(())
        }
        FilesCommand::Put { sandbox, local, path } => {
            let sandbox = id_of(control, &sandbox).await?;
            let mut content = Vec::new();
            if local.as_os_str() == "-" {
                tokio::io::stdin().read_to_end(&mut content).await?;
            } else {
                content = tokio::fs::read(&local).await?;
            }
            let header = WriteFileHeader { sandbox_id: sandbox, path };
            let mut messages = vec![WriteFileRequest { content: Some(Content::Header(header)) }];
            messages.extend(
                content.chunks(UPLOAD_CHUNK).map(|chunk| WriteFileRequest {
                    content: Some(Content::Chunk(chunk.to_vec())),
                }),
            );
            let written = client.write_file(tokio_stream::iter(messages)).await?.into_inner();
            println!("wrote {} bytes to {}", written.bytes_written, written.path);
            Ok(())
        }
    }
}
