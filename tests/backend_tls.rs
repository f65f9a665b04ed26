//! TLS from sandboxd to PostgreSQL and Redis, against private servers started here with a CA
//! made in the test (the shared servers are never touched): PostgreSQL with `ssl=on` and a
//! pg_hba.conf that only takes TLS connections with a client certificate, Redis with only a TLS
//! port and client certificates required. sandboxd serves over them; a CA that did not sign
//! their certificates is refused as a certificate problem.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::{TestApp, certs::TestCa, create_request, error_reason};
use sandboxd::{
    auth::Role,
    config::{Config, DatabaseConfig, RedisConfig, SecretUrl},
    dev::{ThrowawayPostgres, free_port},
    isolation::redis_client::RedisClient,
    proto::ListTemplatesRequest,
    tls::client::ClientTlsConfig,
};
use sqlx::{ConnectOptions, Connection};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A CA, a private PostgreSQL and a private Redis whose certificates it signed, and client
/// certificates for both.
struct TlsBackends {
    // Fields drop in order: the servers stop before their directory is removed.
    postgres: ThrowawayPostgres,
    redis: tokio::process::Child,
    redis_port: u16,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsBackends {
    async fn start() -> Self {
        let ca = TestCa::new("backend test CA");
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("pg");
        std::fs::create_dir_all(&files).unwrap();
        let ca_file = ca.write(dir.path(), "ca.crt");
        // PostgreSQL's cert authentication takes the user name from the certificate's CN.
        let (client_cert, client_key) = ca.client_cert("postgres").write(dir.path(), "client");

        let server = ca.server_cert(1);
        let (pg_cert, pg_key) = server.write(&files, "server");
        let pg_ca = ca.write(&files, "ca.crt");
        let hba = files.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let settings = [
            ("ssl", "on".to_string()),
            ("ssl_cert_file", pg_cert.display().to_string()),
            ("ssl_key_file", pg_key.display().to_string()),
            ("ssl_ca_file", pg_ca.display().to_string()),
            ("hba_file", hba.display().to_string()),
        ];
        let postgres = ThrowawayPostgres::start_with(&files, &settings)
            .await
            .expect("a private PostgreSQL with ssl=on starts");

        let redis_dir = dir.path().join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let (redis_cert, redis_key) = server.write(&redis_dir, "server");
        let redis_port = free_port().unwrap();
        let redis = tokio::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&redis_cert)
            .arg("--tls-key-file")
            .arg(&redis_key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&redis_dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (built with TLS) is installed");
        let backends = Self { postgres, redis, redis_port, ca_file, client_cert, client_key, dir };
        backends.wait_for_redis().await;
        backends
    }

    fn tls(&self, ca_file: &std::path::Path) -> ClientTlsConfig {
        ClientTlsConfig {
            ca_file: Some(ca_file.to_path_buf()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            verify: true,
        }
    }

    /// `sslmode=require`, which sandboxd verifies (as verify-full).
    fn database(&self, ca_file: &std::path::Path) -> DatabaseConfig {
        let url = format!("{}?sslmode=require", self.postgres.url("sandboxd_tls"));
        DatabaseConfig { url: SecretUrl::new(url), tls: self.tls(ca_file), ..Default::default() }
    }

    fn redis(&self, ca_file: &std::path::Path) -> RedisConfig {
        let url = format!("rediss://127.0.0.1:{}", self.redis_port);
        RedisConfig {
            url: SecretUrl::new(url),
            tls: self.tls(ca_file),
            key_prefix: "sandboxd-tls-test:".into(),
            ..Default::default()
        }
    }

    fn apply(&self, config: &mut Config, ca_file: &std::path::Path) {
        config.database.url = self.database(ca_file).url;
        config.database.tls = self.tls(ca_file);
        config.redis.url = self.redis(ca_file).url;
        config.redis.tls = self.tls(ca_file);
    }

    /// Polls the TLS port with sandboxd's own Redis client until it answers (20 s at most).
    async fn wait_for_redis(&self) {
        let client = RedisClient::build(&self.redis(&self.ca_file)).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = client.get().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "TLS redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A stranger CA's certificate file: trusted by nothing here.
    fn wrong_ca(&self) -> PathBuf {
        TestCa::new("a stranger's CA").write(self.dir.path(), "wrong-ca.crt")
    }
}

impl Drop for TlsBackends {
    fn drop(&mut self) {
        let _ = self.redis.start_kill();
    }
}

#[tokio::test]
async fn sandboxd_serves_over_verified_tls_to_postgres_and_redis() {
    let backends = TlsBackends::start().await;
    // First: both servers really refuse plaintext. PostgreSQL's pg_hba.conf rejects a
    // connection without TLS, and Redis has no plaintext port at all (`--port 0`).
    let plaintext = format!("{}?sslmode=disable", backends.postgres.url("postgres"));
    let refused = sqlx::PgConnection::connect(&plaintext).await.unwrap_err().to_string();
    assert!(refused.contains("pg_hba.conf") || refused.contains("reject"), "{refused}");
    let plain_redis = redis::Client::open(format!("redis://127.0.0.1:{}", backends.redis_port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let pinged = match plain_redis {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
        Err(_) => false,
    };
    assert!(!pinged, "the TLS port must not answer plaintext");

    // `sandboxd migrate` creates the database and migrates it over TLS.
    let database = backends.database(&backends.ca_file);
    let migrate = sandboxd_migrate(&backends, &backends.ca_file).await;
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));

    let ca_file = backends.ca_file.clone();
    let app = TestApp::start_unready(|config| backends.apply(config, &ca_file)).await;
    app.wait_for_health("", ServingStatus::Serving).await;
    let key = app.key_for("acme", "alice", Role::Owner).await;
    let sandbox = app
        .control(Some(&key))
        .create_sandbox(create_request("tls-backed"))
        .await
        .expect("a sandbox is created on TLS-only PostgreSQL and Redis")
        .into_inner();
    assert_eq!(sandbox.name, "tls-backed");

    // Every sandboxd backend session on the private server is encrypted.
    let mut conn = sandboxd::store::connect::connect_options(&database)
        .unwrap()
        .connect()
        .await
        .expect("a verified TLS connection with the client certificate");
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'sandboxd' AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(encrypted > 0, "sandboxd's pool is connected");
    assert_eq!(plain, 0, "no sandboxd session without TLS");
    let schema: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
            .bind(format!("sandbox_{}", sandbox.sandbox_id.replace('-', "")))
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    assert!(schema.is_some(), "the sandbox schema was provisioned on the TLS server");
    conn.close().await.ok();
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_as_a_certificate_problem() {
    let backends = TlsBackends::start().await;
    let wrong_ca = backends.wrong_ca();

    let migrate = sandboxd_migrate(&backends, &wrong_ca).await;
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(!migrate.status.success(), "migrate must fail with the wrong CA");
    assert!(stderr.contains("certificate"), "the error names a certificate problem: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let redis_error = match RedisClient::build(&backends.redis(&wrong_ca)).unwrap().get().await {
        Ok(_) => panic!("Redis must refuse a connection that does not trust its certificate"),
        Err(error) => format!("{:#}", anyhow::Error::new(error)),
    };
    assert!(redis_error.contains("certificate"), "{redis_error}");

    // A server configured with the wrong CA starts, stays NOT_SERVING and answers UNAVAILABLE.
    let app = TestApp::start_unready(|config| backends.apply(config, &wrong_ca)).await;
    let ping = app.server().app.store.ping().await.unwrap_err().to_string();
    assert!(ping.contains("certificate"), "{ping}");
    let health = app.health().check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(health.unwrap().into_inner().status(), ServingStatus::NotServing);
    let status = app.control(None).list_templates(ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_reason(&status), "NOT_READY");
}

/// Runs the real `sandboxd migrate` against the private PostgreSQL, trusting `ca_file`.
async fn sandboxd_migrate(
    backends: &TlsBackends,
    ca_file: &std::path::Path,
) -> std::process::Output {
    let database = backends.database(ca_file);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxd"))
        .arg("migrate")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SANDBOXD_DATABASE__URL", database.url.expose())
        .env("SANDBOXD_DATABASE__TLS__CA_FILE", ca_file)
        .env("SANDBOXD_DATABASE__TLS__CERT_FILE", &backends.client_cert)
        .env("SANDBOXD_DATABASE__TLS__KEY_FILE", &backends.client_key)
        .output()
        .await
        .expect("running sandboxd migrate")
}
