//! Traces continue the caller's trace: an OTLP collector runs in-process (a tonic server of the
//! collector's TraceService from the opentelemetry-proto definitions), sandboxd exports to it,
//! a call carries a known W3C `traceparent`, and the server's RPC span is found as a child of
//! the caller's span, with store and Redis spans under the same trace id.

mod common;

use std::sync::{Arc, Mutex};

use common::TestApp;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use sandboxd::{config::TelemetryConfig, telemetry};
use tonic::{Request, Response, Status, metadata::MetadataValue};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_continues_the_callers_trace_with_store_and_redis_spans_beneath() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let collector_task = tokio::spawn(server);
    let config = TelemetryConfig {
        otlp_endpoint: format!("http://{address}"),
        ..TelemetryConfig::default()
    };
    let guard = telemetry::init(&config).expect("telemetry starts");

    let app = TestApp::spawn().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = Request::new(common::create_request("traced"));
    let traceparent: MetadataValue<_> = format!("00-{trace_id}-{caller_span}-01").parse().unwrap();
    request.metadata_mut().insert("traceparent", traceparent);
    app.owner().create_sandbox(request).await.expect("create");
    // An untraced call makes a trace of its own.
    app.owner().list_sandboxes(sandboxd::proto::ListSandboxesRequest::default()).await.unwrap();
    // Flushes every finished span to the collector.
    guard.shutdown().await;

    let spans = collector.spans.lock().unwrap().clone();
    assert!(!spans.is_empty(), "the collector received spans");
    let ours: Vec<&Span> =
        spans.iter().filter(|span| hex::encode(&span.trace_id) == trace_id).collect();
    let names: Vec<&str> = ours.iter().map(|span| span.name.as_str()).collect();
    let rpc = ours
        .iter()
        .find(|span| span.name == "rpc")
        .unwrap_or_else(|| panic!("no rpc span in the caller's trace: {names:?}"));
    assert_eq!(
        hex::encode(&rpc.parent_span_id),
        caller_span,
        "the RPC span's parent is the caller's span"
    );
    assert!(
        names.iter().any(|name| name.starts_with("store.")),
        "store spans in the trace: {names:?}"
    );
    assert!(names.contains(&"redis.command"), "Redis spans in the trace: {names:?}");
    assert!(names.contains(&"sandbox.create"), "the domain span in the trace: {names:?}");
    let other_rpcs = spans
        .iter()
        .filter(|span| span.name == "rpc" && hex::encode(&span.trace_id) != trace_id)
        .count();
    assert!(other_rpcs >= 1, "the untraced call started a trace of its own");
    collector_task.abort();
}
