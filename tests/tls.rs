//! TLS and mTLS on the gRPC listener, with a CA made in the test: who gets in, certificates
//! replaced on disk (polled and on SIGHUP) reaching new connections without a restart, a bad
//! new file keeping the old certificate, and a stalled handshake not holding up other clients.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use common::{
    TestApp,
    certs::{Leaf, TestCa, write_atomically},
    create_request,
};
use sandboxd::{
    auth::Role,
    proto::sandbox_control_client::SandboxControlClient,
    tls::{ServerTlsConfig, grpc_client::GrpcClientTls},
};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A CA, the server's files in a temporary directory, and a server using them.
struct TlsFixture {
    ca: TestCa,
    dir: tempfile::TempDir,
    cert_file: PathBuf,
    key_file: PathBuf,
    app: TestApp,
}

impl TlsFixture {
    /// `client_ca`: the CA whose client certificates are required (mTLS), if any.
    async fn start(client_ca: Option<&TestCa>, tweak: impl FnOnce(&mut ServerTlsConfig)) -> Self {
        let ca = TestCa::new("sandboxd test CA");
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = ca.server_cert(1).write(dir.path(), "server");
        let client_ca_file =
            client_ca.map(|client_ca| client_ca.write(dir.path(), "client-ca.crt"));
        let mut tls = ServerTlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file,
            ..ServerTlsConfig::default()
        };
        tweak(&mut tls);
        let app = TestApp::start_unready(|config| config.server.tls = Some(tls)).await;
        Self { ca, dir, cert_file, key_file, app }
    }

    fn ca_file(&self) -> PathBuf {
        self.ca.write(self.dir.path(), "ca.crt")
    }

    fn https(&self) -> String {
        format!("https://localhost:{}", self.app.addr.port())
    }

    /// A channel trusting `ca_file` and presenting `identity` (cert, key), connected now.
    async fn channel(
        &self,
        ca_file: &Path,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let (cert_file, key_file) = identity.unzip();
        let tls = GrpcClientTls { ca_file: Some(ca_file.to_path_buf()), cert_file, key_file };
        let endpoint = sandboxd::tls::grpc_client::endpoint(&self.https(), &tls).unwrap();
        endpoint.connect_timeout(Duration::from_secs(5)).connect().await
    }

    /// The server certificate a new TLS connection is given (DER).
    async fn presented_certificate(&self) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = rustls_pki_types::CertificateDer::from(self.ca.der());
        roots.add(ca_der).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(sandboxd::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.app.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.expect("TLS handshake");
        let (_, session) = stream.get_ref();
        session.peer_certificates().expect("a server certificate")[0].to_vec()
    }

    /// Polls new connections until the server presents `leaf` (10 s at most).
    async fn wait_for_presented(&self, leaf: &Leaf, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.presented_certificate().await != leaf.der {
            assert!(tokio::time::Instant::now() < deadline, "{what}: not picked up within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn reload_counts(&self) -> (u64, u64) {
        self.app.server().tls.as_ref().expect("TLS is on").counts()
    }
}

/// Waits (by watching health over `channel`) until the server is SERVING.
async fn wait_serving(channel: Channel) {
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest { service: String::new() };
    let watched = async {
        let mut stream = health.watch(request).await.expect("health watch").into_inner();
        while let Some(response) = stream.message().await.expect("health stream") {
            if response.status() == ServingStatus::Serving {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), watched).await.expect("SERVING within 30 s");
}

async fn health_check(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let request = HealthCheckRequest { service: String::new() };
    let response = HealthClient::new(channel).check(request).await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn clients_trusting_the_ca_are_served_while_plaintext_and_other_cas_are_refused() {
    let fixture = TlsFixture::start(None, |_| {}).await;
    let channel = fixture.channel(&fixture.ca_file(), None).await.expect("TLS connection");
    wait_serving(channel.clone()).await;
    let key = fixture.app.key_for("acme", "alice", Role::Owner).await;
    let mut control =
        SandboxControlClient::with_interceptor(channel, common::Bearer(Some(key.clone())));
    let sandbox = control.create_sandbox(create_request("over-tls")).await.unwrap().into_inner();
    assert_eq!(sandbox.name, "over-tls");

    // The harness's plaintext channel gets no answer from a TLS listener.
    let plaintext = health_check(fixture.app.channel()).await;
    assert!(plaintext.is_err(), "a plaintext client must not be served: {plaintext:?}");

    let impostor = TestCa::new("another CA");
    let other_ca = impostor.write(fixture.dir.path(), "other-ca.crt");
    let refused = fixture.channel(&other_ca, None).await;
    assert!(refused.is_err(), "a client trusting another CA must not connect");

    // sandboxctl speaks TLS with --tls-ca and an https:// address.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["--addr", &fixture.https(), "--json", "get", "over-tls"])
        .arg("--tls-ca")
        .arg(fixture.ca_file())
        .env("SANDBOXD_API_KEY", &key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&sandbox.sandbox_id), "{stdout}");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let client_ca = TestCa::new("client CA");
    let fixture = TlsFixture::start(Some(&client_ca), |_| {}).await;
    let ca_file = fixture.ca_file();
    let dir = fixture.dir.path();
    let good = client_ca.client_cert("router-1").write(dir, "good-client");
    let channel = fixture.channel(&ca_file, Some(good)).await.expect("a good client connects");
    wait_serving(channel).await;

    // Without a certificate: rustls on the server ends the handshake, so the channel either
    // fails to connect or its first call fails.
    let without = match fixture.channel(&ca_file, None).await {
        Ok(channel) => health_check(channel).await.map(|_| ()).map_err(|s| s.to_string()),
        Err(error) => Err(error.to_string()),
    };
    assert!(without.is_err(), "a client without a certificate must be refused");

    let stranger = TestCa::new("a stranger's CA").client_cert("mallory").write(dir, "stranger");
    let foreign = match fixture.channel(&ca_file, Some(stranger)).await {
        Ok(channel) => health_check(channel).await.map(|_| ()).map_err(|s| s.to_string()),
        Err(error) => Err(error.to_string()),
    };
    assert!(foreign.is_err(), "a certificate from another CA must be refused");
}

#[tokio::test]
async fn rewritten_certificates_reach_new_connections_and_a_bad_file_keeps_the_old_one() {
    let fixture =
        TlsFixture::start(None, |tls| tls.reload_interval = Duration::from_millis(100)).await;
    let first = fixture.presented_certificate().await;
    let existing = fixture.channel(&fixture.ca_file(), None).await.unwrap();
    wait_serving(existing.clone()).await;

    let renewed = fixture.ca.server_cert(2);
    assert_ne!(renewed.der, first, "the renewed certificate differs (serial 2)");
    renewed.write(fixture.dir.path(), "server");
    fixture.wait_for_presented(&renewed, "the renewed certificate").await;
    assert_eq!(
        health_check(existing.clone()).await.unwrap(),
        ServingStatus::Serving,
        "a connection made before the reload keeps working"
    );

    // A broken certificate file: the reload is refused and the renewed certificate stays.
    let (_, refused_before) = fixture.reload_counts();
    write_atomically(&fixture.cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n", 0o644);
    common::eventually("the bad file to be refused", Duration::from_secs(10), || async {
        fixture.reload_counts().1 > refused_before
    })
    .await;
    assert_eq!(fixture.presented_certificate().await, renewed.der);
    // A key that does not match the certificate is refused too.
    renewed.write(fixture.dir.path(), "server");
    fixture.wait_for_presented(&renewed, "the renewed certificate again").await;
    let (_, refused_before) = fixture.reload_counts();
    let stranger_key = fixture.ca.server_cert(3).key_pem;
    write_atomically(&fixture.key_file, &stranger_key, 0o600);
    common::eventually("the mismatched key to be refused", Duration::from_secs(10), || async {
        fixture.reload_counts().1 > refused_before
    })
    .await;
    assert_eq!(fixture.presented_certificate().await, renewed.der);
    let fresh = fixture.channel(&fixture.ca_file(), None).await.expect("still accepting");
    assert_eq!(health_check(fresh).await.unwrap(), ServingStatus::Serving);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_at_once() {
    // Polling every hour: only the signal can bring the new certificate in this test's time.
    let fixture =
        TlsFixture::start(None, |tls| tls.reload_interval = Duration::from_secs(3600)).await;
    let renewed = fixture.ca.server_cert(7);
    renewed.write(fixture.dir.path(), "server");
    assert_ne!(fixture.presented_certificate().await, renewed.der, "not reloaded before SIGHUP");

    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    fixture.wait_for_presented(&renewed, "the certificate after SIGHUP").await;
}

#[tokio::test]
async fn a_client_stalled_in_its_handshake_neither_blocks_others_nor_stays_connected() {
    let fixture =
        TlsFixture::start(None, |tls| tls.handshake_timeout = Duration::from_millis(500)).await;
    // Connects and never sends a ClientHello.
    let mut stalled = tokio::net::TcpStream::connect(fixture.app.addr).await.unwrap();
    let channel = fixture.channel(&fixture.ca_file(), None).await.expect("others still connect");
    wait_serving(channel).await;
    let mut buffer = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled client is disconnected after the handshake timeout: {closed:?}"
    );
}

#[tokio::test]
async fn sighup_to_a_plaintext_server_is_harmless() {
    let app = TestApp::spawn().await;
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the signal was sent (its default action would end this process)");
    // A round trip after the signal has certainly been handled: the process and server live on.
    app.wait_for_health("", ServingStatus::Serving).await;
    let templates = app.owner().list_templates(sandboxd::proto::ListTemplatesRequest {}).await;
    assert!(templates.is_ok(), "{templates:?}");
}
