//! A throwaway PostgreSQL cluster: `initdb` + `pg_ctl` from the machine's binaries, on 127.0.0.1
//! and a free port, with trust auth for the `postgres` superuser (sandboxd itself) and
//! SCRAM passwords for every other role (sandboxes' login roles, so their passwords matter), stopped (`pg_ctl stop -m fast`) on drop. PostgreSQL refuses to run
//! as root, so as root the cluster runs as the `postgres` user.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use super::redis_server::free_port;

/// Trust for `postgres` only; everyone else logs in with a SCRAM password.
const PG_HBA: &str = "\
local all postgres trust
host  all postgres 127.0.0.1/32 trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
";

pub struct ThrowawayPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
}

impl ThrowawayPostgres {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &[]).await
    }

    /// Starts it with extra server settings (`-c name=value`), e.g. `ssl=on` and its files;
    /// files they name inside `dir` are handed to the postgres user with the directory.
    pub async fn start_with(dir: &Path, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let data_dir = dir.join("data");
        std::fs::create_dir_all(dir)?;
        let as_root = is_root();
        if as_root {
            // The postgres user must own the cluster directory and reach it.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir), "chown")?;
            let mut ancestor = dir.parent();
            while let Some(path) = ancestor {
                make_traversable(path);
                ancestor = path.parent();
            }
        }
        let port = free_port()?;
        if !data_dir.join("PG_VERSION").exists() {
            let mut initdb = command(&bin_dir.join("initdb"), as_root);
            initdb.arg("-D").arg(&data_dir).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
            run(&mut initdb, "initdb")?;
            std::fs::write(data_dir.join("pg_hba.conf"), PG_HBA)
                .context("writing pg_hba.conf of the throwaway cluster")?;
        }
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            data_dir.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let mut pg_ctl = command(&bin_dir.join("pg_ctl"), as_root);
        pg_ctl
            .arg("-D")
            .arg(&data_dir)
            .args(["-o", &options, "-l"])
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        run(&mut pg_ctl, "pg_ctl start").with_context(|| {
            format!("see {} for PostgreSQL's own log", dir.join("postgres.log").display())
        })?;
        tracing::info!(port, "throwaway PostgreSQL started");
        Ok(Self { bin_dir, data_dir, port })
    }

    /// `pg_ctl restart -m fast`: every session is cut, the server comes back on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        let mut pg_ctl = command(&self.bin_dir.join("pg_ctl"), is_root());
        // The log file as at start: without one, the new postmaster would hold pg_ctl's output
        // pipe open and this call would never return. The other options are kept by pg_ctl.
        let log = self.data_dir.with_file_name("postgres.log");
        pg_ctl.arg("-D").arg(&self.data_dir).arg("-l").arg(log);
        pg_ctl.args(["-m", "fast", "-w", "-t", "60", "restart"]);
        run(&mut pg_ctl, "pg_ctl restart")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let mut pg_ctl = command(&self.bin_dir.join("pg_ctl"), is_root());
        pg_ctl.arg("-D").arg(&self.data_dir).args(["-m", "fast", "-w", "stop"]);
        if let Err(error) = run(&mut pg_ctl, "pg_ctl stop") {
            eprintln!("stopping the throwaway PostgreSQL failed: {error:#}");
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn make_traversable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o001 == 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o001));
        }
    }
}

fn command(binary: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Finds the newest `/usr/lib/postgresql/<version>/bin` (Debian keeps the server binaries off
/// PATH), else the directory of an `initdb` on PATH.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH").map(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("initdb")).find(|p| p.is_file())
    });
    match on_path.flatten() {
        Some(initdb) => Ok(initdb.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => bail!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package \
             `postgresql` (apt-get install postgresql), or set DATABASE_URL to a running server"
        ),
    }
}
