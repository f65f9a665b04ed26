//! Workspace file tools: list, read, write.

use base64::Engine;
use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    SandboxdMcp,
    convert::{sandbox_id, time},
    errors::{ToolError, cancellable},
};
use crate::proto::{
    ListFilesRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest,
    write_file_request::Content,
};

/// Default and largest `limit` of file_read.
const READ_DEFAULT: u64 = 256 * 1024;
const READ_MAX: u64 = 1024 * 1024;
/// Bytes per WriteFile message.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// Directory relative to the workspace root (default: the root).
    #[serde(default)]
    path: Option<String>,
    /// List everything below `path`, not only its direct children.
    #[serde(default)]
    recursive: bool,
    /// At most this many entries (default 200, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_page_token` of a previous call, for the next page.
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FileEntry {
    /// Path relative to the workspace root.
    path: String,
    is_dir: bool,
    is_symlink: bool,
    size: i64,
    /// Unix permission bits, e.g. 420 (0o644).
    mode: u32,
    modify_time: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListResult {
    /// Ordered by path.
    files: Vec<FileEntry>,
    /// Pass as `page_token` for more; empty on the last page.
    next_page_token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// File path relative to the workspace root.
    path: String,
    /// Byte offset to start at (default 0).
    #[serde(default)]
    offset: u64,
    /// At most this many bytes (default 262144, at most 1048576).
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReadResult {
    path: String,
    /// The bytes read: text when `encoding` is "utf-8", else base64.
    content: String,
    /// "utf-8", or "base64" when the bytes are not valid UTF-8.
    encoding: String,
    offset: u64,
    bytes_read: u64,
    /// The file's size when the read started.
    file_size: u64,
    /// True when the file goes on after what was read (read again from offset + bytes_read).
    more: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteArgs {
    /// The sandbox's id or name.
    sandbox: String,
    /// File path relative to the workspace root; missing directories are created and an
    /// existing file is replaced atomically.
    path: String,
    /// The whole new content.
    content: String,
    /// "utf-8" (default) or "base64" for binary content.
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WriteResult {
    path: String,
    bytes_written: i64,
}

#[tool_router(router = file_tools, vis = "pub(super)")]
impl SandboxdMcp {
    #[tool(description = "List files and directories in a sandbox's workspace (one directory, \
        or everything below it with recursive: true).")]
    async fn file_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ListResult>, ToolError> {
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request = ListFilesRequest {
            sandbox_id,
            path: args.path.unwrap_or_default(),
            recursive: args.recursive,
            page_size: i32::try_from(args.limit.unwrap_or(200).min(1000)).unwrap_or(200),
            page_token: args.page_token.unwrap_or_default(),
        };
        let page = cancellable(&cancel, self.sync().list_files(request))
            .await
            .map_err(|e| e.with_alias("sandbox_id", "sandbox").with_alias("page_size", "limit"))?
            .into_inner();
        let files = page
            .files
            .into_iter()
            .map(|file| FileEntry {
                modify_time: time(&file.modify_time),
                path: file.path,
                is_dir: file.is_dir,
                is_symlink: file.is_symlink,
                size: file.size,
                mode: file.mode,
            })
            .collect();
        Ok(Json(ListResult { files, next_page_token: page.next_page_token }))
    }

    #[tool(description = "Read a file from a sandbox's workspace (up to 1 MiB per call; use \
        offset for more). Text comes back as is, binary content as base64.")]
    async fn file_read(
        &self,
        Parameters(args): Parameters<ReadArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<ReadResult>, ToolError> {
        let limit = args.limit.unwrap_or(READ_DEFAULT);
        if limit == 0 || limit > READ_MAX {
            return Err(ToolError::invalid("limit", format!("must be 1..={READ_MAX} bytes")));
        }
        let offset =
            i64::try_from(args.offset).map_err(|_| ToolError::invalid("offset", "is too large"))?;
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let request =
            ReadFileRequest { sandbox_id, path: args.path.clone(), offset, limit: limit as i64 };
        let read = async {
            let mut stream = self.sync().read_file(request).await?.into_inner();
            let (mut content, mut file_size) = (Vec::new(), 0);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                file_size = chunk.file_size;
                content.extend_from_slice(&chunk.chunk);
            }
            Ok((content, file_size))
        };
        let (content, file_size) =
            cancellable(&cancel, read).await.map_err(|e| e.with_alias("sandbox_id", "sandbox"))?;
        let bytes_read = content.len() as u64;
        let file_size = u64::try_from(file_size).unwrap_or(0);
        let (content, encoding) = match String::from_utf8(content) {
            Ok(text) => (text, "utf-8"),
            Err(error) => {
                (base64::engine::general_purpose::STANDARD.encode(error.into_bytes()), "base64")
            }
        };
        Ok(Json(ReadResult {
            path: args.path,
            content,
            encoding: encoding.into(),
            offset: args.offset,
            bytes_read,
            file_size,
            more: args.offset + bytes_read < file_size,
        }))
    }

    #[tool(description = "Write a file in a sandbox's workspace, replacing it atomically if it \
        exists and creating missing directories. Content is text, or base64 with encoding: \
        \"base64\".")]
    async fn file_write(
        &self,
        Parameters(args): Parameters<WriteArgs>,
        cancel: CancellationToken,
    ) -> Result<Json<WriteResult>, ToolError> {
        let content = match args.encoding.as_deref().unwrap_or("utf-8") {
            "utf-8" | "utf8" | "text" => args.content.into_bytes(),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(args.content.trim())
                .map_err(|e| ToolError::invalid("content", format!("is not valid base64: {e}")))?,
            other => {
                return Err(ToolError::invalid(
                    "encoding",
                    format!("{other:?} is not \"utf-8\" or \"base64\""),
                ));
            }
        };
        let sandbox_id = sandbox_id(&mut self.control(), &cancel, &args.sandbox).await?;
        let header = WriteFileHeader { sandbox_id, path: args.path };
        let mut messages = vec![WriteFileRequest { content: Some(Content::Header(header)) }];
        messages.extend(
            content
                .chunks(UPLOAD_CHUNK)
                .map(|chunk| WriteFileRequest { content: Some(Content::Chunk(chunk.to_vec())) }),
        );
        let written = cancellable(&cancel, self.sync().write_file(tokio_stream::iter(messages)))
            .await
            .map_err(|e| {
                e.with_alias("header.sandbox_id", "sandbox").with_alias("header.path", "path")
            })?
            .into_inner();
        Ok(Json(WriteResult { path: written.path, bytes_written: written.bytes_written }))
    }
}
