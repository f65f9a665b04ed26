//! Real S3 servers for the workspace sync tests, each behind a [`RequestTap`] that counts the
//! requests the server receives and can refuse chosen ones:
//! - `S3sFs`: the in-process s3s-fs server (`sandboxd::dev::InProcessS3`), tapped inside it;
//! - `Moto`: a `moto_server` child process (PyPI `moto[server]`) on a free loopback port,
//!   tapped by a small HTTP proxy in front of it. A missing `moto_server` fails the test.
//!
//! Each test starts its own servers (nextest runs every test in its own process); dropping a
//! [`TestS3`] stops them and removes their data.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_s3::Client;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use sandboxd::{
    config::{S3Config, Secret},
    dev::{InProcessS3, RequestTap, Tapped, free_port},
};
use tokio::{net::TcpListener, sync::Mutex, task::JoinHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    S3sFs,
    Moto,
}

pub struct TestS3 {
    pub flavor: Flavor,
    pub client: Client,
    pub tap: Arc<RequestTap>,
    _server: Server,
}

enum Server {
    S3sFs { _server: InProcessS3, _data: tempfile::TempDir },
    Moto { _moto: MotoServer, proxy: JoinHandle<()> },
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Moto { proxy, .. } = self {
            proxy.abort();
        }
    }
}

impl TestS3 {
    pub async fn start(flavor: Flavor) -> TestS3 {
        let tap = RequestTap::new();
        let mut config = S3Config::default();
        let server = match flavor {
            Flavor::S3sFs => {
                let data = tempfile::tempdir().expect("temporary directory");
                let server = InProcessS3::start_with_tap(data.path(), tap.clone())
                    .await
                    .expect("starting the in-process S3 server");
                server.apply(&mut config);
                Server::S3sFs { _server: server, _data: data }
            }
            Flavor::Moto => {
                let moto = MotoServer::start();
                let proxy_addr;
                let proxy;
                (proxy_addr, proxy) = tap_proxy(moto.addr, tap.clone()).await;
                config.enabled = true;
                config.endpoint = format!("http://{proxy_addr}");
                config.access_key_id = "testing".into();
                config.secret_access_key = Secret::new("testing".to_string());
                config.force_path_style = true;
                Server::Moto { _moto: moto, proxy }
            }
        };
        let client = sandboxd::objectstore::client(&config).await;
        TestS3 { flavor, client, tap, _server: server }
    }

    /// A new, empty bucket of this test's own.
    pub async fn new_bucket(&self) -> String {
        let bucket = format!("sync-{}", uuid::Uuid::new_v4().simple());
        sandboxd::objectstore::ensure_bucket(&self.client, &bucket)
            .await
            .expect("creating a bucket");
        bucket
    }

    /// Every key in `bucket` under `prefix`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("listing objects");
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        keys.sort();
        keys
    }
}

/// A `moto_server` child process; killed on drop.
pub struct MotoServer {
    pub addr: SocketAddr,
    child: Child,
}

impl MotoServer {
    /// Starts `moto_server` (from `MOTO_SERVER`, else `PATH`, else pyenv's shims) and waits
    /// until its port accepts connections.
    pub fn start() -> MotoServer {
        let binary = moto_binary().unwrap_or_else(|| {
            panic!(
                "moto_server not found (MOTO_SERVER, PATH, /root/.pyenv/shims): install it with \
                 `python3 -m pip install 'moto[server]'` (scripts/test does)"
            )
        });
        let port = free_port().expect("a free port");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let mut moto = MotoServer { addr: SocketAddr::from(([127, 0, 0, 1], port)), child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect_timeout(&moto.addr, Duration::from_millis(200)).is_ok()
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited before it listened: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {} within 60 s",
                moto.addr
            );
            // Polling the port, not guessing a start-up time.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER").filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("moto_server")).find(|path| path.is_file())
    });
    on_path.or_else(|| {
        let shim = PathBuf::from("/root/.pyenv/shims/moto_server");
        shim.is_file().then_some(shim)
    })
}

/// An HTTP/1 proxy on a free loopback port: each client connection gets its own upstream
/// connection, and every request passes `tap` first.
async fn tap_proxy(upstream: SocketAddr, tap: Arc<RequestTap>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let tap = tap.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let Ok((sender, connection)) =
                    hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(server))
                        .await
                else {
                    return;
                };
                tokio::spawn(connection);
                let sender = Arc::new(Mutex::new(sender));
                let forward = service_fn(move |request: hyper::Request<Incoming>| {
                    let sender = sender.clone();
                    let completes_multipart = request.method() == hyper::Method::POST
                        && request.uri().query().is_some_and(|query| query.contains("uploadId="));
                    async move {
                        let mut sender = sender.lock().await;
                        sender.ready().await?;
                        let response = sender.send_request(request).await?;
                        let (mut parts, body) = response.into_parts();
                        let mut body: Bytes = body.collect().await?.to_bytes();
                        if completes_multipart {
                            body = fix_complete_multipart_root(body);
                            parts.headers.remove(hyper::header::CONTENT_LENGTH);
                        }
                        Ok::<_, hyper::Error>(hyper::Response::from_parts(parts, Full::new(body)))
                    }
                });
                let service = Tapped { inner: forward, tap: Some(tap) };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// moto 5.2's serializer names the CompleteMultipartUpload answer's root element
/// `CompleteMultipartUploadResponse`; S3 (and s3s-fs) say `CompleteMultipartUploadResult`,
/// and the Rust SDK, unlike boto, refuses anything else. Renamed here so the tests exercise our
/// multipart code against moto instead of tripping on that moto bug.
fn fix_complete_multipart_root(body: Bytes) -> Bytes {
    match std::str::from_utf8(&body) {
        Ok(text) if text.contains("CompleteMultipartUploadResponse") => Bytes::from(
            text.replace("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult"),
        ),
        _ => body,
    }
}
