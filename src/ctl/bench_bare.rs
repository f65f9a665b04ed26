//! `sandboxctl bench-bare-server` (hidden): a bare tonic server with nothing but
//! `grpc.health.v1.Health` from `tonic-health` — no interceptors, no timeout or concurrency
//! layers, no tracing — as the ceiling `sandboxctl bench resolve --bare-addr` compares sandboxd
//! with, so the cost of sandboxd's per-RPC layers (auth, tracing, readiness) shows.
//!
//! It is a subcommand of the client binary rather than a binary of its own: sandboxctl already
//! links tonic's server and tonic-health through the library, so this adds no link step to
//! every `cargo build --bins`, and it is the same tonic build as sandboxd's by construction.
//! It runs on the same `#[tokio::main]` runtime as sandboxd (one worker per CPU it may use, so
//! `taskset -c 0` gives it one worker, like a pinned sandboxd) and, like sandboxd, sets
//! TCP_NODELAY: only the per-RPC layers differ.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

#[derive(Args)]
pub struct BareServerArgs {
    /// Address to listen on; port 0 picks a free one. The bound address is printed as the
    /// first line on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Serves until killed. `Health/Check` with service "" answers SERVING (tonic-health's default).
pub async fn serve(args: BareServerArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("{}", listener.local_addr()?);
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
        .context("bare gRPC server failed")
}
