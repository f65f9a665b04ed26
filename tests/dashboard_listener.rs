//! The dashboard listener below the browser: gRPC-Web over HTTP/1.1 reaches the same services
//! with the same auth, metadata limit and per-RPC metrics as the gRPC port; no CORS is opened;
//! the app's paths answer only GET/HEAD; the listener stops with the server; and with
//! `[server.tls]` set it serves only TLS, with the server's certificate.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{TestApp, certs::TestCa, http1};
use sandboxd::tls::ServerTlsConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An empty `ListTemplatesRequest` in one gRPC-Web data frame.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];
const LIST_TEMPLATES: &str = "/sandboxd.v1.SandboxControl/ListTemplates";

fn dashboard_addr(app: &TestApp) -> SocketAddr {
    app.server().dashboard_addr.expect("the dashboard listener is on")
}

async fn grpc_web(addr: SocketAddr, key: Option<&str>, extra: &[(&str, &str)]) -> http1::Answer {
    let bearer = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    headers.extend_from_slice(extra);
    let stream = TcpStream::connect(addr).await.unwrap();
    http1::exchange(stream, &addr.to_string(), "POST", LIST_TEMPLATES, &headers, EMPTY_MESSAGE)
        .await
}

#[tokio::test]
async fn grpc_web_shares_auth_limits_and_metrics_with_the_grpc_port_and_stops_with_it() {
    let mut app = TestApp::spawn_with(|config| {
        config.dashboard.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = dashboard_addr(&app);
    let metrics = app.server().app.metrics.clone();

    let answer = grpc_web(addr, Some(&app.owner_key), &[]).await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").starts_with("application/grpc-web"), "gRPC-Web answers");
    assert_eq!(answer.grpc_status(), Some(0), "ListTemplates over gRPC-Web with the key");
    assert!(answer.body.len() > 5 + 5, "a message frame before the trailers");

    let anonymous = grpc_web(addr, None, &[]).await;
    assert_eq!(anonymous.grpc_status(), Some(16), "UNAUTHENTICATED without a key, as on the port");

    let padding = "x".repeat(app.config.server.max_metadata_bytes + 1);
    let oversized = grpc_web(addr, Some(&app.owner_key), &[("x-padding", &padding)]).await;
    assert_eq!(oversized.grpc_status(), Some(8), "RESOURCE_EXHAUSTED over the metadata limit");

    let rendered = metrics.render(&app.server().app.store, &[]).await.unwrap();
    let line = rendered
        .lines()
        .find(|line| {
            line.starts_with("grpc_server_handled_total")
                && line.contains("method=\"ListTemplates\"")
                && line.contains("code=\"OK\"")
        })
        .unwrap_or_else(|| panic!("the gRPC-Web call was counted:\n{rendered}"));
    assert!(line.starts_with("grpc_server_handled_total"), "{line}");

    // A cross-origin preflight gets no CORS grant: the page is same-origin by design.
    let stream = TcpStream::connect(addr).await.unwrap();
    let preflight = http1::exchange(
        stream,
        &addr.to_string(),
        "OPTIONS",
        LIST_TEMPLATES,
        &[("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        b"",
    )
    .await;
    assert_eq!(preflight.header("access-control-allow-origin"), "", "no CORS");
    let stream = TcpStream::connect(addr).await.unwrap();
    let post = http1::exchange(stream, &addr.to_string(), "POST", "/ui/", &[], b"x").await;
    assert_eq!((post.status, post.header("allow")), (405, "GET, HEAD"));

    tokio::time::timeout(Duration::from_secs(30), app.shutdown())
        .await
        .expect("the server, dashboard included, stops within 30 s")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the dashboard listener is closed");
}

#[tokio::test]
async fn with_server_tls_the_dashboard_serves_tls_only_with_the_same_certificate() {
    let ca = TestCa::new("sandboxd dashboard test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = ca.server_cert(1).write(dir.path(), "server");
    let tls = ServerTlsConfig { cert_file, key_file, ..ServerTlsConfig::default() };
    let app = TestApp::start_unready(|config| {
        config.server.tls = Some(tls);
        config.dashboard.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = dashboard_addr(&app);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(ca.der())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(sandboxd::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("a TLS handshake with the server's CA");
    let page = http1::exchange(stream, "localhost", "GET", "/ui/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");

    // Plaintext HTTP gets no page.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /ui/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"), "plaintext is not served");
}
