//! Logging and tracing. One span per RPC is opened by the server (`server.rs`); store methods
//! add `store.*` spans. With `telemetry.otlp_endpoint` set, spans are also exported over OTLP
//! (gRPC) to an OpenTelemetry collector.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
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
