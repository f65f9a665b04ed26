//! Health (overall and per service, Check and Watch, readiness from real probes) and server
//! reflection v1 and v1alpha.

mod common;

use common::{
    TestApp, error_reason,
    gate::{Gate, redis_socket_addr},
};
use sandboxd::{config::SecretUrl, proto::CreateSandboxRequest, server::SERVICE_NAMES};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test]
async fn health_is_serving_overall_and_per_service_once_dependencies_answer() {
    let app = TestApp::spawn().await;
    let mut health = app.health();
    for service in std::iter::once("").chain(SERVICE_NAMES) {
        let response = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|status| panic!("health check of {service:?}: {status:?}"));
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn health_stays_not_serving_until_redis_answers_and_watch_sees_the_change() {
    let redis = Gate::closed(redis_socket_addr(&common::redis_url())).await;
    let redis_url = format!("redis://{}", redis.addr);
    let app = TestApp::start_unready(|config| config.redis.url = SecretUrl::new(redis_url)).await;

    let mut watch = app
        .health()
        .watch(HealthCheckRequest { service: "sandboxd.v1.SandboxControl".into() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status(), ServingStatus::NotServing);

    // While not ready, RPCs are refused as retryable.
    let refused = app
        .control(Some("sbx_whatever"))
        .create_sandbox(CreateSandboxRequest {
            template: "discord-guild".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(error_reason(&refused), "NOT_READY");

    redis.open();
    loop {
        let next = watch.message().await.unwrap().expect("watch stays open");
        if next.status() == ServingStatus::Serving {
            break;
        }
    }
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = TestApp::spawn().await;
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_all_services_listed(&names);
}

#[tokio::test]
async fn reflection_v1alpha_lists_every_service_for_grpcurl_1_8() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = TestApp::spawn().await;
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_all_services_listed(&names);
}

fn assert_all_services_listed(names: &[String]) {
    for expected in [
        "sandboxd.v1.SandboxControl",
        "sandboxd.v1.GuildRouting",
        "sandboxd.v1.SyncService",
        "sandboxd.v1.ArtifactService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
}
