//! `[server.tls]`: the gRPC listener's certificate, key and optional client CA (mTLS).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates. When set, every client must present a certificate signed by one of
    /// them (mTLS); API keys are still required on top.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes (their contents are compared); a changed
    /// set is loaded for new connections. SIGHUP reloads at once.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A client that has not finished its TLS handshake within this time is disconnected.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: None,
            reload_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerTlsConfig {
    /// What is wrong with these settings, as `validate` lines. The files are read (and checked
    /// to form a usable configuration) when the server starts.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cert_file.as_os_str().is_empty() {
            problems.push("server.tls.cert_file must be set when [server.tls] is".to_string());
        }
        if self.key_file.as_os_str().is_empty() {
            problems.push("server.tls.key_file must be set when [server.tls] is".to_string());
        }
        if self.reload_interval.is_zero() {
            problems.push("server.tls.reload_interval must be greater than 0".to_string());
        }
        if self.handshake_timeout.is_zero() {
            problems.push("server.tls.handshake_timeout must be greater than 0".to_string());
        }
        problems
    }
}

impl crate::config::Config {
    /// Validation of the TLS settings of the listener and of the PostgreSQL and Redis clients,
    /// and of the plaintext rule: a non-loopback `server.listen` needs `[server.tls]` or
    /// `server.allow_plaintext = true`.
    pub(crate) fn transport_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.server.tls {
            Some(tls) => problems.extend(tls.problems()),
            None if !self.server.listen.ip().is_loopback() && !self.server.allow_plaintext => {
                problems.push(format!(
                    "server.listen {} is not a loopback address and [server.tls] is not set: \
                     configure server.tls.cert_file and server.tls.key_file, or set \
                     server.allow_plaintext = true when something else encrypts the traffic \
                     (e.g. a service mesh sidecar)",
                    self.server.listen
                ));
            }
            None => {}
        }
        if let Some(dashboard) = self.dashboard.listen
            && self.server.tls.is_none()
            && !dashboard.ip().is_loopback()
            && !self.server.allow_plaintext
        {
            problems.push(format!(
                "dashboard.listen {dashboard} is not a loopback address and [server.tls] is not \
                 set: the dashboard carries API keys, so configure server.tls (the dashboard \
                 uses the same certificates), or set server.allow_plaintext = true when \
                 something else encrypts the traffic"
            ));
        }
        problems.extend(self.database.tls.problems("database"));
        problems.extend(self.redis.tls.problems("redis"));
        let redis_url = self.redis.url.expose();
        let redis_tls = crate::isolation::redis_tls::is_tls_url(redis_url);
        if self.redis.tls.is_configured() && !redis_tls {
            problems.push(
                "[redis.tls] files are set but redis.url is not rediss://: use a rediss:// URL"
                    .to_string(),
            );
        }
        if !self.redis.tls.verify {
            problems.push(
                "redis.tls.verify = false is not supported: give redis.tls.ca_file instead"
                    .to_string(),
            );
        }
        if redis_tls && redis_url.contains('#') {
            problems.push(
                "redis.url: URL fragments such as #insecure are not supported (certificates are always verified)"
                    .to_string(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandboxd.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path)).unwrap()
    }

    #[test]
    fn a_plaintext_dashboard_is_refused_off_loopback_unless_allowed_or_tls_is_set() {
        let mut config = Config::default();
        config.dashboard.listen = Some("127.0.0.1:8090".parse().unwrap());
        assert!(config.transport_problems().is_empty(), "a loopback dashboard is fine");
        config.dashboard.listen = Some("0.0.0.0:8090".parse().unwrap());
        let problems = config.transport_problems();
        assert!(problems.iter().any(|p| p.contains("dashboard.listen")), "{problems:?}");
        config.server.allow_plaintext = true;
        assert!(config.transport_problems().is_empty());

        let with_tls = load(
            "[dashboard]\nlisten = \"0.0.0.0:8090\"\n[server.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
        );
        assert!(with_tls.transport_problems().is_empty(), "{:?}", with_tls.transport_problems());
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed_or_tls_is_set() {
        let mut config = Config::default();
        assert!(config.transport_problems().is_empty(), "loopback plaintext is fine");
        config.server.listen = "0.0.0.0:50051".parse().unwrap();
        let problems = config.transport_problems();
        assert!(problems.iter().any(|p| p.contains("allow_plaintext")), "{problems:?}");
        config.server.allow_plaintext = true;
        assert!(config.transport_problems().is_empty());

        let with_tls = load(
            "[server]\nlisten = \"0.0.0.0:50051\"\n[server.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
        );
        assert!(with_tls.transport_problems().is_empty(), "{:?}", with_tls.transport_problems());
        let tls = with_tls.server.tls.expect("[server.tls] parsed");
        assert_eq!(tls.reload_interval, std::time::Duration::from_secs(5));
        assert!(tls.client_ca_file.is_none());
    }

    #[test]
    fn tls_tables_parse_and_are_checked() {
        let config = load(
            "[database.tls]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\n\
             [redis]\nurl = \"redis://127.0.0.1:6379\"\n[redis.tls]\nca_file = \"/ca.pem\"\n\
             [rate_limit.member]\nper_second = 5\nburst = 10\n",
        );
        let problems = config.transport_problems();
        assert!(problems.iter().any(|p| p.contains("database.tls.cert_file and")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("not rediss://")), "{problems:?}");
        assert_eq!(config.rate_limit.member.map(|limit| limit.burst), Some(Some(10)));
        assert!(config.rate_limit.owner.is_none(), "roles without a table are unlimited");
    }
}
