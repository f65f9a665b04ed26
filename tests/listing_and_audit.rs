//! ListSandboxes (filters, visibility, keyset pagination under concurrent change), ExtendSandbox
//! and ListAuditEvents.

mod common;

use std::collections::{HashMap, HashSet};

use common::{TestApp, by_id, create_request, destroy_request, error_reason, violated_fields};
use prost_types::Duration;
use sandboxd::{
    auth::Role,
    proto::{
        CreateSandboxRequest, ExtendSandboxRequest, ListAuditEventsRequest, ListSandboxesRequest,
        Sandbox, SandboxState, extend_sandbox_request::Extension,
    },
};
use tonic::Code;

fn labelled(name: &str, template: &str, team: &str) -> CreateSandboxRequest {
    CreateSandboxRequest {
        template: template.into(),
        labels: HashMap::from([("team".into(), team.into()), ("env".into(), "test".into())]),
        ..create_request(name)
    }
}

fn names(sandboxes: &[Sandbox]) -> Vec<&str> {
    sandboxes.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn filters_combine_and_results_come_newest_first() {
    let app = TestApp::spawn_with(|config| config.sandbox.max_live_per_owner = 50).await;
    let mut owner = app.owner();
    owner.create_sandbox(labelled("a1", "discord-guild", "red")).await.unwrap();
    owner.create_sandbox(labelled("a2", "git-agent", "red")).await.unwrap();
    let a3 =
        owner.create_sandbox(labelled("a3", "discord-guild", "blue")).await.unwrap().into_inner();
    owner.destroy_sandbox(destroy_request(&a3.sandbox_id)).await.unwrap();
    let bob = app.key_for("acme", "bob", Role::Member).await;
    app.control(Some(&bob)).create_sandbox(labelled("b1", "discord-guild", "red")).await.unwrap();

    let list = |request: ListSandboxesRequest| {
        let mut client = app.owner();
        async move { client.list_sandboxes(request).await.unwrap().into_inner().sandboxes }
    };
    assert_eq!(names(&list(ListSandboxesRequest::default()).await), ["b1", "a3", "a2", "a1"]);
    let running =
        ListSandboxesRequest { states: vec![SandboxState::Running as i32], ..Default::default() };
    assert_eq!(names(&list(running).await), ["b1", "a2", "a1"]);
    let guild_red = ListSandboxesRequest {
        template: "discord-guild".into(),
        labels: HashMap::from([("team".into(), "red".into())]),
        ..Default::default()
    };
    assert_eq!(names(&list(guild_red).await), ["b1", "a1"]);
    let alices = ListSandboxesRequest { owner: "alice".into(), ..Default::default() };
    assert_eq!(names(&list(alices).await), ["a3", "a2", "a1"]);
    let nothing = ListSandboxesRequest {
        labels: HashMap::from([("team".into(), "green".into())]),
        ..Default::default()
    };
    assert!(list(nothing).await.is_empty());

    // A member sees only their own sandboxes, whatever the filters say.
    let bobs = app
        .control(Some(&bob))
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&bobs.sandboxes), ["b1"]);
}

#[tokio::test]
async fn pages_stay_correct_while_sandboxes_come_and_go() {
    let app = TestApp::spawn_with(|config| config.sandbox.max_live_per_owner = 50).await;
    let mut owner = app.owner();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            owner.create_sandbox(create_request(&format!("p{i}"))).await.unwrap().into_inner(),
        );
    }
    let first = owner
        .list_sandboxes(ListSandboxesRequest { page_size: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&first.sandboxes), ["p6", "p5", "p4"]);
    assert!(!first.next_page_token.is_empty());

    // Changes between pages: a new sandbox (newer than every page) and a destroyed one.
    owner.create_sandbox(create_request("late")).await.unwrap();
    owner.destroy_sandbox(destroy_request(&created[2].sandbox_id)).await.unwrap();

    let mut seen: Vec<String> = names(&first.sandboxes).iter().map(|s| s.to_string()).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = owner
            .list_sandboxes(ListSandboxesRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.sandboxes.iter().map(|s| s.name.clone()));
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p6", "p5", "p4", "p3", "p2", "p1", "p0"], "no sandbox skipped or repeated");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
}

#[tokio::test]
async fn page_tokens_and_sizes_are_validated() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    for i in 0..2 {
        owner.create_sandbox(create_request(&format!("v{i}"))).await.unwrap();
    }
    let page = owner
        .list_sandboxes(ListSandboxesRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let other_filters = ListSandboxesRequest {
        page_size: 1,
        page_token: page.next_page_token,
        template: "git-agent".into(),
        ..Default::default()
    };
    let status = owner.list_sandboxes(other_filters).await.unwrap_err();
    assert_eq!(
        (status.code(), violated_fields(&status)),
        (Code::InvalidArgument, vec!["page_token".to_string()])
    );
    for bad in [
        ListSandboxesRequest { page_size: -1, ..Default::default() },
        ListSandboxesRequest { page_token: "%%%".into(), ..Default::default() },
        ListSandboxesRequest { states: vec![0], ..Default::default() },
        ListSandboxesRequest { states: vec![99], ..Default::default() },
        ListSandboxesRequest { template: "Bad!".into(), ..Default::default() },
    ] {
        let status = owner.list_sandboxes(bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
}

fn extend_by(id: &str, seconds: i64) -> ExtendSandboxRequest {
    ExtendSandboxRequest {
        sandbox_id: id.into(),
        extension: Some(Extension::TtlExtension(Duration { seconds, nanos: 0 })),
        etag: String::new(),
    }
}

#[tokio::test]
async fn extend_moves_the_expiry_caps_it_at_the_maximum_and_needs_a_live_sandbox() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let sandbox = owner.create_sandbox(create_request("ext")).await.unwrap().into_inner();
    let expire = sandbox.expire_time.unwrap().seconds;

    let extended =
        owner.extend_sandbox(extend_by(&sandbox.sandbox_id, 3600)).await.unwrap().into_inner();
    assert!(!extended.capped);
    assert_eq!(extended.expire_time.unwrap().seconds, expire + 3600);

    let capped = owner
        .extend_sandbox(extend_by(&sandbox.sandbox_id, 1000 * 3600))
        .await
        .unwrap()
        .into_inner();
    assert!(capped.capped);
    let created = sandbox.create_time.unwrap().seconds;
    assert_eq!(
        capped.expire_time.unwrap().seconds,
        created + 168 * 3600,
        "capped at creation + 168 h"
    );
    assert_eq!(capped.max_expire_time, capped.expire_time);

    let stale =
        ExtendSandboxRequest { etag: sandbox.etag.clone(), ..extend_by(&sandbox.sandbox_id, 60) };
    let status = owner.extend_sandbox(stale).await.unwrap_err();
    assert_eq!((status.code(), error_reason(&status).as_str()), (Code::Aborted, "ETAG_MISMATCH"));

    let no_extension =
        ExtendSandboxRequest { extension: None, ..extend_by(&sandbox.sandbox_id, 1) };
    assert_eq!(owner.extend_sandbox(no_extension).await.unwrap_err().code(), Code::InvalidArgument);

    owner.destroy_sandbox(destroy_request(&sandbox.sandbox_id)).await.unwrap();
    let status = owner.extend_sandbox(extend_by(&sandbox.sandbox_id, 60)).await.unwrap_err();
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (Code::FailedPrecondition, "SANDBOX_NOT_LIVE")
    );
}

#[tokio::test]
async fn audit_events_list_newest_first_per_sandbox_and_per_tenant_with_pages() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner();
    let first = owner.create_sandbox(create_request("audited")).await.unwrap().into_inner();
    owner.extend_sandbox(extend_by(&first.sandbox_id, 60)).await.unwrap();
    owner.destroy_sandbox(destroy_request(&first.sandbox_id)).await.unwrap();
    let second = owner.create_sandbox(create_request("other")).await.unwrap().into_inner();

    let per_sandbox =
        ListAuditEventsRequest { sandbox_id: first.sandbox_id.clone(), ..Default::default() };
    let events = owner.list_audit_events(per_sandbox).await.unwrap().into_inner().audit_events;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["sandbox_destroyed", "sandbox_destroying", "ttl_extended", "sandbox_created"]
    );
    assert!(events.iter().all(|e| e.actor == "owner:alice" && e.sandbox_id == first.sandbox_id));

    let mut token = String::new();
    let mut tenant_events = Vec::new();
    loop {
        let page = owner
            .list_audit_events(ListAuditEventsRequest {
                page_size: 4,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        tenant_events.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(tenant_events.len(), 5);
    assert_eq!(tenant_events[0].sandbox_id, second.sandbox_id, "newest first");

    let bob = app.key_for("acme", "bob", Role::Member).await;
    let bobs = app
        .control(Some(&bob))
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.audit_events.is_empty(), "members see only events of their own sandboxes");
    let hidden =
        ListAuditEventsRequest { sandbox_id: first.sandbox_id.clone(), ..Default::default() };
    assert_eq!(
        app.control(Some(&bob)).list_audit_events(hidden).await.unwrap_err().code(),
        Code::NotFound
    );
    let _ = owner.get_sandbox(by_id(&second.sandbox_id)).await.unwrap();
}
