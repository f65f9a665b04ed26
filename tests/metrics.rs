//! Prometheus metrics on their own listener, scraped and parsed with the official Prometheus
//! client's OpenMetrics parser (PyPI prometheus-client): RPCs by service, method and code with
//! latency histograms, sandboxes by template and state, warm pools; names and labels follow
//! the conventions and never carry a sandbox id.

mod common;

use common::TestApp;
use sandboxd::proto;
use serde_json::Value;

/// Every sample of a scrape: (name, labels, value).
async fn scrape(app: &TestApp) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let address = app.server().metrics_addr.expect("the metrics listener is on");
    let output = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/parse_metrics.py"))
        .arg(format!("http://{address}/metrics"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the exposition (pip install prometheus-client; scripts/test does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64, String)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples.into_iter().map(|(name, labels, value, _)| (name, labels, value)).collect()
}

fn value(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(sample, have, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(key, want)| have.get(*key).and_then(Value::as_str) == Some(*want))
        })
        .map(|(_, _, value)| *value)
}

#[tokio::test]
async fn a_scrape_reports_rpcs_sandboxes_and_pools() {
    let app =
        TestApp::spawn_with(|config| config.metrics.listen = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    let mut owner = app.owner();
    let created =
        owner.create_sandbox(common::create_request("measured")).await.unwrap().into_inner();
    common::wait_for_state(&app.pg().await, "RUNNING").await;
    owner.get_sandbox(common::by_id("not-an-id")).await.unwrap_err();
    owner.get_sandbox(common::by_id(&uuid::Uuid::now_v7().to_string())).await.unwrap_err();
    // A watch the client drops: counted as CANCELLED once the server sees it go.
    let watch = owner.watch_sandboxes(proto::WatchSandboxesRequest::default()).await.unwrap();
    drop(watch);

    let control = "sandboxd.v1.SandboxControl";
    let mut samples = scrape(&app).await;
    let handled = |samples: &[_], method, code| {
        value(
            samples,
            "grpc_server_handled_total",
            &[("service", control), ("method", method), ("code", code)],
        )
    };
    assert_eq!(handled(&samples, "CreateSandbox", "OK"), Some(1.0));
    assert_eq!(handled(&samples, "GetSandbox", "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(handled(&samples, "GetSandbox", "NOT_FOUND"), Some(1.0));
    let latency = value(
        &samples,
        "grpc_server_handling_seconds_count",
        &[("service", control), ("method", "GetSandbox")],
    );
    assert_eq!(latency, Some(2.0), "both GetSandbox calls are in the latency histogram");
    assert!(
        value(
            &samples,
            "grpc_server_handling_seconds_bucket",
            &[("method", "CreateSandbox"), ("le", "+Inf")]
        ) == Some(1.0),
        "histogram buckets are exposed"
    );
    let template = created.template.as_str();
    assert_eq!(
        value(&samples, "sandboxd_sandboxes", &[("template", template), ("state", "RUNNING")]),
        Some(1.0)
    );
    assert!(
        value(&samples, "sandboxd_pool_ready", &[("template", template)]).is_some(),
        "pool figures per template"
    );

    // The dropped watch shows up as CANCELLED (the server notices the reset asynchronously).
    common::eventually("the dropped watch is counted", std::time::Duration::from_secs(10), || {
        let app = &app;
        async move {
            let samples = scrape(app).await;
            handled(&samples, "WatchSandboxes", "CANCELLED") == Some(1.0)
        }
    })
    .await;

    // Conventions: counters end in _total, durations are in seconds, no label holds an id.
    samples.extend(scrape(&app).await);
    for (name, labels, _) in &samples {
        assert!(name.starts_with("grpc_server_") || name.starts_with("sandboxd_"), "{name}");
        for (key, label) in labels {
            let label = label.as_str().unwrap_or_default();
            assert!(!label.contains(&created.sandbox_id), "{name} has the sandbox id in {key}");
            assert!(
                key != "sandbox_id" && key != "tenant" && key != "owner",
                "{name} has an unbounded label {key}"
            );
        }
    }
    assert!(samples.iter().any(|(name, _, _)| name == "grpc_server_handled_total"));

    // Creates and destroys by outcome.
    let unknown =
        proto::CreateSandboxRequest { template: "no-such-template".into(), ..Default::default() };
    owner.create_sandbox(unknown).await.unwrap_err();
    owner.destroy_sandbox(common::destroy_request(&created.sandbox_id)).await.unwrap();
    let samples = scrape(&app).await;
    let creates = |template, outcome| {
        value(
            &samples,
            "sandboxd_sandbox_creates_total",
            &[("template", template), ("outcome", outcome)],
        )
    };
    assert_eq!(creates(template, "created"), Some(1.0));
    assert_eq!(creates("no-such-template", "not_found"), Some(1.0));
    assert_eq!(
        value(&samples, "sandboxd_sandbox_destroys_total", &[("outcome", "destroyed")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "sandboxd_sandboxes", &[("template", template), ("state", "RUNNING")]),
        None,
        "a destroyed sandbox is no longer counted"
    );
}
