//! The listener's current rustls configuration, swapped when its files change or on SIGHUP.
//!
//! Each accepted connection takes the configuration current at that moment, so a reload applies
//! to new connections while existing ones keep the certificate they were set up with. A reload
//! that fails (unreadable or invalid PEM, a key that does not match the certificate) keeps the
//! configuration in use and logs why, once per distinct content of the files.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use rustls::{ServerConfig, server::WebPkiClientVerifier};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{ServerTlsConfig, pem};

/// What a reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are as last loaded (or as last refused).
    Unchanged,
    Reloaded,
    /// The files changed but do not form a usable configuration; the old one stays.
    Refused,
}

pub struct ReloadingTls {
    settings: ServerTlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// Hash of the file contents last tried, loaded or refused.
    last_seen: Mutex<[u8; 32]>,
    reloaded: AtomicU64,
    refused: AtomicU64,
}

/// The files' contents, read together.
struct FileSet {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl FileSet {
    fn read(settings: &ServerTlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            cert: pem::read("server.tls.cert_file", &settings.cert_file)?,
            key: pem::read("server.tls.key_file", &settings.key_file)?,
            client_ca: match &settings.client_ca_file {
                Some(path) => Some(pem::read("server.tls.client_ca_file", path)?),
                None => None,
            },
        })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map(Vec::as_slice).unwrap_or_default();
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }

    fn server_config(&self, settings: &ServerTlsConfig) -> anyhow::Result<ServerConfig> {
        let certs = pem::certificates("server.tls.cert_file", &settings.cert_file, &self.cert)?;
        let key = pem::private_key("server.tls.key_file", &settings.key_file, &self.key)?;
        let provider = super::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?;
        let builder = match (&settings.client_ca_file, &self.client_ca) {
            (Some(path), Some(bytes)) => {
                let roots = pem::roots("server.tls.client_ca_file", path, bytes)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .context("server.tls.client_ca_file: cannot verify clients with it")?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "server.tls.key_file {} does not fit server.tls.cert_file {}",
                settings.key_file.display(),
                settings.cert_file.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

impl ReloadingTls {
    /// Loads the files; fails (and so the server does not start) when they are unusable.
    pub fn load(settings: ServerTlsConfig) -> anyhow::Result<Self> {
        let files = FileSet::read(&settings)?;
        let config = files.server_config(&settings)?;
        Ok(Self {
            last_seen: Mutex::new(files.fingerprint()),
            current: RwLock::new(Arc::new(config)),
            settings,
            reloaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The configuration a connection accepted now uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("TLS config lock poisoned").clone()
    }

    /// Reloads that replaced the configuration, and changed file sets refused, since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.reloaded.load(Ordering::Acquire), self.refused.load(Ordering::Acquire))
    }

    /// How long a client may take to finish its handshake.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.settings.handshake_timeout
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    /// Reloads when the files' contents differ from the last ones seen; `force` tries again even
    /// when they do not (SIGHUP).
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let files = match FileSet::read(&self.settings) {
            Ok(files) => files,
            Err(error) => {
                // A file being replaced may be missing for a moment: the next check sees it.
                tracing::error!(
                    error = format!("{error:#}"),
                    "TLS reload failed; still serving the previous certificate"
                );
                self.refused.fetch_add(1, Ordering::AcqRel);
                return ReloadOutcome::Refused;
            }
        };
        let fingerprint = files.fingerprint();
        {
            let mut last_seen = self.last_seen.lock().expect("TLS fingerprint lock poisoned");
            if *last_seen == fingerprint && !force {
                return ReloadOutcome::Unchanged;
            }
            *last_seen = fingerprint;
        }
        match files.server_config(&self.settings) {
            Ok(config) => {
                *self.current.write().expect("TLS config lock poisoned") = Arc::new(config);
                tracing::info!(cert_file = %self.settings.cert_file.display(), "TLS certificate reloaded; new connections use it");
                self.reloaded.fetch_add(1, Ordering::AcqRel);
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "TLS reload failed; still serving the previous certificate"
                );
                self.refused.fetch_add(1, Ordering::AcqRel);
                ReloadOutcome::Refused
            }
        }
    }

    /// Checks the files every `reload_interval` and on SIGHUP, until `shutdown`. The SIGHUP
    /// handler is installed before this returns, so a SIGHUP sent afterwards reloads (and no
    /// longer terminates the process).
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let hangup = hangup_signal();
        tokio::spawn(self.run(hangup, shutdown))
    }

    async fn run(self: Arc<Self>, mut hangup: Hangup, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.settings.reload_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            let force = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => false,
                Some(()) = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    true
                }
            };
            self.reload(force);
        }
    }
}

/// Without `[server.tls]` there is nothing to reload: SIGHUP is logged instead of ending the
/// process (its default action), so a reload sent by habit does not take the server down.
pub fn spawn_hangup_notice(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let mut hangup = hangup_signal();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: nothing to reload ([server.tls] is not set)");
                }
            }
        }
    })
}

type Hangup = Option<tokio::signal::unix::Signal>;

fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; TLS files are still reloaded on change");
            None
        }
    }
}

/// The next SIGHUP; never resolves without a handler.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
