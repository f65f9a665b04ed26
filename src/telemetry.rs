//! Logging and tracing setup. One span per RPC is opened by the server (see `server.rs`);
//! store methods add their own `store.*` spans.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber; `RUST_LOG` overrides the configured filter. Safe to call
/// more than once (later calls are ignored), which tests rely on.
pub fn init(config: &TelemetryConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(true)).try_init(),
    };
    // An already-installed subscriber (tests, embedding) is fine.
    drop(result);
}
