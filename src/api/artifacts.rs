//! `sandboxd.v1.ArtifactService`.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, artifact_convert, artifact_requests};
use crate::{
    app::App,
    artifacts::Artifact,
    error::{Error, Result},
    proto::{self, artifact_service_server::ArtifactService, publish_artifact_request::Content},
};

pub struct ArtifactServiceApi {
    app: Arc<App>,
}

impl ArtifactServiceApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn encode(&self, artifact: Artifact) -> proto::Artifact {
        let expire_time = self.app.artifacts.expire_time(&artifact);
        artifact_convert::artifact(artifact, expire_time)
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The content chunks after the header; a second header is INVALID_ARGUMENT. The end is
/// reported once it is known not to be a cancelled call's (`wire::client_streams`).
fn chunks(
    stream: Streaming<proto::PublishArtifactRequest>,
) -> impl futures::Stream<Item = Result<Vec<u8>>> + Send {
    let chunks = stream.map(|message| match message {
        Ok(proto::PublishArtifactRequest { content: Some(Content::Chunk(chunk)) }) => Ok(chunk),
        Ok(proto::PublishArtifactRequest { content: Some(Content::Header(_)) }) => {
            Err(Error::invalid("header", "must be sent once, in the first message only"))
        }
        Ok(proto::PublishArtifactRequest { content: None }) => Ok(Vec::new()),
        Err(status) => Err(Error::Aborted {
            reason: "PUBLISH_STREAM_FAILED",
            message: format!("the publish stream failed: {}", status.message()),
        }),
    });
    crate::wire::client_streams::confirmed(chunks)
}

#[tonic::async_trait]
impl ArtifactService for ArtifactServiceApi {
    async fn publish_artifact(
        &self,
        request: Request<Streaming<proto::PublishArtifactRequest>>,
    ) -> Reply<proto::Artifact> {
        let principal = self.app.principal(&request).await?;
        let mut stream = request.into_inner();
        let first = stream.message().await.map_err(|status| Error::Aborted {
            reason: "PUBLISH_STREAM_FAILED",
            message: format!("the publish stream failed: {}", status.message()),
        })?;
        let header = match first.and_then(|message| message.content) {
            Some(Content::Header(header)) => header,
            _ => {
                return Err(Error::invalid("header", "the first message must be the header").into());
            }
        };
        let spec = artifact_requests::header(header)?;
        let artifact = self.app.artifacts.publish(&principal, spec, chunks(stream)).await?;
        Ok(Response::new(self.encode(artifact)))
    }

    async fn get_artifact(
        &self,
        request: Request<proto::GetArtifactRequest>,
    ) -> Reply<proto::Artifact> {
        let principal = self.app.principal(&request).await?;
        let id = artifact_requests::artifact_id(&request.get_ref().artifact_id)?;
        let artifact = self.app.artifacts.get(&principal, id).await?;
        Ok(Response::new(self.encode(artifact)))
    }

    async fn list_artifacts(
        &self,
        request: Request<proto::ListArtifactsRequest>,
    ) -> Reply<proto::ListArtifactsResponse> {
        let principal = self.app.principal(&request).await?;
        let list = artifact_requests::list(request.into_inner())?;
        let page = self
            .app
            .artifacts
            .list(&principal, list.filter, list.page_size, &list.page_token)
            .await?;
        let (artifacts, next_page_token) = page.encode_within(
            self.app.page_budget(),
            |artifact| self.encode(artifact),
            prost::Message::encoded_len,
        );
        Ok(Response::new(proto::ListArtifactsResponse {
            artifacts,
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    type ReadArtifactStream = ResponseStream<proto::ReadArtifactResponse>;

    async fn read_artifact(
        &self,
        request: Request<proto::ReadArtifactRequest>,
    ) -> Reply<Self::ReadArtifactStream> {
        let principal = self.app.principal(&request).await?;
        let id = artifact_requests::artifact_id(&request.get_ref().artifact_id)?;
        let content = self.app.artifacts.read(&principal, id).await?;
        let stream = content.map(|chunk| match chunk {
            Ok(chunk) => Ok(proto::ReadArtifactResponse {
                chunk: chunk.bytes,
                offset: chunk.offset,
                size_bytes: chunk.size_bytes,
            }),
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn review_artifact(
        &self,
        request: Request<proto::ReviewArtifactRequest>,
    ) -> Reply<proto::Artifact> {
        let principal = self.app.principal(&request).await?;
        let spec = artifact_requests::review(request.into_inner())?;
        let artifact = self.app.artifacts.review(&principal, spec).await?;
        Ok(Response::new(self.encode(artifact)))
    }

    type WatchArtifactsStream = ResponseStream<proto::WatchArtifactsResponse>;

    async fn watch_artifacts(
        &self,
        request: Request<proto::WatchArtifactsRequest>,
    ) -> Reply<Self::WatchArtifactsStream> {
        let principal = self.app.principal(&request).await?;
        let spec = artifact_requests::watch(request.into_inner())?;
        let events = self.app.artifacts.watch(principal, spec).await?;
        let service = self.app.artifacts.clone();
        let stream = events.map(move |item| match item {
            Ok(event) => {
                let expire_time = service.expire_time(&event.artifact);
                Ok(artifact_convert::event(event, expire_time))
            }
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
