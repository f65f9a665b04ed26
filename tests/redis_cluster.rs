//! sandboxd on a real Redis Cluster (three masters the test starts): sandboxes are created,
//! checked and destroyed there, a destroy reads only the sandbox's hash slot and leaves its keys
//! gone when DESTROYED commits, and the orphan sweep walks every master.

mod common;

use std::time::Duration;

use common::{TestApp, create_request, redis_cluster::ThrowawayRedisCluster};
use redis::AsyncCommands;
use sandboxd::{
    config::{RedisMode, SecretUrl},
    isolation::redis_keyspace::hash_slot,
    proto::{GetSandboxHealthRequest, HealthLevel, SandboxState},
};
use tonic_health::pb::health_check_response::ServingStatus;

async fn app_on(cluster: &ThrowawayRedisCluster, orphans: bool) -> TestApp {
    let url = cluster.url();
    TestApp::spawn_with(|config| {
        config.redis.mode = RedisMode::Cluster;
        config.redis.url = SecretUrl::new(url);
        if orphans {
            config.reconcile.orphan_grace = Duration::from_millis(300);
            config.reconcile.orphan_interval = Duration::from_millis(200);
        }
    })
    .await
}

#[tokio::test]
async fn a_destroy_on_a_cluster_reads_only_the_sandbox_slot_and_its_keys_go_with_destroyed() {
    let cluster = ThrowawayRedisCluster::start().await;
    let app = app_on(&cluster, false).await;
    app.wait_for_health("sandboxd.v1.SandboxControl", ServingStatus::Serving).await;
    let mut redis = cluster.connection().await;

    let sandbox =
        app.owner().create_sandbox(create_request("clustered")).await.unwrap().into_inner();
    assert_eq!(sandbox.state(), SandboxState::Running);
    let id = common::uuid_of(&sandbox.sandbox_id);
    let prefix = sandbox.resources.unwrap().redis_prefix;
    let health = GetSandboxHealthRequest { sandbox_id: sandbox.sandbox_id.clone() };
    let report = app.owner().get_sandbox_health(health).await.unwrap().into_inner();
    assert_eq!(report.level(), HealthLevel::Healthy, "{report:?}");

    // The sandbox's keys, a key of the same slot that is not the sandbox's, and others.
    for key in ["user:1", "user:2", "cache"] {
        let () = redis.set(format!("{prefix}{key}"), "v").await.unwrap();
    }
    let same_slot = format!("other:{{{id}}}:x");
    assert_eq!(hash_slot(&same_slot), hash_slot(&prefix));
    let () = redis.set(&same_slot, "keep").await.unwrap();
    for n in 0..200 {
        let () = redis.set(format!("unrelated:{n}"), "keep").await.unwrap();
    }
    let marker = format!("{prefix}__sandboxd");
    assert!(redis.exists::<_, bool>(&marker).await.unwrap(), "the create wrote its marker");

    let slot_reads_before = cluster.calls("cluster|getkeysinslot").await;
    let destroyed = app
        .owner()
        .destroy_sandbox(common::destroy_request(&sandbox.sandbox_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(destroyed.state(), SandboxState::Destroyed);
    // Gone when DESTROYED commits, not later.
    let pg = app.pg().await;
    assert!(common::keys_purged(&pg, id).await, "recorded with DESTROYED");
    for key in ["user:1", "user:2", "cache", "__sandboxd"] {
        let exists: bool = redis.exists(format!("{prefix}{key}")).await.unwrap();
        assert!(!exists, "{prefix}{key} left behind");
    }
    let kept: String = redis.get(&same_slot).await.unwrap();
    assert_eq!(kept, "keep", "a key of the same slot outside the prefix stays");
    let unrelated: Option<String> = redis.get("unrelated:199").await.unwrap();
    assert_eq!(unrelated.as_deref(), Some("keep"));
    // The slot was read on one master only.
    let slot_reads_after = cluster.calls("cluster|getkeysinslot").await;
    let nodes_read: Vec<u16> = slot_reads_before
        .iter()
        .zip(&slot_reads_after)
        .filter(|(before, after)| after.1 > before.1)
        .map(|(before, _)| before.0)
        .collect();
    assert_eq!(
        nodes_read.len(),
        1,
        "slot reads by node: {slot_reads_before:?} → {slot_reads_after:?}"
    );
    assert!(!common::schema_exists(&pg, id).await);
}

#[tokio::test]
async fn the_orphan_sweep_walks_every_master_of_the_cluster() {
    let cluster = ThrowawayRedisCluster::start().await;
    let app = app_on(&cluster, true).await;
    let mut redis = cluster.connection().await;
    let live = app.owner().create_sandbox(create_request("live")).await.unwrap().into_inner();
    let live_prefix = live.resources.unwrap().redis_prefix;
    let () = redis.set(format!("{live_prefix}data"), "mine").await.unwrap();

    // Namespaces of this deployment with no sandbox behind them, one in each master's slots
    // (redis-cli gives three masters the ranges 0–5460, 5461–10922 and 10923–16383).
    let deployment = app.config.redis.key_prefix.clone();
    let mut orphans: Vec<Option<uuid::Uuid>> = vec![None; 3];
    while orphans.iter().any(Option::is_none) {
        let id = uuid::Uuid::now_v7();
        let range = usize::from(hash_slot(&id.to_string()) / 5461).min(2);
        orphans[range].get_or_insert(id);
    }
    let orphans: Vec<uuid::Uuid> = orphans.into_iter().flatten().collect();
    for id in &orphans {
        let marker = format!("sandbox:{{{id}}}:__sandboxd");
        let () = redis.hset_multiple(marker, &[("deployment", &deployment)]).await.unwrap();
        let () = redis.set(format!("sandbox:{{{id}}}:left"), "x").await.unwrap();
    }

    common::eventually("the orphans on every master to go", Duration::from_secs(15), || {
        let mut redis = redis.clone();
        let orphans = orphans.clone();
        async move {
            for id in orphans {
                let left: bool = redis.exists(format!("sandbox:{{{id}}}:left")).await.unwrap();
                if left {
                    return false;
                }
            }
            true
        }
    })
    .await;
    // Each removal is audited at the end of its pass.
    let pg = app.pg().await;
    common::eventually("the three removals to be audited", Duration::from_secs(15), || async {
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events
             WHERE event_type = 'orphan_removed' AND details->>'resource' = 'redis'",
        )
        .fetch_one(&pg)
        .await
        .unwrap();
        audited == 3
    })
    .await;
    let kept: Option<String> = redis.get(format!("{live_prefix}data")).await.unwrap();
    assert_eq!(kept.as_deref(), Some("mine"), "a live sandbox's keys stay");
}

#[tokio::test]
async fn a_destroy_stopped_by_a_cluster_outage_is_unavailable_and_the_reconciler_finishes_it() {
    let mut cluster = ThrowawayRedisCluster::start().await;
    let app = app_on(&cluster, false).await;
    let sandbox = app.owner().create_sandbox(create_request("outage")).await.unwrap().into_inner();
    let id = common::uuid_of(&sandbox.sandbox_id);

    cluster.kill().await;
    let status = app
        .owner()
        .destroy_sandbox(common::destroy_request(&sandbox.sandbox_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let pg = app.pg().await;
    assert_eq!(common::state_of(&pg, id).await, "DESTROYING", "stopped midway, on record");
    assert!(common::schema_exists(&pg, id).await, "the schema goes only with DESTROYED");

    // Nobody calls destroy again: once the cluster is back, the reconciler finishes it.
    cluster.start_again().await;
    common::eventually("the reconciler to finish the destroy", Duration::from_secs(30), || async {
        common::state_of(&pg, id).await == "DESTROYED"
    })
    .await;
    assert!(common::keys_purged(&pg, id).await);
    assert!(!common::schema_exists(&pg, id).await);
}

#[tokio::test]
async fn locks_work_on_a_cluster() {
    let cluster = ThrowawayRedisCluster::start().await;
    let app = app_on(&cluster, false).await;
    app.wait_for_health("sandboxd.v1.SyncService", ServingStatus::Serving).await;
    let sync = || app.sync(Some(&app.owner_key));
    let acquire = sandboxd::proto::AcquireLockRequest {
        resource: "git:repo:main".into(),
        wait: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        ..Default::default()
    };
    // Lock key and fencing counter are in one slot, so the scripts run on one node.
    let first = sync().acquire_lock(acquire.clone()).await.unwrap().into_inner();
    assert_eq!(
        sync().acquire_lock(acquire.clone()).await.unwrap_err().code(),
        tonic::Code::Aborted
    );
    let release = sandboxd::proto::ReleaseLockRequest {
        resource: first.resource.clone(),
        owner_token: first.owner_token.clone(),
    };
    assert!(sync().release_lock(release).await.unwrap().into_inner().released);
    let second = sync().acquire_lock(acquire).await.unwrap().into_inner();
    assert!(second.fencing_token > first.fencing_token);
}

#[tokio::test]
async fn acl_users_are_made_and_removed_on_every_node_of_the_cluster() {
    use redis::cluster::ClusterClientBuilder;
    use sandboxd::proto::GetConnectionDetailsRequest;
    let cluster = ThrowawayRedisCluster::start().await;
    let templates = common::templates_with(|name, text| {
        if name == "discord-guild.toml" {
            text.replace("# redis_acl = true", "redis_acl = true")
        } else {
            text
        }
    });
    let (url, dir) = (cluster.url(), templates.path().to_path_buf());
    let app = TestApp::spawn_with(|config| {
        config.redis.mode = RedisMode::Cluster;
        config.redis.url = SecretUrl::new(url);
        config.templates.dir = dir;
    })
    .await;
    let sandbox = app.owner().create_sandbox(create_request("acl")).await.unwrap().into_inner();
    let request = GetConnectionDetailsRequest { sandbox_id: sandbox.sandbox_id.clone() };
    let details = app.owner().get_connection_details(request).await.unwrap().into_inner();
    let users_on = |port: u16| async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let users: Vec<String> =
            redis::cmd("ACL").arg("USERS").query_async(&mut conn).await.unwrap();
        users
    };
    for &port in &cluster.ports {
        assert!(users_on(port).await.contains(&details.redis_user), "node {port} lacks the user");
    }

    // As the sandbox's user, through a cluster client: its own keys work wherever their slot
    // lives, another sandbox's are refused.
    let nodes: Vec<String> =
        cluster.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect();
    let client = ClusterClientBuilder::new(nodes)
        .username(details.redis_user.clone())
        .password(details.redis_password.clone())
        .build()
        .unwrap();
    let mut conn =
        client.get_async_connection().await.expect("the ACL user logs in to the cluster");
    let own = format!("{}k", details.redis_prefix);
    let () = conn.set(&own, "v").await.unwrap();
    let read: String = conn.get(&own).await.unwrap();
    assert_eq!(read, "v");
    let other = format!("sandbox:{{{}}}:k", uuid::Uuid::now_v7());
    let refused = conn.get::<_, Option<String>>(&other).await.unwrap_err();
    assert!(refused.to_string().to_uppercase().contains("NOPERM"), "{refused}");

    app.owner().destroy_sandbox(common::destroy_request(&sandbox.sandbox_id)).await.unwrap();
    for &port in &cluster.ports {
        assert!(!users_on(port).await.contains(&details.redis_user), "node {port} kept the user");
    }
}
