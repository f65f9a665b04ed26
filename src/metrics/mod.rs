//! Prometheus metrics, served in the OpenMetrics text format on their own HTTP listener
//! (`[metrics] listen`, off by default; see [`http`]).
//!
//! - `grpc_server_handled_total{service,method,code}` and
//!   `grpc_server_handling_seconds{service,method}`: every RPC, recorded at the wire edge
//!   (`crate::wire::limits`) when its status is known (headers of a trailers-only response, or
//!   the trailers of a stream; a stream the client dropped counts as `CANCELLED`). Label values
//!   are bounded: only the methods our descriptor sets declare, anything else is `unknown`.
//! - `sandboxd_sandboxes{template,state}`: sandboxes that are not DESTROYED, counted from
//!   PostgreSQL at scrape time (so every replica reports the same, whole-deployment figure).
//! - `sandboxd_pool_ready{template}`, `sandboxd_pool_in_use{template}`,
//!   `sandboxd_pool_hits_total{template}`, `sandboxd_pool_misses_total{template}`: warm pools,
//!   from PostgreSQL at scrape time (the totals are the deployment's, kept in PostgreSQL).
//!
//! - `sandboxd_sandbox_creates_total{template,outcome}`, `sandboxd_sandbox_destroys_total{outcome}`
//!   (this replica's; outcome `created` / `destroyed` or the error's kind) and
//!   `sandboxd_reconcile_actions_total{reason}` (expired, idle, boot timeout, …).
//!
//! - Locks, workspace syncs and pool claims: see [`work`].
//!
//! Never a sandbox id, a tenant or a subject as a label: their number is unbounded.

pub mod http;
mod work;

pub use work::LockWaitOutcome;

use std::{collections::HashSet, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use prost::Message;

use crate::{error::Result, store::Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    template: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabels {
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CreateLabels {
    template: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// RPC latency buckets, in seconds: 1 ms to about 2 min.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    ])
}

/// Where an RPC's metrics go: its service and method, or `unknown` for paths we do not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMethod {
    service: String,
    method: String,
}

pub struct Metrics {
    registry: Registry,
    known_methods: HashSet<String>,
    handled: Family<RpcLabels, Counter>,
    handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    sandboxes: Family<SandboxLabels, Gauge>,
    pool_ready: Family<TemplateLabels, Gauge>,
    pool_in_use: Family<TemplateLabels, Gauge>,
    pool_hits: Family<TemplateLabels, Counter>,
    pool_misses: Family<TemplateLabels, Counter>,
    creates: Family<CreateLabels, Counter>,
    destroys: Family<OutcomeLabels, Counter>,
    reconcile_actions: Family<ReasonLabels, Counter>,
    work: work::WorkMetrics,
    artifacts_published: Family<TypeLabels, Counter>,
    artifact_reviews: Family<DecisionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let handled = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed, by gRPC status code",
            handled.clone(),
        );
        let handling_seconds =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from an RPC's request to its status (a stream's whole life)",
            handling_seconds.clone(),
        );
        let sandboxes = Family::<SandboxLabels, Gauge>::default();
        registry.register(
            "sandboxd_sandboxes",
            "Sandboxes that are not destroyed, by template and state",
            sandboxes.clone(),
        );
        let pool_ready = Family::<TemplateLabels, Gauge>::default();
        registry.register(
            "sandboxd_pool_ready",
            "Warm-pool members ready to be claimed",
            pool_ready.clone(),
        );
        let pool_in_use = Family::<TemplateLabels, Gauge>::default();
        registry.register("sandboxd_pool_in_use", "Claimed warm-pool members", pool_in_use.clone());
        // Totals kept in PostgreSQL for the whole deployment; the counters follow them.
        let pool_hits = Family::<TemplateLabels, Counter>::default();
        registry.register(
            "sandboxd_pool_hits",
            "Creates served from a warm pool",
            pool_hits.clone(),
        );
        let pool_misses = Family::<TemplateLabels, Counter>::default();
        registry.register(
            "sandboxd_pool_misses",
            "Creates that found no ready pool member",
            pool_misses.clone(),
        );
        let creates = Family::<CreateLabels, Counter>::default();
        registry.register(
            "sandboxd_sandbox_creates",
            "CreateSandbox and EnsureSandbox creates by outcome (`created` or the error's kind)",
            creates.clone(),
        );
        let destroys = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sandboxd_sandbox_destroys",
            "DestroySandbox calls by outcome (`destroyed` or the error's kind)",
            destroys.clone(),
        );
        let reconcile_actions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sandboxd_reconcile_actions",
            "Sandboxes the reconciler moved on, by reason",
            reconcile_actions.clone(),
        );
        let artifacts_published = Family::<TypeLabels, Counter>::default();
        registry.register(
            "sandboxd_artifacts_published",
            "Artifacts published, by type",
            artifacts_published.clone(),
        );
        let artifact_reviews = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "sandboxd_artifact_reviews",
            "Artifact reviews recorded, by decision",
            artifact_reviews.clone(),
        );
        let work = work::WorkMetrics::register(&mut registry);
        Self {
            registry,
            work,
            artifacts_published,
            artifact_reviews,
            creates,
            destroys,
            reconcile_actions,
            known_methods: known_methods(),
            handled,
            handling_seconds,
            sandboxes,
            pool_ready,
            pool_in_use,
            pool_hits,
            pool_misses,
        }
    }

    /// The labels of a request path (`/package.Service/Method`).
    pub fn method_of(&self, path: &str) -> RpcMethod {
        match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
            Some((service, method)) if self.known_methods.contains(path) => {
                RpcMethod { service: service.to_string(), method: method.to_string() }
            }
            _ => RpcMethod { service: "unknown".into(), method: "unknown".into() },
        }
    }

    /// Records one finished RPC.
    pub fn record_rpc(&self, method: &RpcMethod, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            service: method.service.clone(),
            method: method.method.clone(),
            code: code_name(code).to_string(),
        };
        self.handled.get_or_create(&labels).inc();
        let labels =
            MethodLabels { service: method.service.clone(), method: method.method.clone() };
        self.handling_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Records a create's outcome: `created`, or the kind of its error ([`crate::error::Error::kind`]).
    pub fn record_create<T>(&self, template: &str, result: &Result<T>) {
        let outcome = result.as_ref().map_or_else(|error| error.kind(), |_| "created");
        let labels = CreateLabels { template: template.to_string(), outcome: outcome.to_string() };
        self.creates.get_or_create(&labels).inc();
    }

    /// Records a destroy's outcome: `destroyed`, or the kind of its error.
    pub fn record_destroy<T>(&self, result: &Result<T>) {
        let outcome = result.as_ref().map_or_else(|error| error.kind(), |_| "destroyed");
        self.destroys.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    /// Records one reconciler action (`reason` is one of the reconciler's fixed reasons).
    pub fn record_reconcile(&self, reason: &'static str) {
        self.reconcile_actions.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Counts a published artifact (`artifact_type` is one of the fixed artifact types).
    pub fn record_artifact_published(&self, artifact_type: &'static str) {
        let labels = TypeLabels { r#type: artifact_type.to_string() };
        self.artifacts_published.get_or_create(&labels).inc();
    }

    /// Counts a recorded review (`decision`: `approve` or `reject`).
    pub fn record_artifact_review(&self, decision: &'static str) {
        let labels = DecisionLabels { decision: decision.to_string() };
        self.artifact_reviews.get_or_create(&labels).inc();
    }

    /// The exposition: refreshes the figures read from PostgreSQL, then encodes everything.
    pub async fn render(&self, store: &Store, templates: &[String]) -> Result<String> {
        let counts = store.live_sandbox_counts().await?;
        self.sandboxes.clear();
        for (template, state, count) in counts {
            self.sandboxes.get_or_create(&SandboxLabels { template, state }).set(count);
        }
        let pools = store.pool_figures(templates).await?;
        for (template, figures) in pools {
            let labels = TemplateLabels { template };
            self.pool_ready.get_or_create(&labels).set(figures.ready);
            self.pool_in_use.get_or_create(&labels).set(figures.in_use);
            follow(&self.pool_hits.get_or_create(&labels), figures.hits);
            follow(&self.pool_misses.get_or_create(&labels), figures.misses);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|error| anyhow::anyhow!("encoding metrics: {error}"))?;
        Ok(text)
    }
}

/// Moves a counter up to a total kept elsewhere (never down: a counter only grows).
fn follow(counter: &Counter, total: i64) {
    let total = u64::try_from(total).unwrap_or(0);
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Every `/package.Service/Method` our servers answer: ours, health and reflection.
fn known_methods() -> HashSet<String> {
    let mut methods = HashSet::new();
    for descriptors in [crate::proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(descriptors) else { continue };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    for version in ["v1", "v1alpha"] {
        methods.insert(format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"));
    }
    methods
}

/// The canonical name of a gRPC code (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        let metrics = Metrics::new();
        let known = metrics.method_of("/sandboxd.v1.SandboxControl/CreateSandbox");
        assert_eq!(
            (known.service.as_str(), known.method.as_str()),
            ("sandboxd.v1.SandboxControl", "CreateSandbox")
        );
        assert_eq!(metrics.method_of("/grpc.health.v1.Health/Check").method, "Check");
        for path in ["/sandboxd.v1.SandboxControl/Nope", "/x/y", "garbage", "/"] {
            assert_eq!(metrics.method_of(path).service, "unknown", "{path}");
        }
    }
}
