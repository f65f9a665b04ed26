//! The file half of `SyncService`: ListFiles, ReadFile and WriteFile on a sandbox workspace.
//! Parsing here; confinement and atomicity in `workspace::files`.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, requests};
use crate::{
    app::App,
    error::Error,
    proto,
    workspace::files::{FileEntry, FileKind, ListQuery, ReadRange, RelPath},
};

pub async fn list(
    app: &App,
    request: Request<proto::ListFilesRequest>,
) -> Result<Response<proto::ListFilesResponse>, Status> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let query =
        ListQuery::parse(&request.path, request.recursive, request.page_size, &request.page_token)?;
    let workspace = app.sandboxes.workspace(&principal, id).await?;
    let page = workspace.list(query).await?;
    Ok(Response::new(proto::ListFilesResponse {
        files: page.files.into_iter().map(file_info).collect(),
        next_page_token: page.next_page_token,
    }))
}

fn file_info(entry: FileEntry) -> proto::FileInfo {
    proto::FileInfo {
        is_dir: entry.is_dir(),
        mode: entry.mode,
        is_symlink: entry.kind == FileKind::Symlink,
        size: if entry.is_dir() { 0 } else { i64::try_from(entry.size).unwrap_or(i64::MAX) },
        modify_time: Some(prost_types::Timestamp::from(entry.modify_time)),
        path: entry.path,
    }
}

pub async fn read(
    app: &App,
    request: Request<proto::ReadFileRequest>,
) -> Result<Response<ResponseStream<proto::ReadFileResponse>>, Status> {
    let principal = app.principal(&request).await?;
    let request = request.into_inner();
    let id = requests::sandbox_id(&request.sandbox_id)?;
    let path = RelPath::parse_file("path", &request.path)?;
    let range = ReadRange::parse(request.offset, request.limit)?;
    let workspace = app.sandboxes.workspace(&principal, id).await?;
    let read = workspace.read(&path, range).await?;
    let file_size = i64::try_from(read.file_size).unwrap_or(i64::MAX);
    let chunks = read.chunks.map(move |chunk| {
        chunk
            .map(|chunk| proto::ReadFileResponse {
                chunk: chunk.data,
                offset: i64::try_from(chunk.offset).unwrap_or(i64::MAX),
                file_size,
            })
            .map_err(Status::from)
    });
    Ok(Response::new(Box::pin(chunks)))
}

/// The header, then the chunks; the file is replaced only when the stream ends cleanly (an
/// early return or a cancelled stream drops the writer, which removes its temp file; a
/// cancelled call is told from a clean end by `wire::client_streams::confirm_end`).
pub async fn write(
    app: &App,
    request: Request<Streaming<proto::WriteFileRequest>>,
) -> Result<Response<proto::WriteFileResponse>, Status> {
    use proto::write_file_request::Content;
    let principal = app.principal(&request).await?;
    let mut stream = request.into_inner();
    let header = match stream.message().await?.and_then(|message| message.content) {
        Some(Content::Header(header)) => header,
        _ => return Err(Error::invalid("header", "the first message must be the header").into()),
    };
    let id = crate::sandbox::SandboxId::parse("header.sandbox_id", &header.sandbox_id)?;
    let path = RelPath::parse_file("header.path", &header.path)?;
    let workspace = app.sandboxes.workspace(&principal, id).await?;
    let mut writer = workspace.write(&path).await?;
    while let Some(message) = stream.message().await? {
        match message.content {
            Some(Content::Chunk(chunk)) => writer.write_chunk(chunk).await?,
            Some(Content::Header(_)) => {
                return Err(
                    Error::invalid("header", "only the first message may be a header").into()
                );
            }
            None => {}
        }
    }
    crate::wire::client_streams::confirm_end().await;
    let written = writer.finish().await?;
    Ok(Response::new(proto::WriteFileResponse {
        path: written.path.to_string(),
        bytes_written: i64::try_from(written.bytes_written).unwrap_or(i64::MAX),
    }))
}
