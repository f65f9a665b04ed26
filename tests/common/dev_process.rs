//! A real `sandboxd dev` process on free ports (throwaway PostgreSQL and Redis under `data`, an
//! in-process S3 server), with the addresses its banner printed. Dropping it sends SIGTERM and
//! waits, so a failing test does not leave the throwaway servers running (a SIGKILL would
//! orphan them); [`DevProcess::stop`] does the same and asserts a clean exit.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

pub struct DevProcess {
    pub child: Child,
    /// Kept open: sandboxd dev fails writing to a closed stdout.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// `host:port` of the gRPC listener.
    pub grpc: String,
    /// The dashboard's URL (`http://host:port/ui/`).
    pub dashboard: String,
}

impl DevProcess {
    /// Starts `sandboxd dev` with `key` as its dev API key and waits for its banner.
    pub async fn start(data: &Path, key: &str) -> DevProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandboxd"))
            .args(["dev", "--listen", "127.0.0.1:0", "--dashboard-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("SANDBOXD_DEV_API_KEY", key)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sandboxd dev starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (grpc, dashboard) = tokio::time::timeout(Duration::from_secs(120), async {
            let mut grpc = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                let line = line.trim();
                if let Some(addr) = line.strip_prefix("gRPC address :") {
                    grpc = Some(addr.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("Dashboard    :") {
                    let url = rest.split_whitespace().next().expect("a dashboard URL").to_string();
                    return (grpc.expect("the gRPC address is printed first"), url);
                }
            }
            panic!("sandboxd dev exited before printing its addresses");
        })
        .await
        .expect("sandboxd dev printed its addresses within 120 s");
        DevProcess { child, _stdout: lines, grpc, dashboard }
    }

    /// SIGTERM drains `sandboxd dev` and stops what it started; it must exit cleanly.
    pub async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "sandboxd dev exited with {status}");
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let Some(pid) = self.child.id() else { return };
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
