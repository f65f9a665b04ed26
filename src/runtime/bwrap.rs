//! The command line that runs one command of a sandbox, under bubblewrap or (unsafe) without.
//!
//! Under bubblewrap every command gets new mount, PID, IPC, UTS, user and cgroup namespaces
//! and, unless the template allows the host network, a network namespace with only loopback.
//! Its filesystem is built from nothing: the configured system paths read-only, a fresh
//! `/proc`, a minimal `/dev`, a private `/tmp`, and the sandbox's workspace read-write at
//! `/workspace`; everything else is read-only. Nothing else of the host is visible: not other workspaces, not sandboxd's
//! files, not `/home` or `/root`. `--die-with-parent` ends the command when sandboxd dies, and
//! the PID namespace ends every process the command started (daemonized ones included) when
//! the command itself ends or is killed.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

use super::{ExecSpec, limits::Rlimits};
use crate::{
    config::RuntimeConfig,
    template::{NetworkAccess, ProcessSettings},
};

/// Where the workspace appears inside the sandbox.
pub(super) const SANDBOX_WORKSPACE: &str = "/workspace";

/// How commands are isolated on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isolation {
    Bubblewrap,
    /// `runtime.unsafe_without_bubblewrap`: a plain child process in the workspace.
    Unsafe,
}

/// The uid and gid a sandbox's commands run as (sandboxd running as root), or `None` (they run
/// as sandboxd's own user).
pub(super) type RunAs = Option<(u32, u32)>;

pub(super) struct Invocation<'a> {
    pub config: &'a RuntimeConfig,
    pub isolation: Isolation,
    pub workspace: PathBuf,
    pub settings: &'a ProcessSettings,
    pub run_as: RunAs,
}

impl Invocation<'_> {
    /// The command, with piped stdio, a cleared environment, its own process group, the
    /// sandbox's uid and the template's limits. Not spawned.
    pub(super) fn command(&self, spec: &ExecSpec) -> Command {
        let mut command = match self.isolation {
            Isolation::Bubblewrap => self.bubblewrap(spec),
            Isolation::Unsafe => {
                let mut command = Command::new(&spec.argv[0]);
                command.args(&spec.argv[1..]).current_dir(self.workspace.join(&spec.working_dir));
                command
            }
        };
        command
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let rlimits = Rlimits::new(&self.settings.limits, self.run_as.is_some());
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe, on data
        // prepared before fork.
        unsafe {
            command.pre_exec(move || rlimits.apply());
        }
        command
    }

    /// `argv` with only the base environment, in the workspace root: the start-up probe and
    /// the baseline of `sandboxctl bench exec`.
    pub(super) fn bare_command(&self, argv: Vec<String>) -> Command {
        let spec = ExecSpec {
            argv,
            env: base_env(self.isolation, &self.workspace).into_iter().collect(),
            working_dir: String::new(),
            stdin: Vec::new(),
            // Not used to build the command (the exec driver enforces them).
            timeout: std::time::Duration::ZERO,
            max_output_bytes: 0,
        };
        self.command(&spec)
    }

    fn bubblewrap(&self, spec: &ExecSpec) -> Command {
        let mut command = Command::new(&self.config.bwrap);
        command.args(["--die-with-parent", "--new-session", "--unshare-all"]);
        if self.settings.network == NetworkAccess::Host {
            command.arg("--share-net");
        }
        command.args(["--hostname", "sandbox"]);
        for path in &self.config.system_paths {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        command.arg("--symlink").arg(target).arg(path);
                    }
                }
                Ok(_) => {
                    command.arg("--ro-bind").arg(path).arg(path);
                }
                Err(_) => {}
            }
        }
        let working_dir = PathBuf::from(SANDBOX_WORKSPACE).join(&spec.working_dir);
        command
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind"])
            .arg(&self.workspace)
            .arg(SANDBOX_WORKSPACE)
            // The root bubblewrap builds is a tmpfs: read-only, so only /workspace and /tmp
            // take writes.
            .args(["--remount-ro", "/"])
            .arg("--chdir")
            .arg(working_dir)
            .arg("--")
            .args(&spec.argv);
        command
    }
}

/// Environment every command gets before the template's, the request's and the sandbox's
/// own variables.
pub(super) fn base_env(isolation: Isolation, workspace: &Path) -> [(String, String); 4] {
    let home = match isolation {
        Isolation::Bubblewrap => SANDBOX_WORKSPACE.to_string(),
        Isolation::Unsafe => workspace.display().to_string(),
    };
    [
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), home),
        ("TMPDIR".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}
