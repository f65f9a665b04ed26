//! Builds and runs the tonic server: our four services, health, reflection (v1 and v1alpha),
//! readiness probing, message-size limits, deadlines, one span per RPC and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tonic_web::GrpcWebLayer;

use crate::{
    api::{ArtifactServiceApi, GuildRoutingApi, SandboxControlApi, SyncServiceApi},
    app::App,
    config::Config,
    proto::{
        self, artifact_service_server::ArtifactServiceServer,
        guild_routing_server::GuildRoutingServer, sandbox_control_server::SandboxControlServer,
        sync_service_server::SyncServiceServer,
    },
    readiness::set_all,
    reconcile::Reconciler,
    store::{api_keys::KEYS_CHANNEL, routes::ROUTES_CHANNEL},
    template::RuntimeKind,
    tls::{ReloadingTls, TlsIncoming},
    web::DashboardLayer,
    wire::limits::{HTTP2_MAX_HEADER_LIST_BYTES, WireLimitsLayer},
};

pub use crate::readiness::SERVICE_NAMES;

/// A running server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// Where `/metrics` is served, when `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the dashboard (`/ui` and gRPC-Web) is served, when `[dashboard] listen` is set.
    pub dashboard_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    /// The listener's certificates, when `[server.tls]` is set.
    pub tls: Option<Arc<ReloadingTls>>,
    shutdown: CancellationToken,
    grace: Duration,
    serve: JoinHandle<anyhow::Result<()>>,
    readiness: JoinHandle<anyhow::Result<()>>,
    /// Background loops (LISTEN fan-out, route sync, the reconciler); they stop on the shutdown
    /// token.
    background: Vec<JoinHandle<()>>,
    /// Loops that must outlive every RPC and lifecycle task (the activity flush, whose last
    /// flush writes the drained RPCs' touches, and this replica's liveness lock, which marks
    /// their work as in progress); they stop on `stopped`, after everything else.
    last_to_stop: Vec<JoinHandle<()>>,
    stopped: CancellationToken,
}

impl RunningServer {
    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after the token is cancelled, or on a fatal error), giving
    /// in-flight RPCs up to the configured grace period to finish.
    pub async fn wait(self) -> anyhow::Result<()> {
        let RunningServer {
            shutdown,
            grace,
            mut serve,
            readiness,
            app,
            background,
            last_to_stop,
            stopped,
            ..
        } = self;
        let result = tokio::select! {
            result = &mut serve => result,
            () = shutdown.cancelled() => {
                match tokio::time::timeout(grace, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?grace, "in-flight RPCs did not finish within the grace period; stopping anyway");
                        serve.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        shutdown.cancel();
        let tasks = app.sandboxes.tasks();
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("background lifecycle work did not finish within the grace period");
        }
        // Commands still running after the drain are killed.
        app.sandboxes.runtimes().process().stop().await;
        let startup = readiness.await.context("readiness task panicked")?;
        for task in background {
            if let Err(error) = task.await {
                tracing::error!(%error, "background task panicked");
            }
        }
        stopped.cancel();
        for task in last_to_stop {
            if let Err(error) = task.await {
                tracing::error!(%error, "background task panicked");
            }
        }
        app.store.close().await;
        result.context("server task panicked")??;
        startup
    }

    /// Starts a graceful shutdown and waits for it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Binds `config.server.listen` and starts serving. Health reports NOT_SERVING until PostgreSQL
/// and Redis answer (and migrations have run); other RPCs answer UNAVAILABLE until then.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let local_addr = listener.local_addr()?;
    let metrics_listener = match config.metrics.listen {
        Some(address) => Some(crate::metrics::http::bind(address).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let dashboard_listener = match config.dashboard.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the dashboard listener {address}"))?,
        ),
        None => None,
    };
    let grace = config.server.shutdown_grace;
    let tls = match &config.server.tls {
        Some(settings) => Some(Arc::new(ReloadingTls::load(settings.clone())?)),
        None => None,
    };
    let app = App::build(config)?;
    if app.templates.iter().any(|template| template.runtime == RuntimeKind::Process) {
        app.sandboxes.runtimes().process().check().await?;
    }
    let shutdown = app.shutdown.clone();

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_all(&health_reporter, ServingStatus::NotServing).await;
    let readiness =
        tokio::spawn(crate::readiness::run(app.clone(), health_reporter.clone(), shutdown.clone()));

    let background = vec![
        tokio::spawn({
            let (app, shutdown) = (app.clone(), shutdown.clone());
            let channels = vec![ROUTES_CHANNEL, KEYS_CHANNEL];
            async move { app.events.run(app.store.clone(), channels, shutdown).await }
        }),
        tokio::spawn({
            let (app, shutdown) = (app.clone(), shutdown.clone());
            async move { app.auth.run_invalidation(app.events.clone(), shutdown).await }
        }),
        tokio::spawn({
            let (app, shutdown) = (app.clone(), shutdown.clone());
            let interval = app.config.routing.sync_interval;
            async move {
                let table = app.routing.table();
                table.run_sync(app.store.clone(), app.events.clone(), interval, shutdown).await
            }
        }),
    ];
    let mut background = background;
    if let Some(listener) = metrics_listener {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        background.push(tokio::spawn(crate::metrics::http::serve(listener, app, shutdown)));
    }
    if app.config.reconcile.enabled {
        let reconciler = Arc::new(Reconciler::new(
            app.sandboxes.clone(),
            app.config.artifacts.retention,
            app.config.reconcile.clone(),
            app.config.sandbox.activity_flush_interval,
        ));
        background.push(tokio::spawn({
            let (reconciler, shutdown) = (reconciler.clone(), shutdown.clone());
            async move { reconciler.run(shutdown).await }
        }));
        background.push(tokio::spawn({
            let (reconciler, shutdown) = (reconciler.clone(), shutdown.clone());
            async move { reconciler.run_pools(shutdown).await }
        }));
        background.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move { reconciler.run_keyspace(shutdown).await }
        }));
    }
    let stopped = CancellationToken::new();
    let last_to_stop = vec![
        tokio::spawn({
            let (app, stopped) = (app.clone(), stopped.clone());
            let interval = app.config.sandbox.activity_flush_interval;
            async move { app.sandboxes.activity().run(app.store.clone(), interval, stopped).await }
        }),
        tokio::spawn({
            let (app, stopped) = (app.clone(), stopped.clone());
            let every = app.config.server.readiness_interval;
            async move { app.sandboxes.replica().run(app.store.clone(), every, stopped).await }
        }),
    ];
    let mut last_to_stop = last_to_stop;
    let lock_audit = app.lock_audit_writer.lock().expect("lock audit writer poisoned").take();
    if let Some(writer) = lock_audit {
        let (store, stopped) = (app.store.clone(), stopped.clone());
        last_to_stop.push(tokio::spawn(writer.run(store, stopped)));
    }

    let routes = grpc_routes(&app, health_service)?;
    let router = grpc_server(&app).layer(wire_limits(&app)).add_routes(routes.clone());
    let dashboard_addr = match dashboard_listener {
        Some(listener) => {
            let local = listener.local_addr()?;
            let serving = DashboardServing { app: &app, tls: tls.as_ref(), shutdown: &shutdown };
            background.extend(serving.start(listener, routes, grace));
            Some(local)
        }
        None => None,
    };

    let drain_signal = {
        let shutdown = shutdown.clone();
        let reporter = health_reporter.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight RPCs");
            set_all(&reporter, ServingStatus::NotServing).await;
        }
    };
    let serve = match &tls {
        None => {
            // Without TCP_NODELAY, small responses wait on Nagle's algorithm and delayed ACKs
            // (~40 ms).
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            background.push(crate::tls::reload::spawn_hangup_notice(shutdown.clone()));
            tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, drain_signal)
                    .await
                    .context("gRPC server failed")
            })
        }
        Some(tls) => {
            let (incoming, accept) = TlsIncoming::start(listener, tls.clone(), shutdown.clone());
            background.push(accept);
            background.push(tls.clone().spawn(shutdown.clone()));
            tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, drain_signal)
                    .await
                    .context("gRPC server failed")
            })
        }
    };
    let mtls = tls.as_ref().is_some_and(|tls| tls.requires_client_certificates());
    tracing::info!(
        %local_addr,
        tls = tls.is_some(),
        mtls,
        ?metrics_addr,
        ?dashboard_addr,
        "sandboxd listening"
    );
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        dashboard_addr,
        app,
        tls,
        shutdown,
        grace,
        serve,
        readiness,
        background,
        last_to_stop,
        stopped,
    })
}

/// The gRPC services of both listeners: ours, health and reflection (v1 and v1alpha).
fn grpc_routes<H>(app: &Arc<App>, health_service: H) -> anyhow::Result<Routes>
where
    H: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    H::Future: Send + 'static,
{
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let limit = app.config.server.max_message_bytes;
    let sandbox_control = SandboxControlServer::new(SandboxControlApi::new(app.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let guild_routing = GuildRoutingServer::new(GuildRoutingApi::new(app.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let sync_service = SyncServiceServer::new(SyncServiceApi::new(app.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let artifact_service = ArtifactServiceServer::new(ArtifactServiceApi::new(app.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let mut routes = Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sandbox_control)
        .add_service(guild_routing)
        .add_service(sync_service)
        .add_service(artifact_service);
    Ok(routes.routes())
}

/// The transport settings both listeners share: the RPC deadline, per-connection concurrency,
/// keepalive, the HTTP/2 header-list limit and one span per request.
fn grpc_server(app: &App) -> Server {
    Server::builder()
        // Caps every RPC; a shorter `grpc-timeout` sent by the client is honoured by tonic.
        .timeout(app.config.server.request_timeout)
        .concurrency_limit_per_connection(app.config.server.concurrency_limit_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .trace_fn(crate::telemetry::rpc_span)
}

/// Metadata limits and per-RPC metrics, innermost on both listeners (on the dashboard, inside
/// the gRPC-Web translation, so it sees plain gRPC).
fn wire_limits(app: &App) -> WireLimitsLayer {
    WireLimitsLayer {
        max_metadata_bytes: app.config.server.max_metadata_bytes,
        metrics: app.metrics.clone(),
    }
}

/// What the dashboard listener shares with the main one.
struct DashboardServing<'a> {
    app: &'a Arc<App>,
    tls: Option<&'a Arc<ReloadingTls>>,
    shutdown: &'a CancellationToken,
}

impl DashboardServing<'_> {
    /// Serves the web app and gRPC-Web on `listener` (with the main listener's certificates when
    /// `[server.tls]` is set); returns the tasks to join on shutdown. In-flight requests get
    /// `grace` to finish after the shutdown token, like on the main listener.
    fn start(self, listener: TcpListener, routes: Routes, grace: Duration) -> Vec<JoinHandle<()>> {
        let router = grpc_server(self.app)
            // Browsers speak HTTP/1.1 to a plaintext origin.
            .accept_http1(true)
            .layer(DashboardLayer)
            .layer(GrpcWebLayer::new())
            .layer(wire_limits(self.app))
            .add_routes(routes);
        let shutdown = self.shutdown.clone();
        let drained = shutdown.clone().cancelled_owned();
        let mut tasks = Vec::new();
        let serve = match self.tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, drained))
            }
            Some(tls) => {
                let (incoming, accept) =
                    TlsIncoming::start(listener, tls.clone(), shutdown.clone());
                tasks.push(accept);
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, drained))
            }
        };
        tasks.push(tokio::spawn(async move {
            let mut serve = serve;
            let result = tokio::select! {
                result = &mut serve => result,
                () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(grace = ?grace, "dashboard requests did not finish within the grace period; stopping anyway");
                    serve.abort();
                    return;
                }
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "the dashboard listener failed"),
                Err(error) => tracing::error!(%error, "the dashboard listener panicked"),
            }
        }));
        tasks
    }
}
