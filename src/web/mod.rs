//! The dashboard listener: the web app embedded in the binary at `/ui` (`assets`), and every
//! other path to the same gRPC services as the main listener, translated from gRPC-Web by
//! `tonic_web`. Requests for the app never reach the gRPC layers; gRPC-Web requests get the
//! same limits, deadlines, spans and metrics as on the main port (`crate::server` builds both).

pub mod assets;

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Empty, Full};
use hyper::body::Bytes;
use tonic::body::Body;
use tower::{Layer, Service};

pub use assets::{MOUNT, web_app_built};

/// The page may load only its own scripts, styles and images (and images it made from artifact
/// bytes, as `blob:` URLs), talk only to its own origin, and never be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Puts the web app in front of the gRPC-Web services.
#[derive(Debug, Clone, Copy, Default)]
pub struct DashboardLayer;

impl<S> Layer<S> for DashboardLayer {
    type Service = Dashboard<S>;

    fn layer(&self, inner: S) -> Dashboard<S> {
        Dashboard { inner }
    }
}

/// Answers `/` and `/ui...` from the embedded files; passes everything else to `inner`.
#[derive(Debug, Clone)]
pub struct Dashboard<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Dashboard<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match answer_page(request.method(), request.uri().path()) {
            Some(response) => Either::Left(ready(Ok(response))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

/// The answer to a request for the web app, or `None` when the path is not the app's.
fn answer_page(method: &Method, path: &str) -> Option<Response<Body>> {
    if path == "/" {
        return Some(redirect_to_app());
    }
    let is_app_path =
        path == MOUNT || path.strip_prefix(MOUNT).is_some_and(|rest| rest.starts_with('/'));
    if !is_app_path {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response =
            text(StatusCode::METHOD_NOT_ALLOWED, "the dashboard answers GET and HEAD only\n");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    let Some(asset) = assets::lookup(path) else {
        return Some(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    let body = if method == Method::HEAD {
        Body::new(Empty::<Bytes>::new())
    } else {
        Body::new(Full::new(Bytes::from_static(asset.bytes)))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(asset.cache_control));
    secure(headers);
    Some(response)
}

fn redirect_to_app() -> Response<Body> {
    let mut response = text(StatusCode::PERMANENT_REDIRECT, "the dashboard is at /ui/\n");
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    response
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(message.as_bytes()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(headers);
    response
}

fn secure(headers: &mut http::HeaderMap) {
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
