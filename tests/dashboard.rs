//! The web dashboard end to end, in a real browser: a real `sandboxd dev` (throwaway
//! PostgreSQL, Redis and in-process S3), its dashboard listener checked over plain HTTP/1.1
//! (content types, cache and security headers, client routes), then the Playwright script
//! `clients/web/e2e/review.mjs` driving Debian's Chromium through the README's dashboard tour:
//! sign in with the key, create a sandbox from the page, see it RUNNING without a reload, approve
//! an artifact this test publishes through the gRPC API, destroy the sandbox from the page.
//!
//! Needs the built web app embedded (`npm --prefix clients/web ci && npm --prefix clients/web
//! run build` before `cargo build`; scripts/test does it), Node with the web app's packages, and
//! Chromium (`CHROMIUM`, default /usr/bin/chromium); it fails saying so when one is missing.
//! Screenshots land in `target/dashboard-screenshots/`; with `UPDATE_SCREENSHOTS=1` one of the
//! list and one of the review queue are also copied to `docs/screenshots/` for the README.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use common::{
    Bearer,
    dev_process::DevProcess,
    http1::{self, Answer},
};
use sandboxd::proto::{
    self, ArtifactType, ReviewState, SandboxState, artifact_service_client::ArtifactServiceClient,
    publish_artifact_request::Content, sandbox_control_client::SandboxControlClient,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};
use tonic::transport::Channel;

const DEV_KEY: &str = "sbx_da5b0a4d0000000000000000000000000000000000000001";
const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/web");
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard-screenshots");
const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n\
                    @@ -1,2 +1,2 @@\n # sandboxd\n-old line\n+new line from the agent\n";
/// A 24×24 PNG: red and blue squares.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x18, 0x08, 0x02, 0x00, 0x00, 0x00, 0x6f, 0x15, 0xaa,
    0xaf, 0x00, 0x00, 0x00, 0x2a, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xb8, 0x63, 0x63, 0x44,
    0x10, 0x69, 0x54, 0xdc, 0x21, 0x88, 0x18, 0x46, 0x0d, 0x1a, 0x35, 0x68, 0xd4, 0x20, 0xbc, 0x06,
    0x11, 0xa3, 0x88, 0x18, 0xcb, 0x46, 0x0d, 0x1a, 0x35, 0x68, 0xd4, 0x20, 0xbc, 0x08, 0x00, 0xd4,
    0xbb, 0x1e, 0xee, 0xee, 0xeb, 0xa8, 0xe6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// The tools the browser test needs, or a message saying what to install.
fn preconditions() -> String {
    assert!(
        sandboxd::web::web_app_built(),
        "the web app is not embedded (only the placeholder page): run `npm --prefix clients/web ci \
         && npm --prefix clients/web run build`, then the tests again (scripts/test does both)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium is not installed at {chromium}: `apt-get install chromium` (scripts/test does), \
         or set CHROMIUM to its path"
    );
    assert!(
        Path::new(WEB).join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm --prefix clients/web ci`"
    );
    chromium
}

/// `GET path` on the dashboard at `url` (`http://host:port/ui/`).
async fn http_get(url: &str, path: &str) -> Answer {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let stream = TcpStream::connect(authority).await.expect("the dashboard listener accepts");
    http1::exchange(stream, authority, "GET", path, &[], b"").await
}

async fn check_http_answers(dashboard: &str) {
    let index = http_get(dashboard, "/ui").await;
    assert_eq!(index.status, 200, "/ui");
    assert_eq!(index.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(index.header("cache-control"), "no-cache", "the index is never cached");
    assert_eq!(index.header("x-content-type-options"), "nosniff");
    let csp = index.header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    let page = String::from_utf8(index.body).unwrap();
    let script = page
        .split('"')
        .find(|part| part.starts_with("/ui/assets/") && part.ends_with(".js"))
        .unwrap_or_else(|| panic!("the index loads a hashed bundle:\n{page}"))
        .to_string();

    let bundle = http_get(dashboard, &script).await;
    assert_eq!(bundle.status, 200, "{script}");
    assert_eq!(bundle.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(bundle.header("cache-control"), "public, max-age=31536000, immutable");
    assert!(!bundle.body.is_empty());

    let client_route = http_get(dashboard, "/ui/sandboxes/some-id").await;
    assert_eq!(client_route.status, 200, "a client route answers the index");
    assert_eq!(String::from_utf8(client_route.body).unwrap(), page);
    let missing = http_get(dashboard, "/ui/assets/index-missing.js").await;
    assert_eq!(missing.status, 404, "a missing bundle is a 404, not HTML");
    let root = http_get(dashboard, "/").await;
    assert_eq!((root.status, root.header("location")), (308, "/ui/"));
}

async fn publish(
    artifacts: &mut ArtifactServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    >,
    sandbox_id: &str,
    kind: ArtifactType,
    title: &str,
    content_type: &str,
    bytes: &[u8],
) -> Result<proto::Artifact, tonic::Status> {
    let header = proto::PublishArtifactHeader {
        sandbox_id: sandbox_id.to_string(),
        r#type: kind as i32,
        title: title.to_string(),
        content_type: content_type.to_string(),
        ..Default::default()
    };
    let messages = vec![
        proto::PublishArtifactRequest { content: Some(Content::Header(header)) },
        proto::PublishArtifactRequest { content: Some(Content::Chunk(bytes.to_vec())) },
    ];
    Ok(artifacts.publish_artifact(tokio_stream::iter(messages)).await?.into_inner())
}

#[tokio::test]
async fn the_dashboard_creates_reviews_and_destroys_in_a_real_browser() {
    let chromium = preconditions();
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(data.path(), DEV_KEY).await;
    check_http_answers(&dev.dashboard).await;

    let channel = Channel::from_shared(format!("http://{}", dev.grpc)).unwrap().connect_lazy();
    let bearer = || Bearer(Some(DEV_KEY.to_string()));
    let mut control = SandboxControlClient::with_interceptor(channel.clone(), bearer());
    let mut artifacts = ArtifactServiceClient::with_interceptor(channel, bearer());

    let _ = std::fs::remove_dir_all(SCREENSHOTS);
    let mut script = Command::new("node")
        .arg(Path::new(WEB).join("e2e/review.mjs"))
        .env("DASHBOARD_URL", &dev.dashboard)
        .env("API_KEY", DEV_KEY)
        .env("SCREENSHOT_DIR", SCREENSHOTS)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs clients/web/e2e/review.mjs");
    let mut to_script = script.stdin.take().unwrap();
    let mut from_script = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut transcript = Vec::new();
    let mut sandbox_id = None;
    let mut published = None;
    let mut secrets = None;
    let mut details_text = None;
    let run = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = from_script.next_line().await.unwrap() {
            println!("review.mjs: {line}");
            transcript.push(line.clone());
            if let Some(text) = line.strip_prefix("details-text ") {
                details_text = Some(String::from_utf8(BASE64.decode(text).unwrap()).unwrap());
                continue;
            }
            let Some(id) = line.strip_prefix("sandbox-running ") else { continue };
            // Taken while RUNNING (GetConnectionDetails refuses other states).
            secrets = Some(
                control
                    .get_connection_details(proto::GetConnectionDetailsRequest {
                        sandbox_id: id.to_string(),
                    })
                    .await
                    .expect("connection details of the new sandbox")
                    .into_inner(),
            );
            sandbox_id = Some(id.to_string());
            let diff = publish(
                &mut artifacts,
                id,
                ArtifactType::Diff,
                "README wording",
                "text/x-diff",
                DIFF.as_bytes(),
            )
            .await;
            if let Err(status) = &diff
                && status.code() == tonic::Code::Unimplemented
            {
                // The rest of the tour still runs; the test fails below, saying why.
                let answer = format!("skip-artifacts {}\n", status.code());
                to_script.write_all(answer.as_bytes()).await.unwrap();
                published = Some(Err(status.clone()));
                continue;
            }
            let diff = diff.expect("publishing the diff artifact through the gRPC API");
            let image = publish(
                &mut artifacts,
                id,
                ArtifactType::Image,
                "Screenshot of the bot",
                "image/png",
                PNG,
            )
            .await
            .expect("publishing the image artifact through the gRPC API");
            assert_eq!(
                diff.review_state,
                ReviewState::Pending as i32,
                "a new artifact awaits review"
            );
            let answer = format!("published {} {}\n", diff.artifact_id, image.artifact_id);
            to_script.write_all(answer.as_bytes()).await.unwrap();
            published = Some(Ok(diff));
        }
        script.wait().await.unwrap()
    })
    .await
    .expect("the browser script finished within 300 s");
    assert!(run.success(), "review.mjs failed ({run}); its output:\n{}", transcript.join("\n"));

    let sandbox_id = sandbox_id.expect("the page created a sandbox");
    let details = secrets.expect("connection details were read");
    let page = details_text.expect("the script sent the details page's text");
    assert!(page.contains(&details.schema), "the details page shows the schema:\n{page}");
    assert!(!details.role_password.is_empty(), "the server returned a secret the page must hide");
    for secret in
        [&details.role_password, &details.database_url, &details.redis_password, &details.redis_url]
    {
        assert!(
            secret.is_empty() || !page.contains(secret.as_str()),
            "a secret on the page:\n{page}"
        );
    }
    let sandbox = control.get_sandbox(common::by_id(&sandbox_id)).await.unwrap().into_inner();
    assert_eq!(sandbox.state, SandboxState::Destroyed as i32, "destroyed from the page");
    assert_eq!(sandbox.name, "e2e-review");
    assert!(transcript.iter().any(|l| l == &format!("destroyed {sandbox_id}")));
    let diff = match published.expect("the test published artifacts") {
        Ok(diff) => diff,
        Err(status) => {
            dev.stop().await;
            panic!(
                "the artifact steps of the tour did not run: this server does not serve \
                 ArtifactService yet ({}: {}); everything else passed",
                status.code(),
                status.message()
            );
        }
    };
    let reviewed = artifacts
        .get_artifact(proto::GetArtifactRequest { artifact_id: diff.artifact_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reviewed.review_state, ReviewState::Approved as i32, "approved on the page");
    assert_eq!(reviewed.review_comment, "looks good (browser test)");
    assert!(!reviewed.reviewer.is_empty());
    dev.stop().await;

    for shot in [
        "sandboxes-1280",
        "sandboxes-390",
        "review-queue-1280",
        "review-queue-390",
        "details-1280",
        "details-390",
    ] {
        let path = Path::new(SCREENSHOTS).join(format!("{shot}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("{} was saved", path.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
    }
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshots");
        std::fs::create_dir_all(docs).unwrap();
        for shot in ["sandboxes-1280", "review-queue-1280"] {
            std::fs::copy(
                Path::new(SCREENSHOTS).join(format!("{shot}.png")),
                Path::new(docs).join(format!("dashboard-{shot}.png")),
            )
            .unwrap();
        }
    }
}
