//! `[database.tls]` and `[redis.tls]`: how sandboxd's own connections to PostgreSQL and Redis
//! are secured. Verification is on by default; see the README's "TLS and rate limits".

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CA certificates trusted for the server's certificate (instead of the default trust
    /// store). Setting it asks for verified TLS.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented to a server that asks for one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Verify the server's certificate and name. Turning it off (PostgreSQL only) keeps
    /// encryption but accepts any certificate: only for a server you reach over a trusted path.
    pub verify: bool,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self { ca_file: None, cert_file: None, key_file: None, verify: true }
    }
}

/// The files of a [`ClientTlsConfig`], read once.
#[derive(Default)]
pub struct ClientTlsFiles {
    pub ca: Option<Vec<u8>>,
    pub client_cert: Option<Vec<u8>>,
    pub client_key: Option<crate::secret::Secret>,
}

impl ClientTlsConfig {
    /// Validation lines for the `[<section>.tls]` table (the files are read at start).
    pub fn problems(&self, section: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(format!(
                "{section}.tls.cert_file and {section}.tls.key_file must be set together"
            ));
        }
        problems
    }

    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// Reads and checks the files; errors name the setting and the file, never key contents.
    pub fn read(&self, section: &str) -> anyhow::Result<ClientTlsFiles> {
        use super::pem;
        let mut files = ClientTlsFiles::default();
        if let Some(path) = &self.ca_file {
            let setting = format!("{section}.tls.ca_file");
            let bytes = pem::read(&setting, path)?;
            pem::roots(&setting, path, &bytes)?;
            files.ca = Some(bytes);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let cert_setting = format!("{section}.tls.cert_file");
            let bytes = pem::read(&cert_setting, cert)?;
            pem::certificates(&cert_setting, cert, &bytes)?;
            files.client_cert = Some(bytes);
            let key_setting = format!("{section}.tls.key_file");
            let bytes = pem::read(&key_setting, key)?;
            pem::private_key(&key_setting, key, &bytes)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{key_setting} {}: not PEM text", key.display()))?;
            files.client_key = Some(crate::secret::Secret::new(text));
        }
        Ok(files)
    }
}
