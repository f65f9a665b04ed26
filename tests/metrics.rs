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

/// A server with the metrics listener on and an in-process S3 store, with a `process` template.
async fn metered_with_s3() -> common::WithS3 {
    let template = "name = \"scratch\"\nruntime = \"process\"\nkeep_objects = false\n";
    common::spawn_with_s3_and("scratch.toml", template, |config| {
        config.metrics.listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await
}

#[tokio::test]
async fn lock_waits_and_holds_are_measured() {
    let setup = metered_with_s3().await;
    let app = &setup.app;
    let sync = || app.sync(Some(&app.owner_key));
    let acquire = |wait_ms: u64| proto::AcquireLockRequest {
        resource: "metrics:lock".into(),
        ttl: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        wait: Some(prost_types::Duration {
            seconds: 0,
            nanos: i32::try_from(wait_ms).unwrap() * 1_000_000,
        }),
        ..Default::default()
    };
    let lease = sync().acquire_lock(acquire(0)).await.unwrap().into_inner();
    // Held: a second acquisition waits its whole 150 ms and gives up.
    sync().acquire_lock(acquire(150)).await.unwrap_err();
    let release = proto::ReleaseLockRequest {
        resource: "metrics:lock".into(),
        owner_token: lease.owner_token.clone(),
    };
    assert!(sync().release_lock(release).await.unwrap().into_inner().released);

    let samples = scrape(app).await;
    let wait = |suffix: &str, outcome| {
        let name = format!("sandboxd_lock_wait_seconds_{suffix}");
        value(&samples, &name, &[("scope", "api"), ("outcome", outcome)])
    };
    assert_eq!(wait("count", "acquired"), Some(1.0));
    assert_eq!(wait("count", "not_acquired"), Some(1.0));
    let waited = wait("sum", "not_acquired").unwrap();
    assert!(waited >= 0.15, "the refused acquisition waited its 150 ms, recorded {waited} s");
    let held = |suffix: &str| {
        let name = format!("sandboxd_lock_hold_seconds_{suffix}");
        value(&samples, &name, &[("scope", "api")])
    };
    assert_eq!(held("count"), Some(1.0), "one lease was released");
    let held = held("sum").unwrap();
    assert!(
        (0.15..30.0).contains(&held),
        "held across the refused 150 ms acquisition, by Redis's clock: {held} s"
    );
}

#[tokio::test]
async fn workspace_syncs_count_files_and_bytes() {
    let setup = metered_with_s3().await;
    let app = &setup.app;
    let request = proto::CreateSandboxRequest { template: "scratch".into(), ..Default::default() };
    let id = app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id;
    let exec = proto::ExecRequest {
        sandbox_id: id.clone(),
        command: ["sh", "-c", "echo one > a.txt && head -c 5000 /dev/urandom > b.bin"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let mut output = app.owner().exec(exec).await.unwrap().into_inner();
    while tokio_stream::StreamExt::next(&mut output).await.transpose().unwrap().is_some() {}
    let push = proto::PushWorkspaceRequest { sandbox_id: id.clone(), ..Default::default() };
    let pushed = app.sync(Some(&app.owner_key)).push_workspace(push).await.unwrap().into_inner();
    assert_eq!(pushed.files_transferred, 2, "both files were uploaded");
    assert_eq!(pushed.bytes_transferred, 5004);

    let samples = scrape(app).await;
    let files = |action| {
        value(&samples, "sandboxd_sync_files_total", &[("direction", "push"), ("action", action)])
    };
    assert_eq!(files("transferred"), Some(2.0));
    assert_eq!(files("scanned"), Some(pushed.files_scanned as f64));
    assert_eq!(
        value(&samples, "sandboxd_sync_bytes_total", &[("direction", "push")]),
        Some(5004.0)
    );
    assert_eq!(
        value(&samples, "sandboxd_sync_bytes_total", &[("direction", "pull")]),
        None,
        "nothing was pulled"
    );
}

#[tokio::test]
async fn pool_claims_are_timed_by_hit_and_miss() {
    let (app, _templates) = common::pooled_app(1, 1, |config| {
        config.metrics.listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let pool = proto::GetPoolStatusRequest { template: "discord-guild".into() };
    common::eventually("a ready pool member", std::time::Duration::from_secs(30), || {
        let (app, pool) = (&app, pool.clone());
        async move {
            app.owner().get_pool_status(pool).await.unwrap().into_inner().pools[0].ready_count == 1
        }
    })
    .await;
    let first = app.owner().create_sandbox(common::create_request("hit")).await.unwrap();
    assert!(first.into_inner().from_pool, "the ready member was claimed");
    // The pool is full (its one member is in use): the next create finds nothing ready.
    let second = app.owner().create_sandbox(common::create_request("miss")).await.unwrap();
    assert!(!second.into_inner().from_pool, "provisioned cold");

    let samples = scrape(&app).await;
    let claims = |outcome| {
        value(
            &samples,
            "sandboxd_pool_claim_seconds_count",
            &[("template", "discord-guild"), ("outcome", outcome)],
        )
    };
    assert_eq!((claims("hit"), claims("miss")), (Some(1.0), Some(1.0)));
}
