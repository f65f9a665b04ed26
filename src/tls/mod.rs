//! TLS: the gRPC listener's certificates (reloaded without a restart), and the PEM files that
//! sandboxd's own clients of PostgreSQL and Redis trust or present.
//!
//! Every rustls configuration here uses the `ring` provider. The dependency tree enables both of
//! rustls' providers, and libraries that call `ClientConfig::builder()` (redis-rs does) panic
//! unless a process default is installed, so [`install_crypto_provider`] runs before any TLS is
//! configured.

pub mod client;
pub mod config;
pub mod grpc_client;
pub mod listener;
pub mod pem;
pub mod reload;

pub use config::ServerTlsConfig;
pub use listener::TlsIncoming;
pub use reload::ReloadingTls;

/// Installs `ring` as the process-wide rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider used for every configuration sandboxd builds itself.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
