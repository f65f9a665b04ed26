//! Reading certificates and private keys from PEM files, with errors that name the setting, the
//! file and the problem but never print what a key file contains.

use std::path::Path;

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The bytes of a PEM file.
pub fn read(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
}

/// Every certificate in `bytes`, read from `path` (a chain: the leaf first).
pub fn certificates(
    setting: &str,
    path: &Path,
    bytes: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("{setting} {}: not valid PEM: {error}", path.display()))?;
    if certificates.is_empty() {
        bail!("{setting} {}: no CERTIFICATE block found", path.display());
    }
    Ok(certificates)
}

/// The private key in `bytes` (PKCS#8, PKCS#1 or SEC1), read from `path`.
pub fn private_key(
    setting: &str,
    path: &Path,
    bytes: &[u8],
) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The parser's error names only the PEM structure, never key material.
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| {
        anyhow::anyhow!("{setting} {}: no usable private key: {error}", path.display())
    })
}

/// A trust store of the CA certificates in `bytes`, read from `path`.
pub fn roots(setting: &str, path: &Path, bytes: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(setting, path, bytes)? {
        roots.add(certificate).map_err(|error| {
            anyhow::anyhow!("{setting} {}: not a usable CA certificate: {error}", path.display())
        })?;
    }
    Ok(roots)
}
