//! A throwaway `redis-server` child process on a free port, killed on drop.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub struct ThrowawayRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl ThrowawayRedis {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let child = spawn(port, dir)?;
        let redis = Self { port, dir: dir.to_path_buf(), child };
        redis.wait_until_answering().await?;
        tracing::info!(port, "throwaway Redis started");
        Ok(redis)
    }

    /// Kills the server (SIGKILL: it loses everything, as it keeps nothing on disk).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing redis-server")
    }

    /// Starts it again on the same port (after [`ThrowawayRedis::kill`]).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = spawn(self.port, &self.dir)?;
        self.wait_until_answering().await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_until_answering(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server on port {} did not answer within 20 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "redis-server not found: install the Debian package `redis-server` \
                 (apt-get install redis-server), or set REDIS_URL to a running server"
            ),
            _ => anyhow::Error::new(error).context("starting redis-server"),
        })
}

/// A port that was free a moment ago (the OS picks it; a tiny race remains).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
