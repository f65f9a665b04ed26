//! An in-process S3 server (s3s-fs) on a data directory, for local runs and tests. It serves
//! plain HTTP on 127.0.0.1 with a generated access key; dropping it stops the server.
//!
//! Tests and benchmarks can attach a [`RequestTap`]: it counts the requests the server receives
//! (by method and S3 sub-resource) and can refuse chosen ones, to inject failures at the server.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto::Builder as ConnBuilder};
use rand::RngCore;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::config::{S3Config, Secret};

pub struct InProcessS3 {
    addr: SocketAddr,
    access_key_id: String,
    secret_access_key: Secret,
    server: JoinHandle<()>,
}

impl InProcessS3 {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_tapped(dir, None).await
    }

    /// Like [`InProcessS3::start`], with every request going through `tap` first.
    pub async fn start_with_tap(dir: &Path, tap: Arc<RequestTap>) -> anyhow::Result<Self> {
        Self::start_tapped(dir, Some(tap)).await
    }

    async fn start_tapped(dir: &Path, tap: Option<Arc<RequestTap>>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let filesystem = s3s_fs::FileSystem::new(dir).map_err(|error| {
            anyhow::anyhow!("opening S3 data directory {}: {error:?}", dir.display())
        })?;
        let access_key_id = format!("dev{}", random_hex(8));
        let secret_access_key = Secret::new(random_hex(20));
        let mut builder = s3s::service::S3ServiceBuilder::new(filesystem);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            access_key_id.clone(),
            secret_access_key.expose().to_string(),
        ));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the S3 server")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = Tapped { inner: service.clone(), tap: tap.clone() };
                let connection = http.serve_connection(TokioIo::new(socket), service).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        tracing::info!(%addr, "in-process S3 server started");
        Ok(Self { addr, access_key_id, secret_access_key, server })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points an S3 config at this server.
    pub fn apply(&self, config: &mut S3Config) {
        config.enabled = true;
        config.endpoint = self.endpoint();
        config.access_key_id = self.access_key_id.clone();
        config.secret_access_key = self.secret_access_key.clone();
        config.force_path_style = true;
    }
}

impl Drop for InProcessS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// Counts requests by [`request_label`] and refuses those a rule picks (with 503 Service
/// Unavailable and an S3 error body, as an overloaded S3 would answer).
#[derive(Default)]
pub struct RequestTap {
    counts: Mutex<BTreeMap<String, u64>>,
    refused: AtomicU64,
    rule: Mutex<Option<RefuseRule>>,
}

/// Decides from the method and the URI (path and query, percent-encoded) whether to refuse a
/// request.
pub type RefuseRule = Box<dyn Fn(&http::Method, &http::Uri) -> bool + Send + Sync>;

impl RequestTap {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counts a request; `true` when the rule refuses it (refused requests are counted too).
    pub fn observe(&self, method: &http::Method, uri: &http::Uri) -> bool {
        *lock(&self.counts).entry(request_label(method, uri)).or_default() += 1;
        let refuse = lock(&self.rule).as_ref().is_some_and(|rule| rule(method, uri));
        if refuse {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refuse
    }

    /// Requests seen since the last reset, by label (`"PUT"`, `"PUT ?partNumber"`, ...).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }

    pub fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }

    /// Requests refused since the last reset.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Zeroes the counts (the rule stays).
    pub fn reset(&self) {
        lock(&self.counts).clear();
        self.refused.store(0, Ordering::Relaxed);
    }

    pub fn refuse_when(
        &self,
        rule: impl Fn(&http::Method, &http::Uri) -> bool + Send + Sync + 'static,
    ) {
        *lock(&self.rule) = Some(Box::new(rule));
    }

    pub fn stop_refusing(&self) {
        *lock(&self.rule) = None;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The HTTP method plus the S3 sub-resource that tells operations apart when there is one:
/// `POST ?uploads` (CreateMultipartUpload), `PUT ?partNumber` (UploadPart), `POST ?uploadId`
/// (CompleteMultipartUpload), `DELETE ?uploadId` (AbortMultipartUpload), `POST ?delete`
/// (DeleteObjects), `GET ?list-type` (ListObjectsV2); otherwise just the method.
pub fn request_label(method: &http::Method, uri: &http::Uri) -> String {
    let query = uri.query().unwrap_or_default();
    let has = |name: &str| query.split('&').any(|pair| pair.split('=').next() == Some(name));
    match ["uploads", "partNumber", "uploadId", "delete", "list-type"]
        .into_iter()
        .find(|name| has(name))
    {
        Some(name) => format!("{method} ?{name}"),
        None => method.to_string(),
    }
}

/// A hyper service behind an optional [`RequestTap`].
#[derive(Clone)]
pub struct Tapped<S> {
    pub inner: S,
    pub tap: Option<Arc<RequestTap>>,
}

impl<S, B> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tapped<S>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: From<String> + Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(tap) = &self.tap
            && tap.observe(request.method(), request.uri())
        {
            return Box::pin(std::future::ready(Ok(refusal())));
        }
        Box::pin(self.inner.call(request))
    }
}

fn refusal<B: From<String>>() -> http::Response<B> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable</Code>\
        <Message>refused by the request tap</Message></Error>";
    let mut response = http::Response::new(B::from(body.to_string()));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    response
}
