//! How sandboxd connects to PostgreSQL: the URL plus `[database.tls]`, with certificate
//! verification on by default. Every pool and connection sandboxd opens (the server's pool,
//! `migrate`, `keys`, creating the database) is built from [`connect_options`].
//!
//! sqlx's `sslmode=require` (like libpq's) encrypts without checking the certificate, and its
//! default `prefer` may silently fall back to plaintext. sandboxd therefore decides the mode:
//! - `sslmode=disable`: plaintext, as asked;
//! - `verify-ca` / `verify-full`: as asked;
//! - `require`: `verify-full` (unless `database.tls.verify = false`);
//! - `prefer`, `allow` or no `sslmode`: `verify-full` when the host is not loopback or when
//!   `database.tls.ca_file` is set; sqlx's `prefer` for a loopback host without a CA file (a
//!   local server, where there is no network path to protect).

use std::{net::IpAddr, str::FromStr};

use anyhow::Context;
use sqlx::{
    ConnectOptions,
    postgres::{PgConnectOptions, PgSslMode},
};

use crate::config::DatabaseConfig;

/// Connection options for `config`, with the TLS mode and files applied.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let url = config.url.expose();
    let options = PgConnectOptions::from_str(url)
        .context("database.url is not a valid PostgreSQL URL")?
        .application_name("sandboxd")
        .log_statements(tracing::log::LevelFilter::Debug);
    let local = is_loopback(&options);
    let mode = effective_mode(url_ssl_mode(url).as_deref(), config, local)?;
    let mut options = options.ssl_mode(mode);
    let files = config.tls.read("database")?;
    if let Some(ca) = files.ca {
        options = options.ssl_root_cert_from_pem(ca);
    }
    if let (Some(cert), Some(key)) = (files.client_cert, files.client_key) {
        options = options.ssl_client_cert_from_pem(cert).ssl_client_key_from_pem(key.expose());
    }
    Ok(options)
}

fn effective_mode(
    asked: Option<&str>,
    config: &DatabaseConfig,
    local: bool,
) -> anyhow::Result<PgSslMode> {
    let verify = config.tls.verify;
    let wants_verified = config.tls.ca_file.is_some() || !local;
    Ok(match asked {
        Some("disable") => PgSslMode::Disable,
        Some("verify-ca") => PgSslMode::VerifyCa,
        Some("verify-full") => PgSslMode::VerifyFull,
        Some("require") if verify => PgSslMode::VerifyFull,
        Some("require") => PgSslMode::Require,
        Some("prefer" | "allow") | None if verify && wants_verified => PgSslMode::VerifyFull,
        Some("allow") => PgSslMode::Allow,
        Some("prefer") | None => PgSslMode::Prefer,
        Some(other) => anyhow::bail!(
            "database.url: unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca or verify-full)"
        ),
    })
}

/// The `sslmode` (or `ssl-mode`) query parameter of a PostgreSQL URL, if present.
fn url_ssl_mode(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        matches!(key, "sslmode" | "ssl-mode").then(|| value.to_ascii_lowercase())
    })
}

/// A Unix socket, `localhost` or a loopback address.
fn is_loopback(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretUrl;

    fn mode_for(url: &str, tweak: impl FnOnce(&mut DatabaseConfig)) -> PgSslMode {
        let mut config = DatabaseConfig { url: SecretUrl::new(url), ..DatabaseConfig::default() };
        tweak(&mut config);
        let options = PgConnectOptions::from_str(url).unwrap();
        effective_mode(url_ssl_mode(url).as_deref(), &config, is_loopback(&options)).unwrap()
    }

    #[test]
    fn remote_servers_are_verified_unless_told_otherwise() {
        let remote = "postgres://app@db.example.com/sandboxd";
        assert!(matches!(mode_for(remote, |_| {}), PgSslMode::VerifyFull));
        let require = "postgres://app@db.example.com/sandboxd?sslmode=require";
        assert!(matches!(mode_for(require, |_| {}), PgSslMode::VerifyFull));
        assert!(matches!(mode_for(require, |c| c.tls.verify = false), PgSslMode::Require));
        let disabled = "postgres://app@db.example.com/sandboxd?sslmode=disable";
        assert!(matches!(mode_for(disabled, |_| {}), PgSslMode::Disable));
    }

    #[test]
    fn a_local_server_keeps_the_default_unless_a_ca_is_given() {
        let local = "postgres://postgres@127.0.0.1:5432/sandboxd";
        assert!(matches!(mode_for(local, |_| {}), PgSslMode::Prefer));
        assert!(matches!(mode_for("postgres://postgres@localhost/x", |_| {}), PgSslMode::Prefer));
        let with_ca = |c: &mut DatabaseConfig| c.tls.ca_file = Some("/ca.pem".into());
        assert!(matches!(mode_for(local, with_ca), PgSslMode::VerifyFull));
        let require = "postgres://postgres@127.0.0.1:5432/sandboxd?sslmode=require";
        assert!(matches!(mode_for(require, |_| {}), PgSslMode::VerifyFull));
    }
}
