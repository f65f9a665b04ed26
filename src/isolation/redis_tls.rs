//! TLS to Redis: a `rediss://` URL connects over TLS, verifying the server's certificate and
//! name against `redis.tls.ca_file` (or the system trust store), and presents
//! `redis.tls.cert_file`/`key_file` when given. A `redis://` URL is plaintext; `[redis.tls]`
//! with it is refused by validation, so files meant for TLS are never silently unused.

use redis::{ConnectionInfo, TlsCertificates};

use crate::config::RedisConfig;

/// Whether `url` asks for TLS.
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// The certificates for a `rediss://` URL (`None` for plaintext).
pub fn certificates(config: &RedisConfig) -> anyhow::Result<Option<TlsCertificates>> {
    if !is_tls_url(config.url.expose()) {
        return Ok(None);
    }
    let files = config.tls.read("redis")?;
    let client_tls = match (files.client_cert, files.client_key) {
        (Some(client_cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key: key.expose().as_bytes().to_vec(),
        }),
        _ => None,
    };
    Ok(Some(TlsCertificates { client_tls, root_cert: files.ca }))
}

/// A client for `info`, over TLS with `certificates` when given.
pub fn client(
    info: ConnectionInfo,
    certificates: Option<TlsCertificates>,
) -> anyhow::Result<redis::Client> {
    let client = match certificates {
        Some(certificates) => {
            // redis-rs builds its rustls configuration with the process default provider.
            crate::tls::install_crypto_provider();
            redis::Client::build_with_tls(info, certificates)
        }
        None => redis::Client::open(info),
    };
    client.map_err(|error| anyhow::anyhow!("invalid redis.url or [redis.tls]: {error}"))
}
