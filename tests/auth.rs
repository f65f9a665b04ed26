//! Authentication and tenancy: missing, bad and revoked keys; tenant and member isolation; the
//! router role; health and reflection need no key.

mod common;

use std::time::Duration;

use common::{TestApp, error_reason};
use sandboxd::{
    auth::Role,
    proto::{
        CreateSandboxRequest, DestroySandboxRequest, GetSandboxRequest, ListTemplatesRequest,
        get_sandbox_request::Selector,
    },
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

#[tokio::test]
async fn a_call_without_a_key_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let status = app.control(None).list_templates(ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&status), "UNAUTHENTICATED");
    assert!(status.message().contains("authorization"), "{}", status.message());
}

#[tokio::test]
async fn a_wrong_key_is_unauthenticated_and_not_echoed() {
    let app = TestApp::spawn().await;
    let bogus = "sbx_0000000000000000000000000000000000000000deadbeef";
    let status = app.control(Some(bogus)).create_sandbox(create("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains(bogus));
}

#[tokio::test]
async fn a_revoked_key_stops_working() {
    let app = TestApp::spawn_with(|config| config.auth.key_cache_ttl = Duration::ZERO).await;
    let key = app.key_for("acme", "carol", Role::Member).await;
    app.control(Some(&key))
        .list_templates(ListTemplatesRequest {})
        .await
        .expect("key works before revocation");

    let store = &app.server().app.store;
    let record = store
        .list_api_keys(Some("acme"))
        .await
        .unwrap()
        .into_iter()
        .find(|record| record.subject == "carol")
        .unwrap();
    assert!(store.revoke_api_key(record.id).await.unwrap());

    let status = app.control(Some(&key)).list_templates(ListTemplatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn another_tenants_sandbox_is_not_found_never_denied() {
    let app = TestApp::spawn().await;
    let sandbox = app.owner().create_sandbox(create("secret-box")).await.unwrap().into_inner();
    let intruder_key = app.key_for("globex", "mallory", Role::Owner).await;
    let mut intruder = app.control(Some(&intruder_key));

    let get = intruder.get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let by_name = intruder
        .get_sandbox(GetSandboxRequest { selector: Some(Selector::Name("secret-box".into())) })
        .await
        .unwrap_err();
    assert_eq!(by_name.code(), Code::NotFound);
    let destroy = intruder
        .destroy_sandbox(DestroySandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(destroy.code(), Code::NotFound);

    // The sandbox is untouched.
    let still = app.owner().get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap().into_inner();
    assert_eq!(still.state(), sandboxd::proto::SandboxState::Running);
    // Tenant-scoped sandboxes record their owner and tenant from the key.
    assert_eq!((still.tenant.as_str(), still.owner.as_str()), ("acme", "alice"));
}

#[tokio::test]
async fn members_see_only_their_own_sandboxes_and_admins_see_all() {
    let app = TestApp::spawn().await;
    let sandbox = app.owner().create_sandbox(create("alices")).await.unwrap().into_inner();
    let member_key = app.key_for("acme", "bob", Role::Member).await;
    let status =
        app.control(Some(&member_key)).get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let admin_key = app.key_for("acme", "dana", Role::Admin).await;
    let seen = app.control(Some(&admin_key)).get_sandbox(by_id(&sandbox.sandbox_id)).await.unwrap();
    assert_eq!(seen.into_inner().sandbox_id, sandbox.sandbox_id);
}

#[tokio::test]
async fn the_router_role_may_not_manage_sandboxes() {
    let app = TestApp::spawn().await;
    let router_key = app.key_for("acme", "edge-router", Role::Router).await;
    let status = app.control(Some(&router_key)).create_sandbox(create("nope")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_reason(&status), "PERMISSION_DENIED");
}
