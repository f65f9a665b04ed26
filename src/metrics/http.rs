//! The metrics listener: `GET /metrics` answers the OpenMetrics text; anything else 404. Plain
//! HTTP/1.1 on its own address, so scrapers need no gRPC and the gRPC port exposes no metrics.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// The content type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` on `listener` until `shutdown`; connections are tracked and closed with it.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else { continue };
        let app = app.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(app.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}

async fn answer(
    app: Arc<App>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n"));
    }
    let templates: Vec<String> = app.templates.iter().map(|t| t.name.clone()).collect();
    match app.metrics.render(&app.store, &templates).await {
        Ok(text) => Ok(Response::builder()
            .header("content-type", OPENMETRICS)
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_default()),
        Err(error) => {
            tracing::warn!(%error, "metrics scrape failed");
            Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable: PostgreSQL is not answering\n",
            ))
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Binds the metrics listener.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics listener {address}"))
}
