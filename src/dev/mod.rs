//! `sandboxd dev`: the one-command local run. Uses `DATABASE_URL` / `REDIS_URL` / `SANDBOXD_S3__*`
//! when given; otherwise starts a throwaway PostgreSQL cluster and `redis-server` from the
//! machine's binaries, and an in-process S3 server on a data directory. Everything it started
//! stops when it exits.

mod postgres;
mod redis_server;
mod s3;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;

use crate::git::settings::GitSettings;
use crate::{
    auth::{self, Principal},
    config::{Config, RuntimeConfig, SecretUrl},
};

pub use postgres::ThrowawayPostgres;
pub use redis_server::{ThrowawayRedis, free_port};
pub use s3::{InProcessS3, RefuseRule, RequestTap, Tapped, request_label};

/// Dependencies the user already runs, from `DATABASE_URL` / `REDIS_URL`.
#[derive(Debug, Default, Clone)]
pub struct GivenDependencies {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
}

impl GivenDependencies {
    pub fn from_env() -> Self {
        let non_empty = |name| std::env::var(name).ok().filter(|value: &String| !value.is_empty());
        Self { database_url: non_empty("DATABASE_URL"), redis_url: non_empty("REDIS_URL") }
    }
}

/// Dependencies for a local run; dropping it stops what it started.
pub struct DevDependencies {
    pub database_url: String,
    pub redis_url: String,
    pub s3: Option<InProcessS3>,
    /// Workspaces of `process` sandboxes, unless the config names a directory of its own.
    workspaces: PathBuf,
    _postgres: Option<ThrowawayPostgres>,
    _redis: Option<ThrowawayRedis>,
    _data_dir: Option<tempfile::TempDir>,
}

impl DevDependencies {
    /// Starts what is not given by `DATABASE_URL` / `REDIS_URL`; `data_dir` holds the throwaway
    /// state (a temporary directory when `None`).
    pub async fn start(
        given: GivenDependencies,
        data_dir: Option<PathBuf>,
        with_s3: bool,
    ) -> anyhow::Result<Self> {
        let (root, temp) = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (dir, None)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("sandboxd-dev-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let (database_url, postgres) = match given.database_url {
            Some(url) => (url, None),
            None => {
                let postgres = ThrowawayPostgres::start(&root.join("postgres")).await?;
                (postgres.url("sandboxd"), Some(postgres))
            }
        };
        let (redis_url, redis) = match given.redis_url {
            Some(url) => (url, None),
            None => {
                let redis = ThrowawayRedis::start(&root.join("redis")).await?;
                (redis.url(), Some(redis))
            }
        };
        let s3 = if with_s3 { Some(InProcessS3::start(&root.join("s3")).await?) } else { None };
        // Sandbox uids traverse the data directory to reach their workspace (not list it).
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", root.display()))?;
        Ok(Self {
            database_url,
            redis_url,
            s3,
            workspaces: root.join("workspaces"),
            _postgres: postgres,
            _redis: redis,
            _data_dir: temp,
        })
    }

    /// Points `config` at these dependencies.
    pub fn apply(&self, config: &mut Config) {
        config.database.url = SecretUrl::new(&self.database_url);
        config.redis.url = SecretUrl::new(&self.redis_url);
        if let Some(s3) = &self.s3 {
            s3.apply(&mut config.s3);
        }
        if config.runtime.workspace_root == RuntimeConfig::default().workspace_root {
            config.runtime.workspace_root = self.workspaces.clone();
        }
        if config.git.mirror_dir == GitSettings::default().mirror_dir
            && let Some(data) = self.workspaces.parent()
        {
            config.git.mirror_dir = data.join("git");
        }
    }
}

/// Where `sandboxd dev` serves the dashboard unless told otherwise (production has none).
pub const DEV_DASHBOARD_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8090);

/// Options of `sandboxd dev`.
pub struct DevOptions {
    pub listen: Option<SocketAddr>,
    /// The dashboard listener; `None`: `[dashboard] listen` when set, else
    /// [`DEV_DASHBOARD_LISTEN`].
    pub dashboard_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Only start the dependencies and write their URLs to this file (`KEY=value` lines).
    pub deps_only_env_file: Option<PathBuf>,
}

pub async fn run(
    mut config: Config,
    given: GivenDependencies,
    options: DevOptions,
) -> anyhow::Result<()> {
    let s3_given = !config.s3.endpoint.is_empty();
    let deps = DevDependencies::start(given, options.data_dir, !s3_given).await?;
    if let Some(env_file) = options.deps_only_env_file {
        let lines = format!("DATABASE_URL={}\nREDIS_URL={}\n", deps.database_url, deps.redis_url);
        let partial = env_file.with_extension("partial");
        std::fs::write(&partial, lines)?;
        std::fs::rename(&partial, &env_file)?;
        println!(
            "dependencies are up; their URLs are in {}. Ctrl-C stops them.",
            env_file.display()
        );
        crate::shutdown_signal().await;
        return Ok(());
    }
    deps.apply(&mut config);
    if s3_given {
        config.s3.enabled = true;
    }
    if config.s3.enabled {
        let client = crate::objectstore::client(&config.s3).await;
        crate::objectstore::ensure_bucket(&client, &config.s3.bucket).await?;
    }
    if let Some(listen) = options.listen {
        config.server.listen = listen;
    }
    config.dashboard.listen =
        options.dashboard_listen.or(config.dashboard.listen).or(Some(DEV_DASHBOARD_LISTEN));
    config.validate()?;
    crate::store::ensure_database(&config.database).await?;

    let server = crate::server::start(config).await?;
    let token = server.shutdown_token();
    wait_until_ready(&server.app, &token).await?;
    let dev_key = std::env::var("SANDBOXD_DEV_API_KEY").ok().filter(|key| !key.is_empty());
    let principal = Principal::dev_owner();
    let key =
        match auth::create_key(&server.app.store, &principal, "sandboxd dev", dev_key.as_deref())
            .await
        {
            Ok(generated) => generated.key,
            // The fixed key was stored by an earlier run against the same database.
            Err(_) if dev_key.is_some() => dev_key.unwrap_or_default(),
            Err(error) => return Err(error.into()),
        };
    let tls = server.tls.is_some();
    print_banner(server.local_addr, server.dashboard_addr, &key, &deps, tls);
    crate::cancel_on_signal(token);
    server.wait().await
}

async fn wait_until_ready(
    app: &crate::app::App,
    token: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !app.is_ready() {
        if token.is_cancelled() {
            anyhow::bail!("the server stopped while starting; see the log above");
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("PostgreSQL or Redis did not become ready within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

fn print_banner(
    addr: SocketAddr,
    dashboard: Option<SocketAddr>,
    key: &str,
    deps: &DevDependencies,
    tls: bool,
) {
    let s3 = deps.s3.as_ref().map(|s3| s3.endpoint()).unwrap_or_else(|| "as configured".into());
    let scheme = if tls { "https" } else { "http" };
    let dashboard = match dashboard {
        Some(dashboard) if crate::web::web_app_built() => {
            format!("{scheme}://{dashboard}/ui/   (paste the API key into the page)")
        }
        Some(dashboard) => format!(
            "{scheme}://{dashboard}/ui/ (a placeholder: build the web app with `npm --prefix clients/web ci && npm --prefix clients/web run build`, then cargo build)"
        ),
        None => "off".to_string(),
    };
    // With [server.tls] set, the clients need the CA that signed the server's certificate.
    let (grpcurl, ctl) = if tls {
        ("-cacert CA.pem", format!("SANDBOXD_ADDR=https://{addr} SANDBOXD_TLS_CA=CA.pem"))
    } else {
        ("-plaintext", format!("SANDBOXD_ADDR=http://{addr}"))
    };
    println!(
        "\n\
         sandboxd dev is running (Ctrl-C stops it and everything it started)\n\
         \x20 gRPC address : {addr}\n\
         \x20 API key      : {key}   (tenant \"dev\", role owner)\n\
         \x20 S3 endpoint  : {s3}\n\
         \x20 Dashboard    : {dashboard}\n\
         \n\
         Try it:\n\
         \x20 grpcurl {grpcurl} -H 'authorization: Bearer {key}' -d '{{\"template\": \"discord-guild\", \"name\": \"my-first\"}}' {addr} sandboxd.v1.SandboxControl/CreateSandbox\n\
         \x20 {ctl} SANDBOXD_API_KEY={key} cargo run --bin sandboxctl -- get my-first\n"
    );
}
