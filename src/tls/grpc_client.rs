//! Client side of the gRPC listener's TLS, for `sandboxctl` and the event router: an `https://`
//! address (or any TLS file) connects over TLS, verifying the server against `ca_file` or the
//! system trust store, and presents `cert_file`/`key_file` to a server that requires mTLS.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcClientTls {
    /// PEM CA certificates trusted for sandboxd's certificate [default: the system's].
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a server with `server.tls.client_ca_file` (mTLS).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl GrpcClientTls {
    fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// An endpoint for `addr` (`http://` plaintext, `https://` TLS), with `tls` applied.
pub fn endpoint(addr: &str, tls: &GrpcClientTls) -> anyhow::Result<Endpoint> {
    super::install_crypto_provider();
    let https = addr.starts_with("https://");
    if tls.any() && !https {
        bail!("TLS certificates are given but the address {addr:?} is not https://");
    }
    let endpoint = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("invalid address {addr:?}"))?;
    if !https {
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_file {
        Some(path) => {
            config.ca_certificate(Certificate::from_pem(super::pem::read("CA file", path)?))
        }
        None => config.with_native_roots(),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert = super::pem::read("client certificate", cert)?;
            let key = super::pem::read("client key", key)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => bail!("a client certificate needs both the certificate and the key file"),
    }
    endpoint.tls_config(config).context("setting up TLS")
}
