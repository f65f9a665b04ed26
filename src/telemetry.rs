//! Logging and tracing. One span per RPC is opened by the server (`server.rs`, [`rpc_span`]);
//! it continues the caller's trace when the request carries a W3C `traceparent`, and records
//! the trace id as its `trace_id` field (so JSON log lines carry it). Store methods add
//! `store.*` spans, Redis work `redis.command`, object-store requests `s3.*`. With
//! `telemetry.otlp_endpoint` set, spans are exported over OTLP (gRPC) to an OpenTelemetry
//! collector.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::{
    propagation::Extractor,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes exported spans on shutdown.
#[must_use = "dropping the guard without `shutdown` may lose the last spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter, waiting at most five seconds.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        if tokio::time::timeout(Duration::from_secs(5), flush).await.is_err() {
            eprintln!("telemetry: flushing spans timed out");
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the configured filter. A subscriber
/// installed earlier (tests, embedding) is kept.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let provider = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&config.otlp_endpoint)
            .build()
            .context("building the OTLP span exporter")?;
        let resource = Resource::builder().with_service_name("sandboxd").build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("sandboxd")));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let installed = match config.log_format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(true)).try_init(),
    };
    drop(installed);
    Ok(TelemetryGuard { provider })
}

/// Reads propagation headers (`traceparent`, `tracestate`) from a request's headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one RPC: a child of the caller's span when the request carries a valid W3C
/// `traceparent` (else a new trace), with the trace id in its `trace_id` field.
pub fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span =
        tracing::info_span!("rpc", rpc = %request.uri().path(), trace_id = tracing::field::Empty);
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed; then there is no trace to join.
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}
