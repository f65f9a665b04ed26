//! The event router end to end: real NATS JetStream (`TEST_NATS_URL`), the real server
//! in-process, and the router in-process or as the `sandboxd route-events` process. Each test
//! has its own streams and subjects (deleted at the end) and its own database.

mod common;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    TestApp, create_request, destroy_request, eventually,
    nats::{Streams, nats_url},
};
use sandboxd::{
    auth::Role,
    config::{Secret, SecretUrl},
    proto::{RegisterGuildRequest, UnregisterGuildRequest},
    router::{self, RouterConfig},
    server::{self, RunningServer},
};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

const ROUTED: &str = "81384788765712384";
const OTHER: &str = "175928847299117063";
const LATER: &str = "41771983423143937";

fn event(guild: &str, n: usize) -> String {
    format!(r#"{{"t":"MESSAGE_CREATE","guild_id":"{guild}","n":{n}}}"#)
}

fn register(guild: &str, sandbox_id: &str) -> RegisterGuildRequest {
    RegisterGuildRequest { guild_id: guild.into(), sandbox_id: sandbox_id.into() }
}

fn router_config(app: &TestApp, streams: &Streams, key: &str) -> RouterConfig {
    RouterConfig {
        sandboxd_addr: format!("http://{}", app.addr),
        api_key: Secret::new(key),
        nats_url: SecretUrl::new(nats_url()),
        stream: streams.stream("SRC"),
        subject: streams.filter(),
        durable: "router".into(),
        dead_letter_subject: streams.dead_letter_subject(),
        ack_wait: Duration::from_secs(2),
        retry_delay: Duration::from_millis(200),
        stats_interval: Duration::from_secs(1),
        ..RouterConfig::default()
    }
}

/// A sandbox with `ROUTED` registered to it, and a key of the `router` role (another tenant:
/// routers see every tenant's routes).
async fn routed_sandbox(app: &TestApp) -> (String, String) {
    let sandbox =
        app.owner().create_sandbox(create_request("routed")).await.unwrap().into_inner().sandbox_id;
    app.routing(Some(&app.owner_key)).register_guild(register(ROUTED, &sandbox)).await.unwrap();
    let key = app.key_for("ops", "router-1", Role::Router).await;
    (sandbox, key)
}

/// Publishes events of `guild` every 25 ms (ids `<prefix>-<n>`) until one lands in the
/// `want` stream; returns how long after the call that event was published. Every later event
/// must land there too, and every event once.
async fn time_until_routed(streams: &Streams, guild: &str, want: &str, prefix: &str) -> Duration {
    let start = Instant::now();
    let mut published = Vec::new();
    let landed = loop {
        let id = format!("{prefix}-{}", published.len());
        streams.publish("MESSAGE_CREATE", event(guild, published.len()), &id).await;
        published.push((id, start.elapsed()));
        let there: Vec<String> = streams
            .stored(want)
            .await
            .into_iter()
            .map(|m| m.message_id)
            .filter(|id| id.starts_with(&format!("{prefix}-")))
            .collect();
        if !there.is_empty() {
            break there;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no {prefix} event reached {want}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let prefix_dash = format!("{prefix}-");
    eventually("every probe event to arrive", Duration::from_secs(10), || async {
        let arrivals = streams.arrivals(&["SBX", "PROD"]).await;
        arrivals.keys().filter(|id| id.starts_with(&prefix_dash)).count() == published.len()
    })
    .await;
    let arrivals = streams.arrivals(&["SBX", "PROD"]).await;
    let in_target: Vec<String> = streams
        .stored(want)
        .await
        .into_iter()
        .map(|m| m.message_id)
        .filter(|id| id.starts_with(&prefix_dash))
        .collect();
    let first = published.iter().position(|(id, _)| landed.contains(id) || in_target.contains(id));
    let first = first.expect("a probe landed");
    for (id, _) in &published[first..] {
        assert!(
            in_target.contains(id),
            "{id} was published after the switch but not sent to {want}"
        );
    }
    for (id, _) in &published {
        assert_eq!(arrivals.get(id), Some(&1), "{id} arrived once");
    }
    published[first].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_their_guilds_route_and_unregistering_sends_them_to_production() {
    let app = TestApp::spawn().await;
    let streams = Streams::create().await;
    let (sandbox, key) = routed_sandbox(&app).await;
    // No stream named: the router finds the one that captures its subject.
    let config = RouterConfig { stream: String::new(), ..router_config(&app, &streams, &key) };
    let router = router::start(config).await.expect("the router starts");
    for n in 0..3 {
        streams.publish("MESSAGE_CREATE", event(ROUTED, n), &format!("routed-{n}")).await;
        streams.publish("GUILD_CREATE", event(OTHER, n), &format!("other-{n}")).await;
    }
    eventually("six events routed", Duration::from_secs(10), || async {
        streams.count("SBX").await + streams.count("PROD").await == 6
    })
    .await;
    let in_sandbox = streams.stored("SBX").await;
    let sandbox_subject = format!("sandbox.{sandbox}.{}", streams.subject("MESSAGE_CREATE"));
    for (n, message) in in_sandbox.iter().enumerate() {
        assert_eq!(message.subject, sandbox_subject);
        assert_eq!(message.message_id, format!("routed-{n}"));
        assert_eq!(message.payload, event(ROUTED, n).as_bytes(), "payload unchanged");
        assert_eq!(message.header("X-Test-Header").as_deref(), Some("kept"), "headers kept");
    }
    let in_production = streams.stored("PROD").await;
    for (n, message) in in_production.iter().enumerate() {
        assert_eq!(message.subject, format!("prod.{}", streams.subject("GUILD_CREATE")));
        assert_eq!(message.message_id, format!("other-{n}"));
    }
    assert_eq!((in_sandbox.len(), in_production.len()), (3, 3));

    let mut routing = app.routing(Some(&app.owner_key));
    routing.unregister_guild(UnregisterGuildRequest { guild_id: ROUTED.into() }).await.unwrap();
    let after_unregister = time_until_routed(&streams, ROUTED, "PROD", "unregistered").await;
    assert!(after_unregister <= Duration::from_secs(1), "took {after_unregister:?}");

    routing.register_guild(register(ROUTED, &sandbox)).await.unwrap();
    time_until_routed(&streams, ROUTED, "SBX", "registered-again").await;
    app.owner().destroy_sandbox(destroy_request(&sandbox)).await.unwrap();
    let after_destroy = time_until_routed(&streams, ROUTED, "PROD", "destroyed").await;
    assert!(after_destroy <= Duration::from_secs(1), "took {after_destroy:?}");

    let counts = router.stats.counts();
    assert_eq!(counts.dead_letter, 0);
    assert_eq!(counts.routed(), streams.count("SBX").await + streams.count("PROD").await);
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_usable_guild_id_are_dead_lettered_with_a_reason() {
    let app = TestApp::spawn().await;
    let streams = Streams::create().await;
    let key = app.key_for("ops", "router-1", Role::Router).await;
    let config =
        RouterConfig { guild_field: "d.guild_id".into(), ..router_config(&app, &streams, &key) };
    let router = router::start(config).await.unwrap();
    let bad = [
        ("not json", "not_json"),
        (r#"{"op":0,"d":{}}"#, "missing_guild_id"),
        (r#"{"op":0,"d":{"guild_id":null}}"#, "missing_guild_id"),
        (r#"{"op":0,"d":{"guild_id":"007"}}"#, "malformed_guild_id"),
        (r#"{"op":0,"d":{"guild_id":"18446744073709551616"}}"#, "malformed_guild_id"),
        (r#"{"op":0,"d":{"guild_id":true}}"#, "malformed_guild_id"),
    ];
    for (n, (payload, _)) in bad.iter().enumerate() {
        streams.publish("MESSAGE_CREATE", payload.to_string(), &format!("bad-{n}")).await;
    }
    // A good event whose publisher asserted something about the source stream: the condition
    // is not carried over (the destination is another stream).
    publish_with_source_condition(&streams, r#"{"op":0,"d":{"guild_id":"42"}}"#).await;
    eventually("dead letters and the good event", Duration::from_secs(10), || async {
        streams.count("DLQ").await == bad.len() as u64 && streams.count("PROD").await == 1
    })
    .await;
    let letters = streams.stored("DLQ").await;
    for (n, (message, (payload, reason))) in letters.iter().zip(bad).enumerate() {
        assert_eq!(message.subject, streams.dead_letter_subject());
        assert_eq!(message.message_id, format!("bad-{n}"));
        assert_eq!(message.payload, payload.as_bytes());
        assert_eq!(message.header("Sandboxd-Dead-Letter-Reason").as_deref(), Some(reason));
        assert_eq!(
            message.header("Sandboxd-Original-Subject"),
            Some(streams.subject("MESSAGE_CREATE"))
        );
    }
    assert_eq!(streams.count("SBX").await, 0);
    assert_eq!(router.stats.counts().dead_letter, bad.len() as u64);
    router.shutdown().await.unwrap();
}

/// Publishes with a JetStream publish condition about the source stream
/// (`Nats-Expected-Stream`).
async fn publish_with_source_condition(streams: &Streams, payload: &'static str) {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id("conditional")
        .expected_stream(streams.stream("SRC"));
    streams
        .js
        .send_publish(streams.subject("MESSAGE_CREATE"), message)
        .await
        .unwrap()
        .await
        .expect("the source stream accepts it");
}

/// Starts a server on the address the old one had (the router keeps dialling it).
async fn restart_sandboxd(app: &TestApp) -> RunningServer {
    let mut config = app.config.clone();
    config.server.listen = app.addr;
    let server = server::start(config).await.expect("sandboxd restarts on its address");
    app.wait_for_health("", ServingStatus::Serving).await;
    server
}

/// Publishes events alternating between `ROUTED` and `OTHER` (ids `e<n>`), paced, until
/// `stop`; returns how many it published.
fn publish_until(streams: Arc<Streams>, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.is_cancelled() {
            let guild = if n % 2 == 0 { ROUTED } else { OTHER };
            streams.publish("MESSAGE_CREATE", event(guild, n), &format!("e{n}")).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    })
}

/// Waits until `more` events beyond `now` were routed (counted at the destinations).
async fn wait_for_more(streams: &Streams, more: u64) {
    let now = streams.count("SBX").await + streams.count("PROD").await;
    eventually("more events routed", Duration::from_secs(20), || async {
        streams.count("SBX").await + streams.count("PROD").await >= now + more
    })
    .await;
}

/// Every `e<n>` arrived exactly once (after JetStream's deduplication), routed by its guild.
async fn check_every_event_once(streams: &Streams, count: usize) {
    eventually("every event to arrive", Duration::from_secs(30), || async {
        let arrivals = streams.arrivals(&["SBX", "PROD"]).await;
        arrivals.keys().filter(|id| id.starts_with('e')).count() == count
    })
    .await;
    let arrivals: BTreeMap<String, usize> = streams.arrivals(&["SBX", "PROD"]).await;
    let in_sandbox: Vec<String> =
        streams.stored("SBX").await.into_iter().map(|m| m.message_id).collect();
    for n in 0..count {
        let id = format!("e{n}");
        assert_eq!(arrivals.get(&id), Some(&1), "{id} arrived exactly once");
        assert_eq!(in_sandbox.contains(&id), n % 2 == 0, "{id} went to its guild's route");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_when_sandboxd_restarts_mid_stream() {
    let mut app = TestApp::spawn().await;
    let streams = Arc::new(Streams::create().await);
    let (sandbox, key) = routed_sandbox(&app).await;
    let router = router::start(router_config(&app, &streams, &key)).await.unwrap();
    let stop = CancellationToken::new();
    let publisher = publish_until(streams.clone(), stop.clone());
    wait_for_more(&streams, 30).await;
    app.take_server().shutdown().await.unwrap();
    // Events published while sandboxd is down are routed from the cache.
    wait_for_more(&streams, 30).await;
    let server = restart_sandboxd(&app).await;
    // The resumed watch delivers changes made on the new server.
    app.routing(Some(&app.owner_key)).register_guild(register(LATER, &sandbox)).await.unwrap();
    time_until_routed(&streams, LATER, "SBX", "later").await;
    wait_for_more(&streams, 30).await;
    stop.cancel();
    let published = publisher.await.unwrap();
    check_every_event_once(&streams, published).await;
    let order: Vec<usize> = streams
        .stored("SBX")
        .await
        .iter()
        .filter_map(|m| m.message_id.strip_prefix('e')?.parse().ok())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "a guild's events keep their order");
    assert!(!router.stats.is_paused());
    router.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

fn router_process(app: &TestApp, streams: &Streams, key: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxd"))
        .arg("route-events")
        .env("SANDBOXD_ROUTER__SANDBOXD_ADDR", format!("http://{}", app.addr))
        .env("SANDBOXD_ROUTER__API_KEY", key)
        .env("SANDBOXD_ROUTER__NATS_URL", nats_url())
        .env("SANDBOXD_ROUTER__STREAM", streams.stream("SRC"))
        .env("SANDBOXD_ROUTER__SUBJECT", streams.filter())
        .env("SANDBOXD_ROUTER__DEAD_LETTER_SUBJECT", streams.dead_letter_subject())
        .env("SANDBOXD_ROUTER__ACK_WAIT", "1s")
        .env("SANDBOXD_ROUTER__DURABLE", "router")
        .env("SANDBOXD_TELEMETRY__LOG_FILTER", "warn")
        .env_remove("SANDBOXD_CONFIG")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting sandboxd route-events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_when_the_router_is_killed_mid_stream() {
    let app = TestApp::spawn().await;
    let streams = Arc::new(Streams::create().await);
    let (_sandbox, key) = routed_sandbox(&app).await;
    let mut process = router_process(&app, &streams, &key);
    let stop = CancellationToken::new();
    let publisher = publish_until(streams.clone(), stop.clone());
    wait_for_more(&streams, 40).await;
    process.start_kill().expect("SIGKILL to the router");
    process.wait().await.unwrap();
    let mut restarted = router_process(&app, &streams, &key);
    wait_for_more(&streams, 40).await;
    stop.cancel();
    let published = publisher.await.unwrap();
    check_every_event_once(&streams, published).await;
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_pauses_while_the_route_watch_is_broken_past_the_bound() {
    let mut app = TestApp::spawn().await;
    let streams = Streams::create().await;
    let (sandbox, key) = routed_sandbox(&app).await;
    let config = RouterConfig {
        max_staleness: Duration::from_millis(500),
        ..router_config(&app, &streams, &key)
    };
    let router = router::start(config).await.unwrap();
    streams.publish("MESSAGE_CREATE", event(ROUTED, 0), "before").await;
    eventually("the first event routed", Duration::from_secs(10), || async {
        streams.count("SBX").await == 1
    })
    .await;

    app.take_server().shutdown().await.unwrap();
    eventually("the cache to go stale", Duration::from_secs(10), || async {
        !router.cache.is_fresh()
    })
    .await;
    streams.publish("MESSAGE_CREATE", event(ROUTED, 1), "during").await;
    eventually("the router to pause", Duration::from_secs(10), || async {
        router.stats.is_paused()
    })
    .await;
    // Absence can only be shown over some time: the paused router routes nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(streams.count("SBX").await + streams.count("PROD").await, 1);

    let server = restart_sandboxd(&app).await;
    eventually(
        "the held event routed after the watch resumed",
        Duration::from_secs(15),
        || async { streams.count("SBX").await == 2 },
    )
    .await;
    let held = streams.stored("SBX").await.pop().unwrap();
    assert_eq!(
        (held.message_id.as_str(), held.subject),
        ("during", format!("sandbox.{sandbox}.{}", streams.subject("MESSAGE_CREATE")))
    );
    assert!(!router.stats.is_paused());
    router.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_whose_key_is_refused_stops_with_the_reason() {
    let app = TestApp::spawn().await;
    let streams = Streams::create().await;
    let config =
        router_config(&app, &streams, "sbx_0000000000000000000000000000000000000000000000bad");
    let router = router::start(config).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(15), router.wait())
        .await
        .expect("the router stops by itself")
        .unwrap_err();
    assert!(format!("{error:#}").contains("refused the route watch"), "{error:#}");
}
