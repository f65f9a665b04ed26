//! `[git]`: where sandboxd keeps its mirrors, how pushes lock and retry, and the credentials of
//! remotes.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitSettings {
    /// sandboxd's own bare mirror of every repository a template names, one per repository
    /// (`<mirror_dir>/<hash of the URL>.git`). Only sandboxd reads and writes it: it is where
    /// git talks to remotes, with the credentials below, outside every sandbox.
    pub mirror_dir: PathBuf,
    /// Lease of the `git_push:<repo>:<branch>` lock a push holds; renewed before every step.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// How long a push waits for that lock; below `server.request_timeout`.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// Push attempts when the remote branch moved on (non-fast-forward) before giving up.
    pub max_push_attempts: u32,
    /// Pause before the second attempt; it doubles each time, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Run time limit of each git command sandboxd runs against a remote or a mirror.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Largest bundle of commits moved between a mirror and a workspace (clone, pull, push).
    pub max_bundle_bytes: usize,
    /// Author of commits when a request names none.
    pub author_name: String,
    pub author_email: String,
    /// Credentials of remotes, chosen by the longest matching URL prefix. They reach git
    /// through `GIT_ASKPASS` only, never through a URL, a command line or a log line.
    pub credentials: Vec<GitCredential>,
}

impl Default for GitSettings {
    fn default() -> Self {
        Self {
            mirror_dir: PathBuf::from("/var/lib/sandboxd/git"),
            lock_ttl: Duration::from_secs(30),
            lock_wait: Duration::from_secs(45),
            max_push_attempts: 5,
            retry_backoff: Duration::from_millis(50),
            command_timeout: Duration::from_secs(120),
            max_bundle_bytes: 512 << 20,
            author_name: "sandboxd".into(),
            author_email: "sandboxd@localhost".into(),
            credentials: Vec::new(),
        }
    }
}

impl GitSettings {
    /// Problems with the values, named as in `[git]`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.mirror_dir.is_absolute() {
            problems.push("git.mirror_dir must be an absolute path".to_string());
        }
        for (name, value) in [
            ("git.lock_ttl", self.lock_ttl),
            ("git.lock_wait", self.lock_wait),
            ("git.command_timeout", self.command_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if self.max_push_attempts == 0 {
            problems.push("git.max_push_attempts must be greater than 0".to_string());
        }
        for (index, credential) in self.credentials.iter().enumerate() {
            if credential.url_prefix.is_empty() {
                problems.push(format!("git.credentials[{index}].url_prefix must not be empty"));
            }
            if credential.password.expose().is_empty() && credential.password_env.is_empty() {
                problems.push(format!("git.credentials[{index}] needs password or password_env"));
            }
        }
        problems
    }

    /// The credential for `url`: the one with the longest matching `url_prefix`.
    pub fn credential_for(&self, url: &str) -> Option<&GitCredential> {
        self.credentials
            .iter()
            .filter(|credential| url.starts_with(&credential.url_prefix))
            .max_by_key(|credential| credential.url_prefix.len())
    }
}

/// The user name and password (or token) of remotes under one URL prefix.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitCredential {
    /// e.g. `https://git.example.com/team/`.
    pub url_prefix: String,
    pub username: String,
    /// The password or token itself...
    pub password: Secret,
    /// ...or the name of the environment variable holding it (read when it is used).
    pub password_env: String,
}

impl GitCredential {
    /// The password, from the config or the environment; empty when the variable is unset.
    pub fn password(&self) -> Secret {
        if !self.password.expose().is_empty() {
            return self.password.clone();
        }
        Secret::new(std::env::var(&self.password_env).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(prefix: &str, password: &str) -> GitCredential {
        GitCredential {
            url_prefix: prefix.into(),
            username: "bot".into(),
            password: Secret::new(password),
            password_env: String::new(),
        }
    }

    #[test]
    fn the_longest_matching_prefix_wins_and_passwords_never_print() {
        let settings = GitSettings {
            credentials: vec![
                credential("https://git.example.com/", "general-secret"),
                credential("https://git.example.com/team/", "team-secret"),
            ],
            ..GitSettings::default()
        };
        let team = settings.credential_for("https://git.example.com/team/app.git").unwrap();
        assert_eq!(team.password().expose(), "team-secret");
        let other = settings.credential_for("https://git.example.com/other.git").unwrap();
        assert_eq!(other.password().expose(), "general-secret");
        assert!(settings.credential_for("https://elsewhere.example.com/x.git").is_none());
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("team-secret") && !printed.contains("general-secret"),
            "{printed}"
        );
    }

    #[test]
    fn a_credential_needs_a_password_source() {
        let settings = GitSettings {
            credentials: vec![credential("https://x/", "")],
            ..GitSettings::default()
        };
        assert_eq!(settings.problems(), ["git.credentials[0] needs password or password_env"]);
    }
}
