//! A tower layer on the gRPC server: metadata over the configured size is refused with
//! `RESOURCE_EXHAUSTED`, and tonic's message-size refusals get the same code and details.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use crate::{
    error::Error,
    metrics::{Metrics, RpcMethod},
};

/// The HTTP/2 header-list limit the server advertises: requests between
/// `server.max_metadata_bytes` and this reach [`WireLimits`] and get a gRPC answer; larger
/// header blocks are refused by the HTTP/2 layer itself (a stream reset, or for a header block
/// HTTP/2 cannot even buffer, the connection).
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 1024 * 1024;

/// Builds [`WireLimits`] around the server's routes. It also records every RPC's status and
/// duration in `metrics`, since it is where every status passes.
#[derive(Clone)]
pub struct WireLimitsLayer {
    pub max_metadata_bytes: usize,
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for WireLimitsLayer {
    type Service = WireLimits<S>;

    fn layer(&self, inner: S) -> WireLimits<S> {
        WireLimits {
            inner,
            max_metadata_bytes: self.max_metadata_bytes,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WireLimits<S> {
    inner: S,
    max_metadata_bytes: usize,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for WireLimits<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut recorder = Recorder {
            metrics: self.metrics.clone(),
            method: self.metrics.method_of(request.uri().path()),
            started: Instant::now(),
            done: false,
        };
        let size = metadata_bytes(request.headers());
        if size > self.max_metadata_bytes {
            let error = Error::TooLarge {
                reason: "METADATA_TOO_LARGE",
                message: format!(
                    "request metadata is {size} bytes; the limit is {} bytes",
                    self.max_metadata_bytes
                ),
            };
            let response: http::Response<Body> = Status::from(error).into_http();
            recorder.finish(response.headers());
            return Box::pin(std::future::ready(Ok(response)));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            rewrite_size_refusal(&mut parts.headers);
            // A trailers-only response carries its status in the headers; a stream in its
            // trailers.
            recorder.finish(&parts.headers);
            let body = Body::new(TrailerRewrite { inner: body, recorder });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The size of the request's headers as HTTP/2 counts them (name + value + 32 per entry).
fn metadata_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum()
}

/// Replaces tonic's `OUT_OF_RANGE` "message length too large" status (in trailers-only
/// headers or in trailers) with `RESOURCE_EXHAUSTED` and our details.
fn rewrite_size_refusal(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else { return };
    let tonic_refusal = status.code() == Code::OutOfRange
        && status.details().is_empty()
        && status.message().starts_with("Error, ")
        && status.message().contains("message length too large");
    if !tonic_refusal {
        return;
    }
    let error = Error::TooLarge {
        reason: "MESSAGE_TOO_LARGE",
        message: status.message().trim_start_matches("Error, ").to_string(),
    };
    for name in [Status::GRPC_STATUS, Status::GRPC_MESSAGE, Status::GRPC_STATUS_DETAILS] {
        headers.remove(name);
    }
    if let Err(error) = Status::from(error).add_header(headers) {
        tracing::warn!(%error, "could not rewrite a message-size refusal");
    }
}

/// Records an RPC's status once: from the headers or trailers that carry it, or as
/// `CANCELLED` when the response is dropped before any did (the client went away).
struct Recorder {
    metrics: Arc<Metrics>,
    method: RpcMethod,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, headers: &HeaderMap) {
        if self.done {
            return;
        }
        if let Some(status) = headers.get(Status::GRPC_STATUS) {
            let code = tonic::Code::from_bytes(status.as_bytes());
            self.metrics.record_rpc(&self.method, code, self.started.elapsed());
            self.done = true;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record_rpc(&self.method, Code::Cancelled, self.started.elapsed());
        }
    }
}

/// A response body whose trailers pass through [`rewrite_size_refusal`] and the recorder.
struct TrailerRewrite {
    inner: Body,
    recorder: Recorder,
}

impl HttpBody for TrailerRewrite {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rewrite_size_refusal(&mut trailers);
                        this.recorder.finish(&trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
