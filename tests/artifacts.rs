//! ArtifactService against real PostgreSQL, Redis and the in-process S3 server (s3s-fs): bytes
//! round-trip, size limit, idempotency, listing, review rules, four eyes, roles and tenants,
//! corruption, retention (with the destroy's prefix removal), watch, sandboxctl and the tenant
//! purge.

mod common;

use std::time::Duration;

use common::{Bearer, TestApp, WithS3, error_reason};
use sandboxd::{
    auth::Role,
    proto::{
        Artifact, ArtifactEventType, ArtifactType, GetArtifactRequest, ListArtifactsRequest,
        ListAuditEventsRequest, PublishArtifactHeader, PublishArtifactRequest, ReadArtifactRequest,
        ReviewArtifactRequest, ReviewDecision, ReviewState, WatchArtifactsRequest,
        WatchArtifactsResponse, artifact_service_client::ArtifactServiceClient,
        publish_artifact_request::Content,
    },
};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

type Artifacts = ArtifactServiceClient<InterceptedService<Channel, Bearer>>;

const NOTES: &str = r#"
name = "notes"
runtime = "none"
keep_objects = false
"#;

async fn setup() -> WithS3 {
    setup_with(|_| {}).await
}

async fn setup_with(customize: impl FnOnce(&mut sandboxd::config::Config)) -> WithS3 {
    common::spawn_with_s3_and("notes.toml", NOTES, customize).await
}

fn artifacts(app: &TestApp, key: &str) -> Artifacts {
    ArtifactServiceClient::with_interceptor(app.channel(), Bearer(Some(key.to_string())))
}

async fn create(app: &TestApp, key: &str) -> String {
    let request =
        sandboxd::proto::CreateSandboxRequest { template: "notes".into(), ..Default::default() };
    app.control(Some(key)).create_sandbox(request).await.unwrap().into_inner().sandbox_id
}

fn header(sandbox_id: &str, kind: ArtifactType, title: &str) -> PublishArtifactHeader {
    PublishArtifactHeader {
        sandbox_id: sandbox_id.into(),
        r#type: kind.into(),
        title: title.into(),
        ..Default::default()
    }
}

async fn publish_chunked(
    client: &mut Artifacts,
    header: PublishArtifactHeader,
    content: &[u8],
    chunk: usize,
) -> Result<Artifact, Status> {
    let mut messages = vec![PublishArtifactRequest { content: Some(Content::Header(header)) }];
    messages.extend(
        content
            .chunks(chunk.max(1))
            .map(|bytes| PublishArtifactRequest { content: Some(Content::Chunk(bytes.to_vec())) }),
    );
    client.publish_artifact(tokio_stream::iter(messages)).await.map(|reply| reply.into_inner())
}

async fn publish(
    client: &mut Artifacts,
    header: PublishArtifactHeader,
    content: &[u8],
) -> Result<Artifact, Status> {
    publish_chunked(client, header, content, 64 * 1024).await
}

async fn read_all(client: &mut Artifacts, id: &str) -> Result<(Vec<u8>, usize), Status> {
    let request = ReadArtifactRequest { artifact_id: id.into() };
    let mut stream = client.read_artifact(request).await?.into_inner();
    let (mut content, mut messages) = (Vec::new(), 0);
    while let Some(message) = stream.next().await {
        let message = message?;
        assert_eq!(message.offset as usize, content.len(), "chunks arrive in order");
        assert!(message.chunk.len() <= 64 * 1024, "chunks are at most 64 KiB");
        content.extend_from_slice(&message.chunk);
        messages += 1;
    }
    Ok((content, messages))
}

async fn s3_client(app: &TestApp) -> aws_sdk_s3::Client {
    sandboxd::objectstore::client(&app.config.s3).await
}

async fn object_exists(app: &TestApp, key: &str) -> bool {
    let client = s3_client(app).await;
    client.head_object().bucket(&app.config.s3.bucket).key(key).send().await.is_ok()
}

async fn object_keys(app: &TestApp, prefix: &str) -> Vec<String> {
    let client = s3_client(app).await;
    let page =
        client.list_objects_v2().bucket(&app.config.s3.bucket).prefix(prefix).send().await.unwrap();
    page.contents().iter().filter_map(|object| object.key().map(str::to_string)).collect()
}

fn object_key(artifact: &Artifact) -> String {
    format!("sandboxes/{}/artifacts/{}", artifact.sandbox_id, artifact.artifact_id)
}

async fn artifact_rows(app: &TestApp) -> i64 {
    let pool = app.pg().await;
    sqlx::query_scalar("SELECT count(*) FROM artifacts").fetch_one(&pool).await.unwrap()
}

#[tokio::test]
async fn bytes_round_trip_multi_chunk_and_empty() {
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut client = artifacts(app, &app.owner_key);

    // 1.5 MiB, not a multiple of the 64 KiB read chunk, sent in 100 KiB messages.
    let content: Vec<u8> = (0..1_572_869u32).map(|i| (i * 31 % 251) as u8).collect();
    let published = publish_chunked(
        &mut client,
        header(&sandbox, ArtifactType::File, "big"),
        &content,
        100_000,
    )
    .await
    .unwrap();
    assert_eq!(published.size_bytes, content.len() as i64);
    assert_eq!(published.sha256, hex::encode(Sha256::digest(&content)));
    assert_eq!(published.review_state(), ReviewState::Pending);
    assert_eq!(published.content_type, "application/octet-stream");
    assert_eq!(published.publisher, "alice");
    assert!(published.preview.is_empty(), "a file has no preview");
    assert!(object_exists(app, &object_key(&published)).await, "the bytes are in S3");
    let (read, messages) = read_all(&mut client, &published.artifact_id).await.unwrap();
    assert!(messages > 1, "a large artifact comes in several chunks");
    assert!(read == content, "bytes round-trip equal");
    let got = client
        .get_artifact(GetArtifactRequest { artifact_id: published.artifact_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, published, "GetArtifact returns the record PublishArtifact returned");

    let empty =
        publish(&mut client, header(&sandbox, ArtifactType::Text, "empty"), b"").await.unwrap();
    assert_eq!((empty.size_bytes, empty.content_type.as_str()), (0, "text/plain"));
    assert_eq!(empty.sha256, hex::encode(Sha256::digest(b"")));
    let (read, messages) = read_all(&mut client, &empty.artifact_id).await.unwrap();
    assert_eq!((read.len(), messages), (0, 1), "an empty artifact is one empty chunk");

    let text = format!("{}tail", "é".repeat(3000));
    let diff = publish(&mut client, header(&sandbox, ArtifactType::Diff, "diff"), text.as_bytes())
        .await
        .unwrap();
    assert_eq!(diff.content_type, "text/x-diff");
    assert!(diff.preview.len() <= 4096 && text.starts_with(&diff.preview));
    assert_eq!(diff.preview.len(), 4096, "cut at the last whole character within 4 KiB");

    // Published artifacts are audited for ListAuditEvents too.
    let events = app
        .owner()
        .list_audit_events(ListAuditEventsRequest {
            sandbox_id: sandbox.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let published_events =
        events.iter().filter(|event| event.event_type == "artifact_published").count();
    assert_eq!(published_events, 3);
}

#[tokio::test]
async fn bad_headers_and_not_running_sandboxes_are_refused_without_leftovers() {
    let setup = setup_with(|config| config.artifacts.max_bytes = 1024 * 1024).await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut client = artifacts(app, &app.owner_key);

    let over = vec![b'x'; 1024 * 1024 + 1];
    let refused =
        publish(&mut client, header(&sandbox, ArtifactType::Log, "big"), &over).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_reason(&refused), "ARTIFACT_TOO_LARGE");
    let exactly = vec![b'x'; 1024 * 1024];
    publish(&mut client, header(&sandbox, ArtifactType::Log, "at the limit"), &exactly)
        .await
        .expect("content at the limit is taken");
    assert_eq!(artifact_rows(app).await, 1, "only the artifact at the limit is recorded");
    let stored = object_keys(app, &format!("sandboxes/{sandbox}/artifacts/")).await;
    assert_eq!(stored.len(), 1, "nothing of the refused stream is in S3: {stored:?}");

    let mut bad = header(&sandbox, ArtifactType::Image, "");
    bad.content_type = "text/plain".into();
    bad.conversation_id = "no spaces".into();
    bad.sandbox_path = "../escape".into();
    let refused = publish(&mut client, bad, b"x").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = common::violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, ["content_type", "conversation_id", "sandbox_path", "title"]);
    let mut png = header(&sandbox, ArtifactType::Image, "not a png");
    png.content_type = "image/png".into();
    let refused = publish(&mut client, png, b"GIF89a...").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "image bytes are sniffed");

    let only_chunks = vec![PublishArtifactRequest { content: Some(Content::Chunk(b"x".to_vec())) }];
    let refused = client.publish_artifact(tokio_stream::iter(only_chunks)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "the header comes first");
    let twice = vec![
        PublishArtifactRequest {
            content: Some(Content::Header(header(&sandbox, ArtifactType::Text, "a"))),
        },
        PublishArtifactRequest {
            content: Some(Content::Header(header(&sandbox, ArtifactType::Text, "b"))),
        },
    ];
    let refused = client.publish_artifact(tokio_stream::iter(twice)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "a second header is refused");

    app.owner().destroy_sandbox(common::destroy_request(&sandbox)).await.unwrap();
    let refused =
        publish(&mut client, header(&sandbox, ArtifactType::Text, "late"), b"x").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&refused), "SANDBOX_NOT_RUNNING");
    assert_eq!(artifact_rows(app).await, 1, "refused publications leave no rows");
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_artifact() {
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut client = artifacts(app, &app.owner_key);
    let mut first = header(&sandbox, ArtifactType::Text, "report");
    first.request_id = "report-1".into();
    let a = publish(&mut client, first.clone(), b"first").await.unwrap();
    let b = publish(&mut client, first, b"second, ignored").await.unwrap();
    assert_eq!(a, b, "the second call returns the artifact of the first");
    assert_eq!(artifact_rows(app).await, 1);
    let (read, _) = read_all(&mut client, &a.artifact_id).await.unwrap();
    assert_eq!(read, b"first");
    assert_eq!(object_keys(app, &format!("sandboxes/{sandbox}/artifacts/")).await.len(), 1);
}

fn list_request(page_size: i32) -> ListArtifactsRequest {
    ListArtifactsRequest { page_size, ..Default::default() }
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() {
    let setup = setup().await;
    let app = &setup.app;
    let (one, two) = (create(app, &app.owner_key).await, create(app, &app.owner_key).await);
    let mut client = artifacts(app, &app.owner_key);
    let mut published = Vec::new();
    for (index, sandbox) in [&one, &two, &one, &two, &one].into_iter().enumerate() {
        let mut header = header(sandbox, ArtifactType::Text, &format!("artifact {index}"));
        header.conversation_id = if index % 2 == 0 { "conv:a".into() } else { String::new() };
        published.push(publish(&mut client, header, b"x").await.unwrap());
    }
    let newest_first: Vec<String> =
        published.iter().rev().map(|artifact| artifact.artifact_id.clone()).collect();

    let mut seen = Vec::new();
    let mut request = list_request(2);
    loop {
        let page = client.list_artifacts(request.clone()).await.unwrap().into_inner();
        assert!(page.artifacts.len() <= 2);
        seen.extend(page.artifacts.into_iter().map(|artifact| artifact.artifact_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen, newest_first, "every artifact once, newest first, over three pages");

    let ids = |artifacts: Vec<Artifact>| -> Vec<String> {
        artifacts.into_iter().map(|artifact| artifact.artifact_id).collect()
    };
    let by_sandbox = ListArtifactsRequest { sandbox_id: two.clone(), ..list_request(0) };
    let found = ids(client.list_artifacts(by_sandbox).await.unwrap().into_inner().artifacts);
    assert_eq!(found, [newest_first[1].clone(), newest_first[3].clone()]);
    let by_conversation =
        ListArtifactsRequest { conversation_id: "conv:a".into(), ..list_request(0) };
    let found = ids(client.list_artifacts(by_conversation).await.unwrap().into_inner().artifacts);
    assert_eq!(found.len(), 3);

    let approve = ReviewArtifactRequest {
        artifact_id: published[2].artifact_id.clone(),
        decision: ReviewDecision::Approve.into(),
        ..Default::default()
    };
    client.review_artifact(approve).await.unwrap();
    let approved = ListArtifactsRequest {
        review_state: ReviewState::Approved.into(),
        sandbox_id: one.clone(),
        ..list_request(0)
    };
    let found = ids(client.list_artifacts(approved).await.unwrap().into_inner().artifacts);
    assert_eq!(found, [published[2].artifact_id.clone()]);
    let pending =
        ListArtifactsRequest { review_state: ReviewState::Pending.into(), ..list_request(0) };
    assert_eq!(client.list_artifacts(pending).await.unwrap().into_inner().artifacts.len(), 4);

    // A token is bound to its filters.
    let page = client.list_artifacts(list_request(1)).await.unwrap().into_inner();
    let other = ListArtifactsRequest {
        sandbox_id: one.clone(),
        page_token: page.next_page_token,
        ..list_request(1)
    };
    let refused = client.list_artifacts(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

fn review(artifact: &Artifact, decision: ReviewDecision, comment: &str) -> ReviewArtifactRequest {
    ReviewArtifactRequest {
        artifact_id: artifact.artifact_id.clone(),
        decision: decision.into(),
        comment: comment.into(),
        etag: String::new(),
    }
}

#[tokio::test]
async fn review_rules_roles_and_tenants() {
    let setup = setup().await;
    let app = &setup.app;
    let member_key = app.key_for("acme", "mallory", Role::Member).await;
    let router_key = app.key_for("acme", "router-1", Role::Router).await;
    let stranger_key = app.key_for("umbrella", "eve", Role::Owner).await;
    let owners = create(app, &app.owner_key).await;
    let members = create(app, &member_key).await;
    let mut owner = artifacts(app, &app.owner_key);
    let mut member = artifacts(app, &member_key);

    let report =
        publish(&mut owner, header(&owners, ArtifactType::Text, "report"), b"r").await.unwrap();
    let approved = owner
        .review_artifact(review(&report, ReviewDecision::Approve, "looks right"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.review_state(), ReviewState::Approved);
    assert_eq!(
        (approved.reviewer.as_str(), approved.review_comment.as_str()),
        ("alice", "looks right")
    );
    assert!(approved.review_time.is_some() && approved.etag != report.etag);
    let again =
        owner.review_artifact(review(&report, ReviewDecision::Reject, "")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&again), "ARTIFACT_ALREADY_REVIEWED");

    let log = publish(&mut owner, header(&owners, ArtifactType::Log, "log"), b"l").await.unwrap();
    let stale = ReviewArtifactRequest {
        etag: "\"stale\"".into(),
        ..review(&log, ReviewDecision::Reject, "")
    };
    let refused = owner.review_artifact(stale).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted);
    assert_eq!(error_reason(&refused), "ETAG_MISMATCH");
    let current = ReviewArtifactRequest {
        etag: log.etag.clone(),
        ..review(&log, ReviewDecision::Reject, "noise")
    };
    let rejected = owner.review_artifact(current).await.unwrap().into_inner();
    assert_eq!(rejected.review_state(), ReviewState::Rejected);
    let unspecified = ReviewArtifactRequest {
        decision: ReviewDecision::Unspecified.into(),
        comment: "x".repeat(4097),
        ..review(&log, ReviewDecision::Approve, "")
    };
    let refused = owner.review_artifact(unspecified).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(common::violated_fields(&refused), ["decision", "comment"]);

    // The review is audited with reviewer, decision and comment.
    let pool = app.pg().await;
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE event_type = 'artifact_reviewed' AND details->>'artifact_id' = $1",
    )
    .bind(&log.artifact_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(details["decision"], "reject");
    assert_eq!(details["reviewer"], "alice");
    assert_eq!(details["comment"], "noise");

    // Members see and review the artifacts of their own sandboxes only.
    let own =
        publish(&mut member, header(&members, ArtifactType::Text, "mine"), b"m").await.unwrap();
    let visible = member.list_artifacts(list_request(0)).await.unwrap().into_inner().artifacts;
    assert_eq!(visible, std::slice::from_ref(&own));
    let hidden = member
        .get_artifact(GetArtifactRequest { artifact_id: report.artifact_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let refused =
        publish(&mut member, header(&owners, ArtifactType::Text, "x"), b"x").await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "a member publishes only from its own sandboxes");
    let refused =
        member.review_artifact(review(&report, ReviewDecision::Approve, "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    member.review_artifact(review(&own, ReviewDecision::Approve, "")).await.unwrap();
    // Owners see the member's too.
    assert_eq!(
        owner.list_artifacts(list_request(0)).await.unwrap().into_inner().artifacts.len(),
        3
    );

    let mut router = artifacts(app, &router_key);
    let denied = router.list_artifacts(list_request(0)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = router
        .get_artifact(GetArtifactRequest { artifact_id: report.artifact_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut stranger = artifacts(app, &stranger_key);
    for id in [&report.artifact_id, &own.artifact_id] {
        let request = GetArtifactRequest { artifact_id: id.clone() };
        assert_eq!(stranger.get_artifact(request).await.unwrap_err().code(), Code::NotFound);
        let request = ReadArtifactRequest { artifact_id: id.clone() };
        assert_eq!(stranger.read_artifact(request).await.unwrap_err().code(), Code::NotFound);
    }
    let refused =
        stranger.review_artifact(review(&log, ReviewDecision::Approve, "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert!(
        stranger.list_artifacts(list_request(0)).await.unwrap().into_inner().artifacts.is_empty()
    );
}

#[tokio::test]
async fn four_eyes_refuses_the_publisher_and_allows_another_admin() {
    // Off by default, on for acme by its override.
    let setup = setup_with(|config| {
        config.artifacts.four_eyes_tenants.insert("acme".into(), true);
    })
    .await;
    let app = &setup.app;
    let admin_key = app.key_for("acme", "bob", Role::Admin).await;
    let other_tenant = app.key_for("initech", "peter", Role::Owner).await;
    let sandbox = create(app, &app.owner_key).await;
    let mut publisher = artifacts(app, &app.owner_key);
    let artifact = publish(&mut publisher, header(&sandbox, ArtifactType::Diff, "patch"), b"+x")
        .await
        .unwrap();
    let refused = publisher
        .review_artifact(review(&artifact, ReviewDecision::Approve, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(error_reason(&refused), "FOUR_EYES_REQUIRED");
    let reviewed = artifacts(app, &admin_key)
        .review_artifact(review(&artifact, ReviewDecision::Approve, "ok"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reviewed.review_state(), reviewed.reviewer.as_str()),
        (ReviewState::Approved, "bob")
    );

    // Another tenant without the override reviews its own artifacts.
    let theirs = create(app, &other_tenant).await;
    let mut client = artifacts(app, &other_tenant);
    let own = publish(&mut client, header(&theirs, ArtifactType::Text, "t"), b"t").await.unwrap();
    client.review_artifact(review(&own, ReviewDecision::Reject, "")).await.unwrap();

    let server = &app.server().app;
    let scraped = server.metrics.render(&server.store, &[]).await.unwrap();
    for line in [
        "sandboxd_artifacts_published_total{type=\"diff\"} 1",
        "sandboxd_artifacts_published_total{type=\"text\"} 1",
        "sandboxd_artifact_reviews_total{decision=\"approve\"} 1",
        "sandboxd_artifact_reviews_total{decision=\"reject\"} 1",
    ] {
        assert!(scraped.lines().any(|scraped| scraped == line), "{line} missing:\n{scraped}");
    }
}

#[tokio::test]
async fn reading_overwritten_bytes_is_data_loss() {
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut client = artifacts(app, &app.owner_key);
    let content = vec![7u8; 200_000];
    let artifact =
        publish(&mut client, header(&sandbox, ArtifactType::File, "f"), &content).await.unwrap();
    assert_eq!(read_all(&mut client, &artifact.artifact_id).await.unwrap().0, content);
    let mut tampered = content.clone();
    tampered[150_000] = 8;
    s3_client(app)
        .await
        .put_object()
        .bucket(&app.config.s3.bucket)
        .key(object_key(&artifact))
        .body(tampered.into())
        .send()
        .await
        .unwrap();
    let failed = read_all(&mut client, &artifact.artifact_id).await.unwrap_err();
    assert_eq!(failed.code(), Code::DataLoss, "{failed:?}");
    assert_eq!(error_reason(&failed), "ARTIFACT_CORRUPT");
    s3_client(app)
        .await
        .delete_object()
        .bucket(&app.config.s3.bucket)
        .key(object_key(&artifact))
        .send()
        .await
        .unwrap();
    let failed = read_all(&mut client, &artifact.artifact_id).await.unwrap_err();
    assert_eq!(failed.code(), Code::DataLoss, "missing bytes are data loss too");
}

#[tokio::test]
async fn retention_removes_expired_artifacts_and_destroy_keeps_them() {
    let setup = setup_with(|config| config.reconcile.interval = Duration::from_millis(100)).await;
    let app = &setup.app;
    let (old, recent) = (create(app, &app.owner_key).await, create(app, &app.owner_key).await);
    let mut client = artifacts(app, &app.owner_key);
    let expiring =
        publish(&mut client, header(&old, ArtifactType::Text, "old"), b"o").await.unwrap();
    let kept =
        publish(&mut client, header(&recent, ArtifactType::Text, "new"), b"n").await.unwrap();
    // A workspace object beside the artifact, which the destroy removes (keep_objects = false).
    let workspace_key = format!("sandboxes/{old}/workspace/file.txt");
    s3_client(app)
        .await
        .put_object()
        .bucket(&app.config.s3.bucket)
        .key(&workspace_key)
        .body(b"w".to_vec().into())
        .send()
        .await
        .unwrap();
    for id in [&old, &recent] {
        app.owner().destroy_sandbox(common::destroy_request(id)).await.unwrap();
    }
    assert!(!object_exists(app, &workspace_key).await, "the destroy removed the prefix");
    assert!(object_exists(app, &object_key(&expiring)).await, "but not the artifacts under it");
    let after_destroy = client
        .get_artifact(GetArtifactRequest { artifact_id: kept.artifact_id.clone() })
        .await
        .unwrap()
        .into_inner();
    let expire = after_destroy.expire_time.expect("a destroyed sandbox's artifact expires");
    let from_now = expire.seconds - chrono::Utc::now().timestamp();
    assert!(
        (30 * 86_400 - 60..=30 * 86_400).contains(&from_now),
        "30 days after the destroy: {from_now} s"
    );

    // The old sandbox was destroyed 31 days ago, past the default retention of 30 days.
    let pool = app.pg().await;
    sqlx::query("UPDATE sandboxes SET destroyed_at = now() - interval '31 days' WHERE id = $1")
        .bind(common::uuid_of(&old))
        .execute(&pool)
        .await
        .unwrap();
    let id = common::uuid_of(&expiring.artifact_id);
    common::eventually("the expired artifact's removal", Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
            left == 0
        }
    })
    .await;
    assert!(!object_exists(app, &object_key(&expiring)).await, "its object went with it");
    assert!(object_exists(app, &object_key(&kept)).await, "one within retention is kept");
    let kept_now = client
        .get_artifact(GetArtifactRequest { artifact_id: kept.artifact_id.clone() })
        .await
        .unwrap();
    assert_eq!(kept_now.into_inner().artifact_id, kept.artifact_id);
    let removed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'artifact_removed' AND details->>'artifact_id' = $1 AND details->>'reason' = 'retention'",
    )
    .bind(&expiring.artifact_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(removed, 1, "the removal is audited");
}

async fn next_event(
    stream: &mut tonic::Streaming<WatchArtifactsResponse>,
) -> WatchArtifactsResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

#[tokio::test]
async fn watch_sees_published_and_reviewed_events_and_resumes() {
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut client = artifacts(app, &app.owner_key);
    let request = WatchArtifactsRequest { sandbox_id: sandbox.clone(), ..Default::default() };
    let mut stream = client.watch_artifacts(request).await.unwrap().into_inner();
    let artifact =
        publish(&mut client, header(&sandbox, ArtifactType::Text, "w"), b"w").await.unwrap();
    client.review_artifact(review(&artifact, ReviewDecision::Approve, "yes")).await.unwrap();
    let published = next_event(&mut stream).await;
    assert_eq!(published.event_type(), ArtifactEventType::Published);
    let snapshot = published.artifact.clone().unwrap();
    assert_eq!(snapshot.artifact_id, artifact.artifact_id);
    assert_eq!(snapshot.review_state(), ReviewState::Pending);
    let reviewed = next_event(&mut stream).await;
    assert_eq!(reviewed.event_type(), ArtifactEventType::Reviewed);
    let snapshot = reviewed.artifact.clone().unwrap();
    assert_eq!(
        (snapshot.review_state(), snapshot.review_comment.as_str()),
        (ReviewState::Approved, "yes")
    );
    drop(stream);

    let resume =
        WatchArtifactsRequest { resume_token: published.resume_token, ..Default::default() };
    let mut resumed = client.watch_artifacts(resume).await.unwrap().into_inner();
    let again = next_event(&mut resumed).await;
    assert_eq!(again.event_type(), ArtifactEventType::Reviewed, "resumes right after the token");
    assert_eq!(again.resume_token, reviewed.resume_token);

    let bad = WatchArtifactsRequest { resume_token: "nope".into(), ..Default::default() };
    assert_eq!(client.watch_artifacts(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn sandboxctl_publishes_lists_shows_cats_and_reviews() {
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let ctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"));
        command
            .args(["--addr", &format!("http://{}", app.addr)])
            .args(args)
            .env("SANDBOXD_API_KEY", &app.owner_key);
        command
    };
    async fn ok(mut command: tokio::process::Command) -> String {
        let output = command.output().await.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), "--- a\n+++ b\n+added\n").unwrap();
    let local_path = local.path().to_str().unwrap();
    let published = ok(ctl(&[
        "--json",
        "artifact",
        "publish",
        &sandbox,
        local_path,
        "--type",
        "diff",
        "--title",
        "a patch",
        "--conversation",
        "c-1",
    ]))
    .await;
    let published: serde_json::Value = serde_json::from_str(published.trim()).unwrap();
    let id = published["artifact_id"].as_str().unwrap().to_string();
    assert_eq!(published["review_state"], "PENDING");
    assert_eq!(published["type"], "diff");
    assert_eq!(published["conversation_id"], "c-1");

    let listed = ok(ctl(&["artifact", "ls", "--state", "pending"])).await;
    assert!(listed.contains(&id) && listed.contains("a patch"), "{listed}");
    let shown = ok(ctl(&["artifact", "get", &id])).await;
    assert!(shown.contains("PENDING") && shown.contains("text/x-diff"), "{shown}");
    assert_eq!(ok(ctl(&["artifact", "cat", &id])).await, "--- a\n+++ b\n+added\n");
    let approved = ok(ctl(&["--json", "artifact", "approve", &id, "--comment", "ship it"])).await;
    let approved: serde_json::Value = serde_json::from_str(approved.trim()).unwrap();
    assert_eq!(
        (approved["review_state"].as_str(), approved["review_comment"].as_str()),
        (Some("APPROVED"), Some("ship it"))
    );
    let output = ctl(&["artifact", "reject", &id]).output().await.unwrap();
    assert!(!output.status.success(), "a second review fails");
    assert!(String::from_utf8_lossy(&output.stderr).contains("ARTIFACT_ALREADY_REVIEWED"));
    let listed = ok(ctl(&["artifact", "ls", "--state", "pending"])).await;
    assert!(!listed.contains(&id));
}

#[tokio::test]
async fn tenant_purge_refuses_live_sandboxes_then_removes_artifacts_and_objects() {
    let setup = setup().await;
    let app = &setup.app;
    let other_key = app.key_for("globex", "hank", Role::Owner).await;
    let sandbox = create(app, &app.owner_key).await;
    let others = create(app, &other_key).await;
    let mut client = artifacts(app, &app.owner_key);
    let mine = publish(&mut client, header(&sandbox, ArtifactType::Text, "a"), b"a").await.unwrap();
    let theirs =
        publish(&mut artifacts(app, &other_key), header(&others, ArtifactType::Text, "b"), b"b")
            .await
            .unwrap();
    let purge = || {
        let s3 = &app.config.s3;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxd"));
        command
            .args(["tenants", "purge", "acme"])
            .env("SANDBOXD_DATABASE__URL", &app.database_url)
            .env("SANDBOXD_S3__ENABLED", "true")
            .env("SANDBOXD_S3__ENDPOINT", &s3.endpoint)
            .env("SANDBOXD_S3__BUCKET", &s3.bucket)
            .env("SANDBOXD_S3__REGION", &s3.region)
            .env("SANDBOXD_S3__FORCE_PATH_STYLE", "true")
            .env("SANDBOXD_S3__ACCESS_KEY_ID", &s3.access_key_id)
            .env("SANDBOXD_S3__SECRET_ACCESS_KEY", s3.secret_access_key.expose())
            .env("SANDBOXD_REDIS__URL", common::redis_url());
        command
    };
    let refused = purge().output().await.unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not destroyed"), "{stderr}");
    assert_eq!(artifact_rows(app).await, 2, "nothing was removed");

    app.owner().destroy_sandbox(common::destroy_request(&sandbox)).await.unwrap();
    let output = purge().output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 artifacts removed"));
    assert!(!object_exists(app, &object_key(&mine)).await, "the tenant's object is gone");
    let gone =
        client.get_artifact(GetArtifactRequest { artifact_id: mine.artifact_id.clone() }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    assert!(object_exists(app, &object_key(&theirs)).await, "another tenant's stays");
    assert_eq!(artifact_rows(app).await, 1);
}

#[tokio::test]
async fn bytes_round_trip_and_corruption_is_caught_on_moto() {
    let moto = common::s3_servers::MotoServer::start();
    let mut s3 = sandboxd::config::S3Config {
        enabled: true,
        endpoint: format!("http://{}", moto.addr),
        access_key_id: "testing".into(),
        secret_access_key: sandboxd::config::Secret::new("testing".to_string()),
        force_path_style: true,
        ..Default::default()
    };
    s3.bucket = format!("artifacts-{}", uuid::Uuid::new_v4().simple());
    let client = sandboxd::objectstore::client(&s3).await;
    sandboxd::objectstore::ensure_bucket(&client, &s3.bucket).await.unwrap();
    let templates = common::templates_with(|_, text| text);
    std::fs::write(templates.path().join("notes.toml"), NOTES).unwrap();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(move |config| {
        config.s3 = s3;
        config.templates.dir = dir;
    })
    .await;
    let sandbox = create(&app, &app.owner_key).await;
    let mut artifacts = artifacts(&app, &app.owner_key);
    let content: Vec<u8> = (0..1_200_000u32).map(|i| (i % 253) as u8).collect();
    let artifact = publish(&mut artifacts, header(&sandbox, ArtifactType::Log, "moto"), &content)
        .await
        .unwrap();
    let listed = client
        .list_objects_v2()
        .bucket(&app.config.s3.bucket)
        .prefix(format!("sandboxes/{sandbox}/artifacts/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 1, "the bytes are in moto");
    assert!(read_all(&mut artifacts, &artifact.artifact_id).await.unwrap().0 == content);
    client
        .put_object()
        .bucket(&app.config.s3.bucket)
        .key(object_key(&artifact))
        .body(b"something else".to_vec().into())
        .send()
        .await
        .unwrap();
    let failed = read_all(&mut artifacts, &artifact.artifact_id).await.unwrap_err();
    assert_eq!(failed.code(), Code::DataLoss);
}

#[tokio::test]
async fn a_publication_the_client_abandons_mid_stream_leaves_nothing() {
    let captured = common::log_capture::CapturedLogs::install();
    let setup = setup().await;
    let app = &setup.app;
    let sandbox = create(app, &app.owner_key).await;
    let mut first = header(&sandbox, ArtifactType::Log, "abandoned");
    first.request_id = "abandoned-once".into();
    // The stream stays open: the header and a chunk are sent, the end never is.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(PublishArtifactRequest { content: Some(Content::Header(first.clone())) })
        .await
        .unwrap();
    sender
        .send(PublishArtifactRequest { content: Some(Content::Chunk(vec![b'x'; 4096])) })
        .await
        .unwrap();
    let mut client = artifacts(app, &app.owner_key);
    let call = tokio::spawn(async move {
        client.publish_artifact(tokio_stream::wrappers::ReceiverStream::new(receiver)).await
    });
    common::eventually("the server is publishing", Duration::from_secs(10), || async {
        captured.text().contains("artifact.publish")
    })
    .await;
    // The client goes away mid-stream: its call is dropped (HTTP/2 reset), the stream never ends.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    common::eventually("the server saw the call cancelled", Duration::from_secs(10), || {
        common::one_cancelled_call(app, "PublishArtifact")
    })
    .await;
    // Work a handler hands off runs to completion on tracked tasks: wait until none is left.
    common::wait_for_handed_off_work(app).await;
    drop(sender);
    assert_eq!(artifact_rows(app).await, 0, "no record of the abandoned publication");
    let stored = object_keys(app, &format!("sandboxes/{sandbox}/artifacts/")).await;
    assert!(stored.is_empty(), "no bytes of it in S3: {stored:?}");
    // Its request id was never used: a retry publishes the artifact, once.
    let mut client = artifacts(app, &app.owner_key);
    let retried = publish(&mut client, first, b"complete").await.unwrap();
    assert_eq!(retried.size_bytes, 8);
    assert_eq!(artifact_rows(app).await, 1);
}
