//! `sandboxctl mcp --listen ADDR`: the same MCP server over streamable HTTP at
//! `http://ADDR/mcp`. Each HTTP request's `Authorization: Bearer <key>` is forwarded to
//! sandboxd as that request's API key, so every client acts as itself and the process's own
//! `SANDBOXD_API_KEY` is never used (a request without a key gets sandboxd's UNAUTHENTICATED).
//! `Host` headers are checked against the loopback names plus the listen address (rmcp's guard
//! against DNS rebinding). Runs until Ctrl-C or SIGTERM; open connections are then closed.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::{net::TcpListener, task::JoinSet};

use super::SandboxdMcp;
use crate::ctl::Connection;

pub(crate) async fn serve_http(connection: &Connection, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    let server = SandboxdMcp::new(connection, true);
    let mut config = StreamableHttpServerConfig::default();
    if !local.ip().is_loopback() {
        config.allowed_hosts.push(local.ip().to_string());
    }
    let stop = config.cancellation_token.clone();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let service = TowerToHyperService::new(service);
    // The address line is the one thing printed (stderr; stdout stays unused as in stdio mode).
    eprintln!("sandboxctl mcp: streamable HTTP on http://{local}/mcp");
    let mut connections = JoinSet::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.context("accepting a connection")?,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        let service = service.clone();
        connections.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            // A client that hangs up mid-request is its own business.
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
    stop.cancel();
    connections.shutdown().await;
    Ok(())
}
