//! `[isolation]`: settings of per-sandbox PostgreSQL roles and Redis ACL users (the template
//! options `postgres_role` and `redis_acl` turn them on).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    /// `CONNECTION LIMIT` of each sandbox's login role.
    pub role_connection_limit: u32,
    /// Where workers reach PostgreSQL, as a URL without credentials (host, port, database and
    /// options such as `sslmode`), for the DSN GetConnectionDetails returns. Unset: sandboxd's
    /// own `database.url` with its credentials removed.
    pub worker_database_url: Option<String>,
    /// Where workers reach Redis, as a URL without credentials. Unset: `redis.url` with its
    /// credentials removed.
    pub worker_redis_url: Option<String>,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        Self { role_connection_limit: 20, worker_database_url: None, worker_redis_url: None }
    }
}

impl IsolationConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.role_connection_limit == 0 {
            problems.push("isolation.role_connection_limit must be greater than 0".to_string());
        }
        let urls = [
            ("isolation.worker_database_url", &self.worker_database_url),
            ("isolation.worker_redis_url", &self.worker_redis_url),
        ];
        for (name, url) in urls {
            let Some(url) = url else { continue };
            match url.split_once("://") {
                None => problems.push(format!("{name} must be a URL (scheme://host...)")),
                Some((_, rest)) if rest.split(['/', '?']).next().unwrap_or("").contains('@') => {
                    problems.push(format!(
                        "{name} must not hold credentials (each sandbox gets its own)"
                    ));
                }
                Some(_) => {}
            }
        }
        problems
    }
}

/// Where workers reach PostgreSQL and Redis (URLs without credentials), and the one place
/// where a sandbox's DSNs are put together.
#[derive(Debug, Clone)]
pub struct WorkerEndpoints {
    database: String,
    redis: String,
    pub role_connection_limit: u32,
}

impl WorkerEndpoints {
    /// From `[isolation]`, falling back to sandboxd's own URLs with their credentials removed.
    pub fn new(config: &IsolationConfig, database_url: &str, redis_url: &str) -> Self {
        let pick = |configured: &Option<String>, own: &str| {
            configured.clone().unwrap_or_else(|| without_credentials(own))
        };
        Self {
            database: pick(&config.worker_database_url, database_url),
            redis: pick(&config.worker_redis_url, redis_url),
            role_connection_limit: config.role_connection_limit,
        }
    }

    /// `postgres://<role>:<password>@<host>/<database>?<options>`; without `:<password>` when
    /// the password is withheld.
    pub fn database_dsn(&self, role: &str, password: Option<&Secret>) -> Secret {
        with_credentials(&self.database, role, password)
    }

    /// `redis://<user>:<password>@<host>/`; without `:<password>` when it is withheld.
    pub fn redis_dsn(&self, user: &str, password: Option<&Secret>) -> Secret {
        with_credentials(&self.redis, user, password)
    }
}

/// `url` without a `user[:password]@` part. Text that is not a URL is returned empty, so a
/// malformed configured URL never leaks into a DSN whole.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return String::new() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{tail}")
}

/// `base` (a URL without credentials) with `user` and, when given, `password` in it. Names and
/// passwords sandboxd makes are `[a-z0-9_]`, so nothing needs escaping.
fn with_credentials(base: &str, user: &str, password: Option<&Secret>) -> Secret {
    let Some((scheme, rest)) = base.split_once("://") else { return Secret::default() };
    let userinfo = match password {
        Some(password) => format!("{user}:{}", password.expose()),
        None => user.to_string(),
    };
    Secret::new(format!("{scheme}://{userinfo}@{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_carry_the_sandbox_credentials_only() {
        let config = IsolationConfig::default();
        let endpoints = WorkerEndpoints::new(
            &config,
            "postgres://sandboxd:hunter2@db:5432/control?sslmode=require",
            "redis://:redispw@cache:6379",
        );
        let password = Secret::new("abc123");
        assert_eq!(
            endpoints.database_dsn("sandbox_1", Some(&password)).expose(),
            "postgres://sandbox_1:abc123@db:5432/control?sslmode=require"
        );
        assert_eq!(endpoints.redis_dsn("sandbox_1", None).expose(), "redis://sandbox_1@cache:6379");
        assert_eq!(without_credentials("not a url"), "");
    }

    #[test]
    fn worker_urls_with_credentials_are_refused() {
        let config = IsolationConfig {
            worker_database_url: Some("postgres://app:pw@db/x".into()),
            ..IsolationConfig::default()
        };
        assert_eq!(config.problems().len(), 1);
    }
}
