//! Isolation between sandboxes, against real servers: connected as sandbox A's own PostgreSQL
//! role and Redis ACL user (with the passwords GetConnectionDetails returns), A's own work
//! succeeds, and B's tables, sandboxd's tables, the public schema, B's keys and the
//! administrative Redis commands are refused. Credentials die with the sandbox, are rotated
//! when a pool member is claimed again, and are swept when their sandbox is gone.
//!
//! These tests run a private PostgreSQL (SCRAM passwords for every role but `postgres`: the
//! shared test server trusts every local login, so a password there proves nothing) and a
//! private Redis (ACL users are server-wide).

mod common;

use std::time::Duration;

use common::{TestApp, by_id, create_request, destroy_request, eventually, templates_with};
use redis::AsyncCommands;
use sandboxd::{
    auth::Role,
    config::{Config, SecretUrl},
    dev::{ThrowawayPostgres, ThrowawayRedis},
    proto::{ConnectionDetails, GetConnectionDetailsRequest, ReleaseSandboxRequest},
};
use sqlx::{Connection, PgConnection, PgPool};
use tonic::Code;

struct Rig {
    app: TestApp,
    /// sandboxd's own (superuser) view of the private PostgreSQL.
    admin: PgPool,
    _templates: tempfile::TempDir,
    _redis: ThrowawayRedis,
    _postgres: ThrowawayPostgres,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn admin_redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.app.config.redis.url.expose()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

/// The shipped `discord-guild` template with `redis_acl` on too (`postgres_role` is on in the
/// shipped templates), and its pool of `min_ready` members.
async fn rig(min_ready: u32, customize: impl FnOnce(&mut Config)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let postgres = ThrowawayPostgres::start(&dir.path().join("postgres")).await.unwrap();
    let redis = ThrowawayRedis::start(&dir.path().join("redis")).await.unwrap();
    let templates = templates_with(|name, text| {
        if name == "discord-guild.toml" {
            assert!(text.contains("postgres_role = true"), "the shipped template has a role");
            text.replace("# redis_acl = true", "redis_acl = true")
                .replace("min_ready = 3", &format!("min_ready = {min_ready}"))
                // One member at most: a claim then always takes the one released before.
                .replace(
                    "max_size = 10",
                    if min_ready == 1 { "max_size = 1" } else { "max_size = 10" },
                )
        } else {
            text
        }
    });
    let (database_url, redis_url) = (postgres.url("postgres"), redis.url());
    let templates_dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(|config| {
        config.database.url = SecretUrl::new(&database_url);
        config.redis.url = SecretUrl::new(&redis_url);
        config.templates.dir = templates_dir;
        customize(config);
    })
    .await;
    let admin = PgPool::connect(&database_url).await.unwrap();
    Rig { app, admin, _templates: templates, _redis: redis, _postgres: postgres, _dir: dir }
}

async fn details(app: &TestApp, key: &str, id: &str) -> Result<ConnectionDetails, tonic::Status> {
    let request = GetConnectionDetailsRequest { sandbox_id: id.into() };
    app.control(Some(key)).get_connection_details(request).await.map(|r| r.into_inner())
}

async fn create(app: &TestApp, name: &str) -> String {
    app.owner().create_sandbox(create_request(name)).await.unwrap().into_inner().sandbox_id
}

fn sqlstate(error: &sqlx::Error) -> String {
    error.as_database_error().and_then(|db| db.code()).map(|c| c.into_owned()).unwrap_or_default()
}

/// Runs `sql` as the connected role and expects PostgreSQL to refuse it for lack of privilege.
async fn refused(conn: &mut PgConnection, sql: &str) {
    let error = sqlx::query(sql).execute(&mut *conn).await.expect_err(sql);
    assert_eq!(sqlstate(&error), "42501", "{sql}: {error}");
}

fn noperm<T: std::fmt::Debug>(result: redis::RedisResult<T>, what: &str) {
    let error = result.expect_err(what);
    assert!(error.to_string().to_uppercase().contains("NOPERM"), "{what}: {error}");
}

async fn redis_as(
    details: &ConnectionDetails,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(details.redis_url.as_str())?.get_multiplexed_async_connection().await
}

#[tokio::test]
async fn a_sandbox_role_and_acl_user_reach_only_their_own_sandbox() {
    let captured = common::log_capture::CapturedLogs::install();
    let rig = rig(3, |_| {}).await;
    let app = &rig.app;
    let (a, b) = (create(app, "a").await, create(app, "b").await);
    let a_details = details(app, &app.owner_key, &a).await.unwrap();
    let b_details = details(app, &app.owner_key, &b).await.unwrap();
    let (a_schema, b_schema) = (&a_details.schema, &b_details.schema);
    assert_eq!(a_details.role_name, *a_schema, "the role is named like the schema");
    assert_eq!(a_details.role_password.len(), 64);
    assert_eq!(a_details.env["PGPASSWORD"], a_details.role_password);
    assert_eq!(a_details.env["DATABASE_URL"], a_details.database_url);
    assert_eq!(a_details.env["REDIS_PASSWORD"], a_details.redis_password);
    assert!(!a_details.secrets_withheld);
    assert_ne!(a_details.role_password, b_details.role_password);

    // B has data, and sandboxd's tables exist: what A must not reach is really there.
    sqlx::query(&format!("INSERT INTO {b_schema}.communities (guild_id, name) VALUES ('1', 'b')"))
        .execute(&rig.admin)
        .await
        .unwrap();
    let mut admin_redis = rig.admin_redis().await;
    let b_key = format!("{}secret", b_details.redis_prefix);
    let () = admin_redis.set(&b_key, "b's").await.unwrap();

    // PostgreSQL, as A's role: its own schema works, including tables it creates itself.
    let mut pg = PgConnection::connect(&a_details.database_url).await.expect("A's role logs in");
    let (user, search_path): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_setting('search_path')")
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!((user.as_str(), search_path.as_str()), (a_schema.as_str(), a_schema.as_str()));
    sqlx::query("INSERT INTO communities (guild_id, name) VALUES ('7', 'mine')")
        .execute(&mut pg)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE scratch (n int)").execute(&mut pg).await.unwrap();
    sqlx::query("INSERT INTO scratch VALUES (1), (2)").execute(&mut pg).await.unwrap();
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM scratch").fetch_one(&mut pg).await.unwrap();
    assert_eq!(rows, 2);
    // ... and nothing else.
    refused(&mut pg, &format!("SELECT * FROM {b_schema}.communities")).await;
    refused(&mut pg, &format!("INSERT INTO {b_schema}.communities VALUES ('2', 'x')")).await;
    refused(&mut pg, &format!("CREATE TABLE {b_schema}.planted (n int)")).await;
    refused(&mut pg, "SELECT * FROM public.sandboxes").await;
    refused(&mut pg, "SELECT * FROM public.sandbox_credentials").await;
    refused(&mut pg, "UPDATE public.api_keys SET role = 'owner'").await;
    refused(&mut pg, "CREATE TABLE public.planted (n int)").await;
    refused(&mut pg, "CREATE SCHEMA planted").await;
    pg.close().await.ok();

    // Redis, as A's ACL user: its own keys and channels work ...
    let mut redis_a = redis_as(&a_details).await.expect("A's ACL user logs in");
    let a_key = format!("{}counter", a_details.redis_prefix);
    let () = redis_a.set(&a_key, 41).await.unwrap();
    let counter: i64 = redis_a.incr(&a_key, 1).await.unwrap();
    assert_eq!(counter, 42);
    let _: i64 = redis_a.publish(format!("{}events", a_details.redis_prefix), "hi").await.unwrap();
    // ... and nothing else.
    noperm(redis_a.get::<_, Option<String>>(&b_key).await, "GET of B's key");
    noperm(redis_a.set::<_, _, ()>(&b_key, "stolen").await, "SET of B's key");
    noperm(
        redis_a.publish::<_, _, i64>(format!("{}events", b_details.redis_prefix), "x").await,
        "PUBLISH on B's channel",
    );
    for command in [
        vec!["KEYS", "*"],
        vec!["SCAN", "0"],
        vec!["FLUSHDB"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "*"],
        vec!["ACL", "SETUSER", "evil", "on", "+@all"],
        vec!["EVAL", "return 1", "0"],
        vec!["SCRIPT", "FLUSH"],
        vec!["INFO"],
        vec!["CLIENT", "LIST"],
        vec!["PUBSUB", "CHANNELS"],
    ] {
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&command[1..]);
        noperm(cmd.query_async::<redis::Value>(&mut redis_a).await, &command.join(" "));
    }
    // This server refuses DEBUG and MODULE to everyone (enable-*-command), before any ACL
    // check; ACL DRYRUN asks the ACL rules alone.
    for command in [vec!["DEBUG", "SLEEP", "0"], vec!["MODULE", "LIST"], vec!["GET", "plain"]] {
        let verdict: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(&a_details.redis_user)
            .arg(&command)
            .query_async(&mut admin_redis)
            .await
            .unwrap();
        assert!(verdict.contains("no permissions"), "{command:?}: {verdict}");
    }
    let allowed: String = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(&a_details.redis_user)
        .arg("GET")
        .arg(&a_key)
        .query_async(&mut admin_redis)
        .await
        .unwrap();
    assert_eq!(allowed, "OK", "the dry run does allow what A may do");
    let still: String = admin_redis.get(&b_key).await.unwrap();
    assert_eq!(still, "b's", "B's key is untouched");

    // Destroyed: A's credentials are gone, and so are its details; B's still work.
    app.owner().destroy_sandbox(destroy_request(&a)).await.unwrap();
    let login = PgConnection::connect(&a_details.database_url).await;
    assert!(login.is_err(), "A's role still logs in after destroy");
    let role_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&a_details.role_name)
            .fetch_one(&rig.admin)
            .await
            .unwrap();
    assert!(!role_left, "A's role was dropped");
    assert!(redis_as(&a_details).await.is_err(), "A's ACL user still logs in after destroy");
    let users: Vec<String> =
        redis::cmd("ACL").arg("USERS").query_async(&mut admin_redis).await.unwrap();
    assert!(!users.contains(&a_details.redis_user), "{users:?}");
    assert!(users.contains(&b_details.redis_user), "{users:?}");
    let destroyed = details(app, &app.owner_key, &a).await.unwrap_err();
    assert_eq!(destroyed.code(), Code::FailedPrecondition, "{destroyed:?}");
    assert_eq!(common::error_reason(&destroyed), "SANDBOX_NOT_RUNNING");
    let mut pg_b = PgConnection::connect(&b_details.database_url).await.expect("B still logs in");
    let (b_rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM communities").fetch_one(&mut pg_b).await.unwrap();
    assert_eq!(b_rows, 1);
    pg_b.close().await.ok();

    // The passwords were in play (they logged in above) and appear in no log line and no audit
    // event.
    let audit: Vec<String> = sqlx::query_scalar("SELECT details::text FROM audit_events")
        .fetch_all(&rig.admin)
        .await
        .unwrap();
    let (b_verifier,): (String,) =
        sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&b_details.role_name)
            .fetch_one(&rig.admin)
            .await
            .unwrap();
    assert!(b_verifier.starts_with("SCRAM-SHA-256$"), "PostgreSQL holds a verifier");
    let logs = captured.text();
    assert!(!logs.contains(&b_verifier), "the SCRAM verifier is in the logs");
    assert!(logs.contains("TRACE") && logs.contains("CREATE ROLE"), "statements logged at TRACE");
    for details in [&a_details, &b_details] {
        for secret in [&details.role_password, &details.redis_password] {
            assert!(!logs.contains(secret.as_str()), "a password is in the logs");
            assert!(audit.iter().all(|event| !event.contains(secret.as_str())), "in the audit");
        }
    }
}

#[tokio::test]
async fn connection_secrets_go_only_to_those_allowed_to_see_them() {
    // The shared test servers: only who gets which answer matters here.
    let app = TestApp::spawn().await;
    let member = app.key_for("acme", "bob", Role::Member).await;
    let other_member = app.key_for("acme", "carol", Role::Member).await;
    let admin = app.key_for("acme", "dave", Role::Admin).await;
    let router = app.key_for("acme", "router", Role::Router).await;
    let request = create_request("bobs");
    let id = app.control(Some(&member)).create_sandbox(request).await.unwrap().into_inner();
    let id = id.sandbox_id;
    for key in [&member, &admin, &app.owner_key] {
        let seen = details(&app, key, &id).await.unwrap();
        assert_eq!(seen.role_name, format!("sandbox_{}", common::uuid_of(&id).simple()));
        assert_eq!(
            seen.role_password.len(),
            64,
            "the owner of the sandbox and the tenant's managers see it"
        );
        assert!(seen.database_url.contains(&seen.role_password));
    }
    let hidden = details(&app, &other_member, &id).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "another member does not even see the sandbox");
    let refused = details(&app, &router, &id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "a router manages no sandbox");
    for status in [&hidden, &refused] {
        assert!(!format!("{status:?}").contains("sandbox_"), "{status:?}");
    }
}

#[tokio::test]
async fn a_reclaimed_pool_member_never_hands_out_the_old_passwords() {
    let rig = rig(1, |config| {
        config.reconcile.pool_refill = true;
        config.reconcile.interval = Duration::from_millis(50);
    })
    .await;
    let app = &rig.app;
    let ready = common::wait_for_state(&rig.admin, "READY").await;
    let role_name = format!("sandbox_{}", ready.simple());
    let can_login: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&role_name)
        .fetch_one(&rig.admin)
        .await
        .unwrap();
    assert!(!can_login, "an unclaimed member's role cannot log in");

    let first = app.owner().create_sandbox(create_request("first")).await.unwrap().into_inner();
    assert!(first.from_pool);
    assert_eq!(first.sandbox_id, ready.to_string());
    let old = details(app, &app.owner_key, &first.sandbox_id).await.unwrap();
    let mut session = PgConnection::connect(&old.database_url).await.expect("first claim logs in");
    let mut redis_session = redis_as(&old).await.expect("first claim's ACL user logs in");
    let () = redis_session.set(format!("{}k", old.redis_prefix), 1).await.unwrap();

    let release =
        ReleaseSandboxRequest { sandbox_id: first.sandbox_id.clone(), ..Default::default() };
    app.owner().release_sandbox(release).await.unwrap();
    assert!(
        sqlx::query("SELECT 1").execute(&mut session).await.is_err(),
        "the old session was ended"
    );
    assert!(
        redis_session.get::<_, Option<i64>>("x").await.is_err(),
        "the old Redis connection was closed"
    );

    let second = app.owner().create_sandbox(create_request("second")).await.unwrap().into_inner();
    assert_eq!(second.sandbox_id, first.sandbox_id, "the same member was claimed again");
    let new = details(app, &app.owner_key, &second.sandbox_id).await.unwrap();
    assert_ne!(new.role_password, old.role_password);
    assert_ne!(new.redis_password, old.redis_password);
    assert!(
        PgConnection::connect(&old.database_url).await.is_err(),
        "the old password still works"
    );
    assert!(redis_as(&old).await.is_err(), "the old Redis password still works");
    let fresh = PgConnection::connect(&new.database_url).await.expect("the new password works");
    fresh.close().await.ok();
    let mut redis_fresh = redis_as(&new).await.expect("the new Redis password works");
    let () = redis_fresh.set(format!("{}k", new.redis_prefix), 2).await.unwrap();
}

#[tokio::test]
async fn the_orphan_sweep_removes_credentials_whose_sandbox_is_gone() {
    let rig = rig(3, |config| {
        // Long enough for a create in flight (ACL user made, row not yet committed) to commit.
        config.reconcile.orphan_grace = Duration::from_secs(1);
        config.reconcile.orphan_interval = Duration::from_millis(100);
        config.reconcile.interval = Duration::from_millis(50);
    })
    .await;
    let app = &rig.app;
    let id = create(app, "doomed").await;
    let seen = details(app, &app.owner_key, &id).await.unwrap();
    let kept = create(app, "kept").await;
    let kept_details = details(app, &app.owner_key, &kept).await.unwrap();
    // A crash that lost the row (an operator's restore, say): its role, ACL user and stored
    // credentials are left behind.
    let uuid = common::uuid_of(&id);
    sqlx::query("DELETE FROM sandboxes WHERE id = $1")
        .bind(uuid)
        .execute(&rig.admin)
        .await
        .unwrap();
    let mut admin_redis = rig.admin_redis().await;
    eventually(
        "the orphaned role, ACL user and credentials to go",
        Duration::from_secs(30),
        || {
            let (admin, mut redis, role) =
                (rig.admin.clone(), admin_redis.clone(), seen.role_name.clone());
            async move {
                let role_left: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                        .bind(&role)
                        .fetch_one(&admin)
                        .await
                        .unwrap();
                let users: Vec<String> =
                    redis::cmd("ACL").arg("USERS").query_async(&mut redis).await.unwrap();
                let stored: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sandbox_credentials WHERE sandbox_id = $1",
                )
                .bind(uuid)
                .fetch_one(&admin)
                .await
                .unwrap();
                !role_left && !users.contains(&role) && stored == 0
            }
        },
    )
    .await;
    let removed: Vec<String> = sqlx::query_scalar(
        "SELECT details->>'resource' FROM audit_events
         WHERE sandbox_id = $1 AND event_type = 'orphan_removed' ORDER BY id",
    )
    .bind(uuid)
    .fetch_all(&rig.admin)
    .await
    .unwrap();
    assert!(removed.contains(&"postgres_role".to_string()), "{removed:?}");
    assert!(removed.contains(&"redis_acl_user".to_string()), "{removed:?}");
    // The live sandbox keeps its own.
    let still = PgConnection::connect(&kept_details.database_url).await.expect("kept logs in");
    still.close().await.ok();
    let users: Vec<String> =
        redis::cmd("ACL").arg("USERS").query_async(&mut admin_redis).await.unwrap();
    assert!(users.contains(&kept_details.redis_user));
    let _ = app.control(Some(&app.owner_key)).get_sandbox(by_id(&kept)).await.unwrap();
}
