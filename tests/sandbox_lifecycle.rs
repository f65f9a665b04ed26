//! CreateSandbox / GetSandbox / DestroySandbox / ListTemplates against real PostgreSQL and Redis:
//! the schema and keys really exist, and are really gone after destroy.

mod common;

use common::{TestApp, error_reason};
use redis::AsyncCommands;
use sandboxd::proto::{
    CreateSandboxRequest, DestroySandboxRequest, GetSandboxRequest, ListTemplatesRequest,
    SandboxState, get_sandbox_request::Selector,
};
use tonic::Code;

fn create(name: &str) -> CreateSandboxRequest {
    CreateSandboxRequest {
        template: "discord-guild".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn by_id(id: &str) -> GetSandboxRequest {
    GetSandboxRequest { selector: Some(Selector::SandboxId(id.into())) }
}

fn destroy(id: &str) -> DestroySandboxRequest {
    DestroySandboxRequest {
        sandbox_id: id.into(),
        reason: "test done".into(),
        ..Default::default()
    }
}

async fn schema_tables(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn keys_under(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(redis).await.unwrap()
}

#[tokio::test]
async fn create_provisions_a_real_schema_and_redis_prefix_and_destroy_removes_them() {
    let app = TestApp::spawn().await;
    let pg = app.pg().await;
    let mut redis = app.redis().await;

    let sandbox = app.owner().create_sandbox(create("guild-test")).await.unwrap().into_inner();
    assert_eq!(sandbox.state(), SandboxState::Running);
    let hex = sandbox.sandbox_id.replace('-', "");
    let resources = sandbox.resources.clone().unwrap();
    assert_eq!(resources.schema, format!("sandbox_{hex}"));
    assert_eq!(resources.redis_prefix, format!("sandbox:{{{}}}:", sandbox.sandbox_id));
    assert_eq!(resources.subject_prefix, format!("sandbox.{}.", sandbox.sandbox_id));
    assert!(sandbox.expire_time.is_some() && !sandbox.etag.is_empty());

    assert_eq!(schema_tables(&pg, &resources.schema).await, ["badges", "communities", "profiles"]);
    // The schema is usable as the template intends.
    sqlx::query(&format!(
        "INSERT INTO {}.communities (guild_id, name) VALUES ('1', 'x')",
        resources.schema
    ))
    .execute(&pg)
    .await
    .unwrap();
    let () = redis.set(format!("{}user:1", resources.redis_prefix), "hello").await.unwrap();
    let () = redis.set(format!("{}user:2", resources.redis_prefix), "world").await.unwrap();
    assert!(keys_under(&mut redis, &resources.redis_prefix).await.len() >= 3, "marker + 2 keys");

    let by_name = app
        .owner()
        .get_sandbox(GetSandboxRequest { selector: Some(Selector::Name("guild-test".into())) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.sandbox_id, sandbox.sandbox_id);
    assert_eq!(by_name.etag, sandbox.etag, "reading is not a change");

    let destroyed =
        app.owner().destroy_sandbox(destroy(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(destroyed.state(), SandboxState::Destroyed);
    assert_eq!(destroyed.destroy_reason, "test done");
    assert!(destroyed.destroy_time.is_some());
    assert!(schema_tables(&pg, &resources.schema).await.is_empty(), "schema dropped");
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1")
            .bind(&resources.schema)
            .fetch_one(&pg)
            .await
            .unwrap();
    assert_eq!(schemas, 0);
    // On a single Redis the keys go with the next keyspace pass after DESTROYED.
    common::wait_for_keys_purged(&pg, common::uuid_of(&sandbox.sandbox_id)).await;
    assert!(
        keys_under(&mut redis, &resources.redis_prefix).await.is_empty(),
        "redis keys unlinked"
    );

    let got = app.owner().get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(got.state(), SandboxState::Destroyed);

    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, actor FROM audit_events WHERE sandbox_id = $1 ORDER BY id",
    )
    .bind(uuid::Uuid::parse_str(&sandbox.sandbox_id).unwrap())
    .fetch_all(&pg)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(types, ["sandbox_created", "sandbox_destroying", "sandbox_destroyed"]);
    assert!(events.iter().all(|(_, actor)| actor == "owner:alice"));
}

#[tokio::test]
async fn destroying_twice_returns_the_destroyed_sandbox_unchanged() {
    let app = TestApp::spawn().await;
    let sandbox = app.owner().create_sandbox(create("twice")).await.unwrap().into_inner();
    let first =
        app.owner().destroy_sandbox(destroy(&sandbox.sandbox_id)).await.unwrap().into_inner();
    let second =
        app.owner().destroy_sandbox(destroy(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(first, second);
    assert_eq!(second.state(), SandboxState::Destroyed);
}

#[tokio::test]
async fn a_live_name_is_unique_per_tenant_and_free_again_after_destroy() {
    let app = TestApp::spawn().await;
    let first = app.owner().create_sandbox(create("shared-name")).await.unwrap().into_inner();
    let clash = app.owner().create_sandbox(create("shared-name")).await.unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists);
    assert_eq!(error_reason(&clash), "SANDBOX_NAME_TAKEN");

    let other_tenant = app.key_for("globex", "gina", sandboxd::auth::Role::Owner).await;
    app.control(Some(&other_tenant))
        .create_sandbox(create("shared-name"))
        .await
        .expect("names are per tenant");

    app.owner().destroy_sandbox(destroy(&first.sandbox_id)).await.unwrap();
    let again = app.owner().create_sandbox(create("shared-name")).await.unwrap().into_inner();
    assert_ne!(again.sandbox_id, first.sandbox_id);
}

#[tokio::test]
async fn the_same_request_id_returns_the_same_sandbox_and_a_different_request_is_rejected() {
    let app = TestApp::spawn().await;
    let request = CreateSandboxRequest { request_id: "req-42".into(), ..create("idem") };
    let first = app.owner().create_sandbox(request.clone()).await.unwrap().into_inner();
    let retry = app.owner().create_sandbox(request).await.unwrap().into_inner();
    assert_eq!(first.sandbox_id, retry.sandbox_id);

    let changed = CreateSandboxRequest { request_id: "req-42".into(), ..create("other-name") };
    let status = app.owner().create_sandbox(changed).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(common::violated_fields(&status), ["request_id"]);
}

#[tokio::test]
async fn the_owner_quota_is_enforced() {
    let app = TestApp::spawn_with(|config| config.sandbox.max_live_per_owner = 2).await;
    for name in ["q1", "q2"] {
        app.owner().create_sandbox(create(name)).await.unwrap();
    }
    let status = app.owner().create_sandbox(create("q3")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let quota = status.get_details_quota_failure().expect("QuotaFailure details");
    assert_eq!(quota.violations[0].subject, "owner:alice");
}

#[tokio::test]
async fn a_template_that_fails_midway_leaves_nothing_and_ends_destroyed_with_the_error() {
    let templates = tempfile::tempdir().unwrap();
    // Passes the startup check (run in a scratch schema) but fails inside a real sandbox schema.
    std::fs::write(
        templates.path().join("broken.toml"),
        r#"
name = "broken"
schema_sql = '''
CREATE TABLE before_failure (id int);
DO $$ BEGIN IF current_schema() LIKE 'sandbox\_%' THEN RAISE EXCEPTION 'template exploded'; END IF; END $$;
'''
"#,
    )
    .unwrap();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(|config| config.templates.dir = dir).await;
    let request = CreateSandboxRequest { template: "broken".into(), ..Default::default() };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("exploded"), "internal detail leaked: {}", status.message());

    let pg = app.pg().await;
    let (id, state, last_error): (uuid::Uuid, String, Option<String>) =
        sqlx::query_as("SELECT id, state, last_error FROM sandboxes").fetch_one(&pg).await.unwrap();
    assert_eq!(state, "DESTROYED");
    assert!(last_error.unwrap_or_default().contains("template exploded"));
    let schema = format!("sandbox_{}", id.simple());
    assert!(schema_tables(&pg, &schema).await.is_empty());
    common::wait_for_keys_purged(&pg, id).await;
    assert_eq!(common::audited_states(&pg, id).await, ["FAILED", "DESTROYING", "DESTROYED"]);
}

#[tokio::test]
async fn an_etag_mismatch_refuses_destroy() {
    let app = TestApp::spawn().await;
    let sandbox = app.owner().create_sandbox(create("etagged")).await.unwrap().into_inner();
    let stale = DestroySandboxRequest { etag: "\"stale\"".into(), ..destroy(&sandbox.sandbox_id) };
    let status = app.owner().destroy_sandbox(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "AIP-154");
    assert_eq!(error_reason(&status), "ETAG_MISMATCH");
    let current =
        DestroySandboxRequest { etag: sandbox.etag.clone(), ..destroy(&sandbox.sandbox_id) };
    let destroyed = app.owner().destroy_sandbox(current).await.unwrap().into_inner();
    assert_eq!(destroyed.state(), SandboxState::Destroyed);
}

#[tokio::test]
async fn list_templates_shows_the_shipped_templates_with_their_tables() {
    let app = TestApp::spawn().await;
    let templates =
        app.owner().list_templates(ListTemplatesRequest {}).await.unwrap().into_inner().templates;
    let guild = templates.iter().find(|t| t.name == "discord-guild").expect("discord-guild");
    assert_eq!(guild.tables, ["badges", "communities", "profiles"]);
    assert_eq!(guild.runtime, "none");
    assert_eq!(guild.default_ttl.unwrap().seconds, 24 * 3600);
    let agent = templates.iter().find(|t| t.name == "git-agent").expect("git-agent");
    assert_eq!(agent.runtime, "process");
    assert!(agent.hooks.contains(&"cold_start".to_string()));
}
