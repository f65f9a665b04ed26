//! sandboxd: a gRPC control plane for isolated, time-limited sandboxes.
//!
//! Layout: `api/` adapts gRPC to the domain (`sandbox/`), which talks to PostgreSQL only through
//! `store/` and to Redis through `isolation/`. `server.rs` assembles the tonic server;
//! `error.rs` holds the one error type and its single mapping to gRPC statuses.
// Lifecycle futures (create → claim → teardown) nest deeply enough to need more than 128.
#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod artifacts;
pub mod auth;
pub mod bearer;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod error;
pub mod events;
pub mod git;
pub mod isolation;
pub mod lock;
pub mod metrics;
pub mod objectstore;
pub mod pool;
pub mod proto;
pub mod rate_limit;
mod readiness;
pub mod reconcile;
pub mod router;
pub mod routing;
pub mod runtime;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod web;
pub mod wire;
pub mod workspace;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// First SIGINT/SIGTERM cancels `token` (graceful drain); a second one exits at once.
pub fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
        shutdown_signal().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
}
