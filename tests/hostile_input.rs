//! Hostile callers: every RPC fed malformed ids, huge strings, control characters, SQL and
//! Redis-glob metacharacters, overflowing durations, forged tokens, undecodable and oversized
//! messages and oversized metadata. Each answers the right code (mostly INVALID_ARGUMENT with
//! a BadRequest naming the field), none panics (the server stays SERVING and answers on the
//! same connection), the error stays small, and nothing changes in PostgreSQL or Redis.

mod common;

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use common::{TestApp, error_reason, violated_fields};
use futures::{FutureExt, future::BoxFuture};
use sandboxd::{
    auth::{Principal, Role},
    proto::{self, get_sandbox_request::Selector},
    sandbox::page_token,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};

/// Values no id, name, guild id, label key, path or token accepts.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "'",
        "\"",
        ";",
        "*",
        "?",
        "[",
        "\\",
        "{",
        "a'; DROP TABLE sandboxes;--",
        "sandbox:{*}:*",
        "*:*",
        "\0",
        "a\0b",
        "\u{7f}",
        "\n",
        " ",
        "..",
        "../../etc/passwd",
        "%00",
        "😀",
        "жук",
        "١٢٣",
        "-1",
        "18446744073709551616",
        "0x10",
        "00000000-0000-0000-0000-00000000000g",
    ]
    .iter()
    .map(|value| value.to_string())
    .collect();
    values.push("x".repeat(100_000));
    values.push("é".repeat(5_000));
    values
}

/// One RPC with one field set to a hostile value; returns the call's status.
type Call = Box<dyn Fn(String, String) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

fn cases(app: &TestApp) -> Vec<(&'static str, &'static str, Call)> {
    let control = app.owner();
    let routing = app.routing(Some(&app.owner_key));
    let sync = app.sync(Some(&app.owner_key));
    let mut cases: Vec<(&'static str, &'static str, Call)> = Vec::new();
    // `case!(rpc, field, client, |value, live| call)`: `live` is the id of a live sandbox of
    // the caller.
    macro_rules! case {
        ($rpc:literal, $field:literal, $client:ident, |$value:ident, $live:ident| $call:expr) => {{
            let client = $client.clone();
            cases.push((
                $rpc,
                $field,
                Box::new(move |$value: String, #[allow(unused_variables)] $live: String| {
                    #[allow(unused_mut)]
                    let mut $client = client.clone();
                    async move { $call.await.map(|_| ()) }.boxed()
                }),
            ));
        }};
    }
    case!("CreateSandbox", "template", control, |v, live| control
        .create_sandbox(proto::CreateSandboxRequest { template: v, ..Default::default() }));
    case!("CreateSandbox", "name", control, |v, live| control.create_sandbox(
        proto::CreateSandboxRequest {
            template: "discord-guild".into(),
            name: v,
            ..Default::default()
        }
    ));
    case!("CreateSandbox", "labels", control, |v, live| control.create_sandbox(
        proto::CreateSandboxRequest {
            template: "discord-guild".into(),
            labels: HashMap::from([(v, "x".into())]),
            ..Default::default()
        }
    ));
    case!("CreateSandbox", "request_id", control, |v, live| control.create_sandbox(
        proto::CreateSandboxRequest {
            template: "discord-guild".into(),
            request_id: format!("{v}'"),
            ..Default::default()
        }
    ));
    case!("EnsureSandbox", "name", control, |v, live| control.ensure_sandbox(
        proto::EnsureSandboxRequest {
            template: "discord-guild".into(),
            name: v,
            ..Default::default()
        }
    ));
    case!("GetSandbox", "sandbox_id", control, |v, live| control
        .get_sandbox(proto::GetSandboxRequest { selector: Some(Selector::SandboxId(v)) }));
    case!("GetSandbox", "name", control, |v, live| control
        .get_sandbox(proto::GetSandboxRequest { selector: Some(Selector::Name(v)) }));
    case!("ListSandboxes", "template", control, |v, live| control.list_sandboxes(
        proto::ListSandboxesRequest {
            template: if v.is_empty() { "\0".into() } else { v },
            ..Default::default()
        }
    ));
    case!("ListSandboxes", "page_token", control, |v, live| control.list_sandboxes(
        proto::ListSandboxesRequest {
            page_token: if v.is_empty() { "!".into() } else { v },
            ..Default::default()
        }
    ));
    case!("ExtendSandbox", "sandbox_id", control, |v, live| control.extend_sandbox(
        proto::ExtendSandboxRequest {
            sandbox_id: v,
            extension: Some(proto::extend_sandbox_request::Extension::TtlExtension(
                prost_types::Duration { seconds: 60, nanos: 0 },
            )),
            ..Default::default()
        }
    ));
    case!("DestroySandbox", "sandbox_id", control, |v, live| control.destroy_sandbox(
        proto::DestroySandboxRequest { sandbox_id: v, final_sync: true, ..Default::default() }
    ));
    case!("ReleaseSandbox", "sandbox_id", control, |v, live| control
        .release_sandbox(proto::ReleaseSandboxRequest { sandbox_id: v, ..Default::default() }));
    case!("GetSandboxHealth", "sandbox_id", control, |v, live| control
        .get_sandbox_health(proto::GetSandboxHealthRequest { sandbox_id: v }));
    case!("GetConnectionDetails", "sandbox_id", control, |v, live| control
        .get_connection_details(proto::GetConnectionDetailsRequest { sandbox_id: v }));
    case!("GetSchemaStats", "sandbox_id", control, |v, live| control
        .get_schema_stats(proto::GetSchemaStatsRequest { sandbox_id: v }));
    case!("ListAuditEvents", "sandbox_id", control, |v, live| control.list_audit_events(
        proto::ListAuditEventsRequest {
            sandbox_id: if v.is_empty() { "\0".into() } else { v },
            ..Default::default()
        }
    ));
    case!("WatchSandboxes", "resume_token", control, |v, live| control.watch_sandboxes(
        proto::WatchSandboxesRequest {
            resume_token: if v.is_empty() { "!".into() } else { v },
            ..Default::default()
        }
    ));
    case!("Exec", "sandbox_id", control, |v, live| control.exec(proto::ExecRequest {
        sandbox_id: v,
        command: vec!["true".into()],
        ..Default::default()
    }));
    case!("Exec", "command", control, |v, live| control.exec(proto::ExecRequest {
        sandbox_id: live,
        command: vec!["true".into(), format!("{v}\0")],
        ..Default::default()
    }));
    case!("Exec", "env", control, |v, live| control.exec(proto::ExecRequest {
        sandbox_id: live,
        command: vec!["true".into()],
        env: HashMap::from([(v, "x".into())]),
        ..Default::default()
    }));
    case!("RunHook", "sandbox_id", control, |v, live| control.run_hook(proto::RunHookRequest {
        sandbox_id: v,
        hook: "message".into(),
        ..Default::default()
    }));
    case!("GetPoolStatus", "template", control, |v, live| control.get_pool_status(
        proto::GetPoolStatusRequest { template: if v.is_empty() { "\0".into() } else { v } }
    ));
    case!("RegisterGuild", "guild_id", routing, |v, live| routing
        .register_guild(proto::RegisterGuildRequest { guild_id: v, sandbox_id: live }));
    case!("RegisterGuild", "sandbox_id", routing, |v, live| routing.register_guild(
        proto::RegisterGuildRequest { guild_id: "123456789012345678".into(), sandbox_id: v }
    ));
    case!("UnregisterGuild", "guild_id", routing, |v, live| routing
        .unregister_guild(proto::UnregisterGuildRequest { guild_id: v }));
    case!("ResolveGuild", "guild_id", routing, |v, live| routing
        .resolve_guild(proto::ResolveGuildRequest { guild_id: v }));
    case!("ResolveGuilds", "guild_ids", routing, |v, live| routing
        .resolve_guilds(proto::ResolveGuildsRequest { guild_ids: vec![v] }));
    case!("ListGuildRoutes", "page_token", routing, |v, live| routing.list_guild_routes(
        proto::ListGuildRoutesRequest {
            page_token: if v.is_empty() { "!".into() } else { v },
            ..Default::default()
        }
    ));
    case!("WatchGuildRoutes", "resume_token", routing, |v, live| routing.watch_guild_routes(
        proto::WatchGuildRoutesRequest { resume_token: if v.is_empty() { "!".into() } else { v } }
    ));
    case!("PushWorkspace", "sandbox_id", sync, |v, live| sync
        .push_workspace(proto::PushWorkspaceRequest { sandbox_id: v, ..Default::default() }));
    case!("PullWorkspace", "paths", sync, |v, live| sync.pull_workspace(
        proto::PullWorkspaceRequest {
            sandbox_id: live,
            paths: vec![format!("/{v}")],
            ..Default::default()
        }
    ));
    case!("GetSyncStatus", "sandbox_id", sync, |v, live| sync
        .get_sync_status(proto::GetSyncStatusRequest { sandbox_id: v }));
    case!("ListFiles", "path", sync, |v, live| sync.list_files(proto::ListFilesRequest {
        sandbox_id: live,
        path: format!("/{v}"),
        ..Default::default()
    }));
    case!("ReadFile", "path", sync, |v, live| sync.read_file(proto::ReadFileRequest {
        sandbox_id: live,
        path: format!("../{v}"),
        ..Default::default()
    }));
    case!("WriteFile", "header.path", sync, |v, live| sync.write_file(futures::stream::iter([
        proto::WriteFileRequest {
            content: Some(proto::write_file_request::Content::Header(proto::WriteFileHeader {
                sandbox_id: live,
                path: format!("/{v}"),
            })),
        }
    ])));
    case!("GitStatus", "sandbox_id", sync, |v, live| sync
        .git_status(proto::GitStatusRequest { sandbox_id: v }));
    case!("GitDiff", "base", sync, |v, live| sync.git_diff(proto::GitDiffRequest {
        sandbox_id: live,
        base: format!("-{v}"),
        ..Default::default()
    }));
    case!("GitPush", "branch", sync, |v, live| sync.git_push(proto::GitPushRequest {
        sandbox_id: live,
        branch: format!("-{v}"),
        ..Default::default()
    }));
    case!("AcquireLock", "resource", sync, |v, live| sync.acquire_lock(
        proto::AcquireLockRequest { resource: format!("{v}\0"), ..Default::default() }
    ));
    case!("RenewLock", "owner_token", sync, |v, live| sync.renew_lock(proto::RenewLockRequest {
        resource: "build".into(),
        owner_token: format!("{v}\0"),
        ..Default::default()
    }));
    case!("ReleaseLock", "resource", sync, |v, live| sync.release_lock(
        proto::ReleaseLockRequest { resource: format!("{v}\0"), owner_token: "x".into() }
    ));
    cases
}

/// Everything a caller could have changed: sandboxd's tables (without the columns background
/// work bumps), the sandbox schemas, and every Redis key of this test, with its value's hash.
async fn snapshot(app: &TestApp) -> BTreeMap<String, String> {
    let pool = app.pg().await;
    let mut state = BTreeMap::new();
    let queries = [
        (
            "sandboxes",
            "SELECT coalesce(string_agg(id::text || state || version::text || coalesce(name, '') || labels::text || metadata::text || expire_at::text, ',' ORDER BY id), '') FROM sandboxes",
        ),
        ("audit_events", "SELECT count(*)::text FROM audit_events"),
        (
            "guild_routes",
            "SELECT coalesce(string_agg(guild_id || sandbox_id::text, ',' ORDER BY guild_id), '') FROM guild_routes",
        ),
        (
            "api_keys",
            "SELECT coalesce(string_agg(id::text || coalesce(revoked_at::text, ''), ',' ORDER BY id), '') FROM api_keys",
        ),
        (
            "schemas",
            "SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace WHERE nspname LIKE 'sandbox_%'",
        ),
    ];
    for (name, query) in queries {
        let value: String = sqlx::query_scalar(query).fetch_one(&pool).await.expect(name);
        state.insert(name.to_string(), value);
    }
    let mut redis = app.redis().await;
    let pattern = format!("{}*", app.config.redis.key_prefix);
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
    keys.sort();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut redis).await.unwrap();
        state.insert(format!("redis {key}"), hex::encode(Sha256::digest(dump)));
    }
    state
}

fn assert_small(status: &Status, context: &str) {
    let size = status.message().len() + status.details().len();
    assert!(size < 8 * 1024, "{context}: an error of {size} bytes");
}

#[tokio::test]
async fn generated_hostile_inputs_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let live = owner.create_sandbox(common::create_request("target")).await.unwrap().into_inner();
    common::wait_for_state(&app.pg().await, "RUNNING").await;
    let before = snapshot(&app).await;
    assert!(
        before["sandboxes"].contains(&live.sandbox_id),
        "the target sandbox is in the snapshot"
    );

    let mut calls = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (rpc, field, call) in cases(&app) {
        for value in hostile_values() {
            let context =
                format!("{rpc}.{field} = {:?}", value.chars().take(40).collect::<String>());
            let status = match call(value, live.sandbox_id.clone()).await {
                Ok(()) => panic!("{context}: accepted"),
                Err(status) => status,
            };
            calls += 1;
            *codes.entry(format!("{:?}", status.code())).or_default() += 1;
            assert!(
                matches!(status.code(), Code::InvalidArgument | Code::NotFound),
                "{context}: {:?} {}",
                status.code(),
                status.message()
            );
            assert_small(&status, &context);
            error_reason(&status);
            if status.code() == Code::InvalidArgument {
                let fields = violated_fields(&status);
                assert!(
                    fields.iter().any(|named| named.starts_with(field) || named == "request"),
                    "{context}: violations name {fields:?}"
                );
            }
        }
    }
    eprintln!("{calls} hostile calls: {codes:?}");
    assert!(calls > 1000, "the generator ran ({calls} calls)");
    let after = snapshot(&app).await;
    assert_eq!(before, after, "a refused call changed state");
}

/// Sends raw bytes as a request message, so the test can send what no typed client can.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = bytes::Buf::copy_to_bytes(buf, bytes::Buf::remaining(buf));
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(app: &TestApp, method: &'static str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(app.channel());
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static(method);
    match grpc.unary(Request::new(body), path, RawCodec).await {
        Ok(_) => panic!("{method} accepted raw bytes"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn undecodable_and_oversized_messages_get_their_own_codes() {
    let app = TestApp::spawn().await;
    // Field 1 (template, a string) holding invalid UTF-8; then field 1 with a wrong wire type;
    // then a length that runs past the end. No authorization header: decoding comes first.
    let create = "/sandboxd.v1.SandboxControl/CreateSandbox";
    for body in [vec![0x0a, 0x02, 0xff, 0xfe], vec![0x0d, 0, 0, 0, 0], vec![0x0a, 0x7f, b'a']] {
        let status = raw_call(&app, create, body.clone()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{body:?}: {status:?}");
        assert_eq!(error_reason(&status), "MALFORMED_MESSAGE");
        assert_eq!(violated_fields(&status), ["request"]);
    }
    // The same bytes through a typed field parse show the body really was undecodable.
    assert!(
        <proto::CreateSandboxRequest as prost::Message>::decode(&[0x0a, 0x02, 0xff, 0xfe][..])
            .is_err()
    );

    let limit = app.config.server.max_message_bytes;
    let status = raw_call(&app, create, vec![0; limit + 1]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "MESSAGE_TOO_LARGE");
    assert!(status.message().contains(&limit.to_string()), "{}", status.message());
    // The same in a client stream: the oversized message is refused with the same code.
    let mut sync = app.sync(Some(&app.owner_key));
    let oversized = proto::WriteFileRequest {
        content: Some(proto::write_file_request::Content::Header(proto::WriteFileHeader {
            sandbox_id: uuid::Uuid::now_v7().to_string(),
            path: "p".repeat(limit + 1),
        })),
    };
    let status = sync.write_file(futures::stream::iter([oversized])).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "MESSAGE_TOO_LARGE");
    // Under the limit is decoded (and refused as a message, not for its size).
    let status = raw_call(&app, create, vec![0; limit - 16]).await;
    assert_ne!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn oversized_metadata_is_resource_exhausted_and_the_connection_survives() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    // The same connection carries a long-lived stream throughout.
    let mut watch =
        owner.watch_sandboxes(proto::WatchSandboxesRequest::default()).await.unwrap().into_inner();
    for size in [20 * 1024, 200 * 1024] {
        let mut request = Request::new(proto::ListSandboxesRequest::default());
        let value: tonic::metadata::MetadataValue<_> = "x".repeat(size).parse().unwrap();
        request.metadata_mut().insert("x-padding", value);
        let status = owner.list_sandboxes(request).await.expect_err("oversized metadata");
        assert_eq!(status.code(), Code::ResourceExhausted, "{size}: {status:?}");
        assert_eq!(error_reason(&status), "METADATA_TOO_LARGE");
    }
    // The connection and its stream are alive: a create is seen by the watch opened before.
    let created = owner
        .create_sandbox(common::create_request("after-big-headers"))
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(std::time::Duration::from_secs(30), watch.message())
        .await
        .expect("the watch delivers")
        .expect("the stream is intact")
        .expect("an event");
    let sandbox = event.event.and_then(|e| e.sandbox).map(|s| s.sandbox_id);
    assert_eq!(sandbox, Some(created.sandbox_id));
}

/// The findings of the first hostile-input run, one by one.
#[tokio::test]
async fn reported_findings_answer_the_right_code() {
    let app = TestApp::spawn_with(|config| {
        config.server.max_message_bytes = 256 * 1024;
        config.sandbox.max_live_per_owner = 40;
    })
    .await;
    let mut owner = app.owner();
    let pool = app.pg().await;
    let live = owner.create_sandbox(common::create_request("finding")).await.unwrap().into_inner();
    common::wait_for_state(&pool, "RUNNING").await;

    // ExtendSandbox by 10^13 s used to overflow the timestamp addition and panic.
    let extend = |extension| proto::ExtendSandboxRequest {
        sandbox_id: live.sandbox_id.clone(),
        extension: Some(extension),
        ..Default::default()
    };
    use proto::extend_sandbox_request::Extension;
    let huge = Extension::TtlExtension(prost_types::Duration { seconds: 10_i64.pow(13), nanos: 0 });
    let status = owner.extend_sandbox(extend(huge)).await.expect_err("10^13 s");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["ttl_extension"]);
    // The largest accepted extension and a far-future expiry are capped at the maximum.
    let years =
        Extension::TtlExtension(prost_types::Duration { seconds: 99 * 365 * 86_400, nanos: 0 });
    let extended = owner.extend_sandbox(extend(years)).await.unwrap().into_inner();
    assert!(extended.capped, "capped at the maximum");
    let far = Extension::ExpireTime(prost_types::Timestamp { seconds: 253_402_300_000, nanos: 0 });
    let status = owner.extend_sandbox(extend(far)).await;
    assert!(
        status.is_ok() || status.as_ref().unwrap_err().code() == Code::InvalidArgument,
        "{status:?}"
    );

    // 4 million invalid states: one small error, not millions of violations.
    let states = proto::ListSandboxesRequest { states: vec![99; 200_000], ..Default::default() };
    let status = owner.list_sandboxes(states).await.expect_err("invalid states");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_small(&status, "states");

    // A 100 KB etag and a 10 KB label key are not echoed whole.
    let destroy = proto::DestroySandboxRequest {
        sandbox_id: live.sandbox_id.clone(),
        etag: "e".repeat(100_000),
        ..Default::default()
    };
    let status = owner.destroy_sandbox(destroy).await.expect_err("stale etag");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_small(&status, "etag");
    let labelled = proto::CreateSandboxRequest {
        template: "discord-guild".into(),
        labels: HashMap::from([("K".repeat(10_000), "v".into())]),
        ..Default::default()
    };
    let status = owner.create_sandbox(labelled).await.expect_err("bad label key");
    assert_small(&status, "label key");
    assert!(violated_fields(&status)[0].len() <= 128);

    // NUL in metadata, and in a forged page token whose fingerprint is right, never reach
    // PostgreSQL.
    let nul_metadata = proto::CreateSandboxRequest {
        template: "discord-guild".into(),
        metadata: Some(prost_types::Struct {
            fields: [(
                "note".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("a\0b".into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let status = owner.create_sandbox(nul_metadata).await.expect_err("NUL in metadata");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["metadata.note".to_string()])
    );
    let alice = Principal { tenant: "acme".into(), subject: "alice".into(), role: Role::Owner };
    let fingerprint = page_token::fingerprint(&page_token::for_caller(&alice, None::<String>));
    let forged = page_token::encode("1\u{0}2", &fingerprint);
    let mut routing = app.routing(Some(&app.owner_key));
    let list = proto::ListGuildRoutesRequest { page_token: forged, ..Default::default() };
    let status = routing.list_guild_routes(list).await.expect_err("forged token");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["page_token".to_string()])
    );
    // A well-formed token of this caller is accepted, so the refusal above was for the NUL.
    let genuine = page_token::encode("1", &fingerprint);
    routing
        .list_guild_routes(proto::ListGuildRoutesRequest {
            page_token: genuine,
            ..Default::default()
        })
        .await
        .unwrap();
    // A token taken from another tenant's listing is refused.
    let other = app.key_for("globex", "gus", Role::Owner).await;
    let mut other_routing = app.routing(Some(&other));
    let theirs = other_routing
        .list_guild_routes(proto::ListGuildRoutesRequest {
            page_token: page_token::encode("1", &fingerprint),
            ..Default::default()
        })
        .await
        .expect_err("another caller's token");
    assert_eq!(violated_fields(&theirs), ["page_token"]);

    // Resume tokens ahead of the log are refused, by both watches (the route watch used to
    // skip its snapshot and then stay silent).
    let ahead = |stream: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{stream}:999999999"))
    };
    let status = owner
        .watch_sandboxes(proto::WatchSandboxesRequest {
            resume_token: ahead("ev1"),
            ..Default::default()
        })
        .await
        .expect_err("a token ahead of the log");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["resume_token".to_string()])
    );
    let status = routing
        .watch_guild_routes(proto::WatchGuildRoutesRequest { resume_token: ahead("rt1") })
        .await
        .expect_err("a token ahead of the route log");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["resume_token".to_string()])
    );

    // ResolveGuilds with no ids, and a bad id with final_sync.
    let status =
        routing.resolve_guilds(proto::ResolveGuildsRequest::default()).await.expect_err("no ids");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["guild_ids".to_string()])
    );
    let destroy = proto::DestroySandboxRequest {
        sandbox_id: "nope".into(),
        final_sync: true,
        ..Default::default()
    };
    let status = owner.destroy_sandbox(destroy).await.expect_err("bad id");
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["sandbox_id".to_string()])
    );

    // page_size 1000 over large metadata: pages are cut to fit the message limit, and
    // following the tokens returns every sandbox once.
    let blob = "m".repeat(15_000);
    let mut ids = vec![live.sandbox_id.clone()];
    for index in 0..30 {
        let request = proto::CreateSandboxRequest {
            metadata: Some(prost_types::Struct {
                fields: [(
                    "blob".to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(blob.clone())),
                    },
                )]
                .into(),
            }),
            ..common::create_request(&format!("big-{index}"))
        };
        ids.push(owner.create_sandbox(request).await.unwrap().into_inner().sandbox_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = owner
            .list_sandboxes(proto::ListSandboxesRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("a page that fits the message limit")
            .into_inner();
        pages += 1;
        seen.extend(page.sandboxes.into_iter().map(|s| s.sandbox_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 1, "31 sandboxes of 15 KB do not fit one 256 KiB page");
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every sandbox exactly once");
}
