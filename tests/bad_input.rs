//! Bad input for every field of CreateSandbox, GetSandbox and DestroySandbox: INVALID_ARGUMENT
//! (or NOT_FOUND for well-formed references to nothing) with BadRequest violations naming the
//! field, and nothing created.

mod common;

use std::collections::HashMap;

use common::{TestApp, error_reason, violated_fields};
use prost_types::{Duration, Struct, Value, value::Kind};
use sandboxd::proto::{
    CreateSandboxRequest, DestroySandboxRequest, GetSandboxRequest, get_sandbox_request::Selector,
};
use tonic::Code;

fn valid() -> CreateSandboxRequest {
    CreateSandboxRequest { template: "discord-guild".into(), ..Default::default() }
}

fn text(value: String) -> Value {
    Value { kind: Some(Kind::StringValue(value)) }
}

#[tokio::test]
async fn every_bad_create_field_is_named_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, CreateSandboxRequest, &str)> = vec![
        ("missing template", CreateSandboxRequest::default(), "template"),
        (
            "malformed template",
            CreateSandboxRequest { template: "../etc".into(), ..valid() },
            "template",
        ),
        ("uppercase name", CreateSandboxRequest { name: "Box".into(), ..valid() }, "name"),
        (
            "injection in name",
            CreateSandboxRequest { name: "a'; DROP SCHEMA x;--".into(), ..valid() },
            "name",
        ),
        ("too long name", CreateSandboxRequest { name: "a".repeat(64), ..valid() }, "name"),
        (
            "bad label key",
            CreateSandboxRequest {
                labels: HashMap::from([("Bad Key".into(), "v".into())]),
                ..valid()
            },
            "labels[\"Bad Key\"]",
        ),
        (
            "bad label value",
            CreateSandboxRequest {
                labels: HashMap::from([("env".into(), "a b".into())]),
                ..valid()
            },
            "labels[\"env\"]",
        ),
        (
            "oversized metadata",
            CreateSandboxRequest {
                metadata: Some(Struct {
                    fields: [("blob".to_string(), text("x".repeat(20_000)))].into(),
                }),
                ..valid()
            },
            "metadata",
        ),
        (
            "non-finite metadata number",
            CreateSandboxRequest {
                metadata: Some(Struct {
                    fields: [("n".to_string(), Value { kind: Some(Kind::NumberValue(f64::NAN)) })]
                        .into(),
                }),
                ..valid()
            },
            "metadata.n",
        ),
        (
            "negative ttl",
            CreateSandboxRequest { ttl: Some(Duration { seconds: -5, nanos: 0 }), ..valid() },
            "ttl",
        ),
        (
            "zero ttl",
            CreateSandboxRequest { ttl: Some(Duration { seconds: 0, nanos: 0 }), ..valid() },
            "ttl",
        ),
        (
            "ttl beyond the maximum",
            CreateSandboxRequest {
                ttl: Some(Duration { seconds: 169 * 3600, nanos: 0 }),
                ..valid()
            },
            "ttl",
        ),
        (
            "ttl below a minute",
            CreateSandboxRequest { ttl: Some(Duration { seconds: 5, nanos: 0 }), ..valid() },
            "ttl",
        ),
        (
            "bad request_id",
            CreateSandboxRequest { request_id: "has space".into(), ..valid() },
            "request_id",
        ),
    ];
    for (case, request, field) in cases {
        let status = app.owner().create_sandbox(request).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(error_reason(&status), "INVALID_ARGUMENT", "{case}");
        assert_eq!(violated_fields(&status), [field], "{case}");
    }
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM sandboxes").fetch_one(&app.pg().await).await.unwrap();
    assert_eq!(count, 0, "no bad request created a sandbox");
}

#[tokio::test]
async fn several_bad_fields_are_reported_together() {
    let app = TestApp::spawn().await;
    let request = CreateSandboxRequest {
        template: "discord-guild".into(),
        name: "-bad".into(),
        request_id: "no spaces allowed".into(),
        ..Default::default()
    };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["name", "request_id"]);
}

#[tokio::test]
async fn an_unknown_template_is_not_found() {
    let app = TestApp::spawn().await;
    let status = app
        .owner()
        .create_sandbox(CreateSandboxRequest {
            template: "no-such-template".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "TEMPLATE_NOT_FOUND");
}

#[tokio::test]
async fn get_rejects_a_missing_or_malformed_selector_and_reports_unknown_ids() {
    let app = TestApp::spawn().await;
    let cases = [
        (GetSandboxRequest { selector: None }, Code::InvalidArgument, "selector"),
        (
            GetSandboxRequest { selector: Some(Selector::SandboxId("".into())) },
            Code::InvalidArgument,
            "sandbox_id",
        ),
        (
            GetSandboxRequest { selector: Some(Selector::SandboxId("not-a-uuid".into())) },
            Code::InvalidArgument,
            "sandbox_id",
        ),
        (
            GetSandboxRequest { selector: Some(Selector::SandboxId("*".into())) },
            Code::InvalidArgument,
            "sandbox_id",
        ),
        (
            GetSandboxRequest { selector: Some(Selector::Name("Bad_Name".into())) },
            Code::InvalidArgument,
            "name",
        ),
    ];
    for (request, code, field) in cases {
        let status = app.owner().get_sandbox(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}");
        assert_eq!(violated_fields(&status), [field], "{request:?}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .owner()
        .get_sandbox(GetSandboxRequest { selector: Some(Selector::SandboxId(unknown)) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "SANDBOX_NOT_FOUND");
}

#[tokio::test]
async fn destroy_rejects_bad_ids_and_reasons() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::now_v7().to_string();
    let cases = [
        (DestroySandboxRequest { sandbox_id: "".into(), ..Default::default() }, "sandbox_id"),
        (DestroySandboxRequest { sandbox_id: "1234".into(), ..Default::default() }, "sandbox_id"),
        (
            DestroySandboxRequest {
                sandbox_id: id.clone(),
                reason: "r".repeat(2000),
                ..Default::default()
            },
            "reason",
        ),
        (
            DestroySandboxRequest {
                sandbox_id: id.clone(),
                reason: "line\nbreak".into(),
                ..Default::default()
            },
            "reason",
        ),
    ];
    for (request, field) in cases {
        let status = app.owner().destroy_sandbox(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(violated_fields(&status), [field]);
    }
    let status = app
        .owner()
        .destroy_sandbox(DestroySandboxRequest { sandbox_id: id, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
