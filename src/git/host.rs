//! git run by sandboxd itself, on the host, in its own mirrors (never in a workspace: a
//! workspace's repository configuration is the sandbox's and can name programs to run).
//!
//! Every command gets a cleared environment, no system or global configuration, no terminal
//! prompt, hooks off, and — when the remote has a configured credential — `GIT_ASKPASS`
//! pointing at a script that prints the user name and password from two environment
//! variables of that one git process. The secret is thus in neither the URL, nor the command
//! line, nor any log line; only root can read another process's environment.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::io::AsyncWriteExt;

use super::settings::GitCredential;
use crate::error::{Error, Result};

/// What a finished command printed.
pub(crate) struct Output {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_line(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
}

/// Runs git in one directory with the hardened environment above.
pub(crate) struct HostGit<'a> {
    pub dir: &'a Path,
    pub askpass: &'a Path,
    pub credential: Option<&'a GitCredential>,
    pub timeout: Duration,
}

impl HostGit<'_> {
    /// Runs `git <args>`; a failure to start or a timeout is an error, a non-zero exit is not.
    pub async fn run<S: AsRef<OsStr>>(&self, args: &[S], stdin: Option<&[u8]>) -> Result<Output> {
        let printable: Vec<_> = args.iter().map(|arg| arg.as_ref().to_string_lossy()).collect();
        tracing::debug!(dir = %self.dir.display(), args = ?printable, with_credential = self.credential.is_some(), "git on the host");
        let mut command = tokio::process::Command::new("git");
        command
            .args(["-c", "core.hooksPath=/dev/null", "-c", "credential.helper="])
            .args(["-c", "protocol.file.allow=always", "-c", "transfer.fsckObjects=true"])
            .args(args)
            .current_dir(self.dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env("LANG", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(credential) = self.credential {
            command
                .env("GIT_ASKPASS", self.askpass)
                .env("SANDBOXD_GIT_USERNAME", &credential.username)
                .env("SANDBOXD_GIT_PASSWORD", credential.password().expose());
        }
        let mut child = command.spawn().map_err(|error| {
            Error::Internal(anyhow::anyhow!("cannot start git on the host: {error}"))
        })?;
        let pipe = child.stdin.take();
        let feed = async {
            if let (Some(bytes), Some(mut pipe)) = (stdin, pipe) {
                // A git that exits early closes the pipe; its exit status tells what went wrong.
                let _ = pipe.write_all(bytes).await;
            }
        };
        let run = async {
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| Error::DeadlineExceeded {
                dependency: "git remote",
                source: anyhow::anyhow!("git took longer than git.command_timeout"),
            })?
            .map_err(|error| Error::Internal(anyhow::anyhow!("git on the host: {error}")))?;
        Ok(Output {
            success: output.status.success(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Writes the askpass script (once) into `dir`, which only root can enter.
pub(crate) fn write_askpass(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("askpass.sh");
    let script = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$SANDBOXD_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$SANDBOXD_GIT_PASSWORD\" ;;\nesac\n";
    let temp = dir.join(format!(".askpass.{}", std::process::id()));
    std::fs::write(&temp, script)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o700))?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}
