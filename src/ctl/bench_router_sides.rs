//! The two sides of `sandboxctl bench router`: the event router itself (in this process, as
//! `sandboxd route-events` runs it) and a plain JetStream consume-and-republish loop with the
//! same consumer settings and the same pipeline depth but no routing (no JSON, no lookup,
//! one fixed destination prefix): the ceiling the router is held against.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, message::PublishMessage};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::router::{self, RouterConfig, RunningRouter, consume};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Plain,
    Router,
}

impl Side {
    pub(super) fn label(self) -> &'static str {
        match self {
            Side::Plain => "plain loop",
            Side::Router => "router",
        }
    }
}

/// Destination prefix of the plain loop.
pub(super) const PLAIN_PREFIX: &str = "base.";

pub(super) enum Running {
    Plain {
        done: Arc<AtomicU64>,
        shutdown: CancellationToken,
        task: JoinHandle<anyhow::Result<()>>,
    },
    Router(Box<RunningRouter>),
}

impl Running {
    /// Events whose republish was acknowledged (and the original acked).
    pub(super) fn done(&self) -> u64 {
        match self {
            Running::Plain { done, .. } => done.load(Relaxed),
            Running::Router(router) => router.stats.counts().routed(),
        }
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        match self {
            Running::Plain { shutdown, task, .. } => {
                shutdown.cancel();
                task.await?
            }
            Running::Router(router) => router.shutdown().await,
        }
    }
}

/// Starts one side on the consumer described by `config` (the plain loop uses its stream,
/// subject, durable, ack wait and pipeline depth too).
pub(super) async fn start(
    side: Side,
    js: &jetstream::Context,
    config: RouterConfig,
) -> anyhow::Result<Running> {
    match side {
        Side::Router => Ok(Running::Router(Box::new(router::start(config).await?))),
        Side::Plain => {
            let consumer = consume::bind(js, &config).await?;
            let done = Arc::new(AtomicU64::new(0));
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(plain_loop(
                js.clone(),
                consumer,
                config.max_in_flight,
                done.clone(),
                shutdown.clone(),
            ));
            Ok(Running::Plain { done, shutdown, task })
        }
    }
}

async fn plain_loop(
    js: jetstream::Context,
    consumer: PullConsumer,
    max_in_flight: usize,
    done: Arc<AtomicU64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages = consume::pull_stream(&consumer, max_in_flight).await?;
    let mut in_flight = FuturesUnordered::new();
    loop {
        let full = in_flight.len() >= max_in_flight;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = messages.next(), if !full => match next {
                Some(Ok(message)) => {
                    let (message, acker) = message.split();
                    let mut publish = PublishMessage::build().payload(message.payload);
                    if let Some(headers) = message.headers {
                        publish = publish.headers(headers);
                    }
                    let destination = format!("{PLAIN_PREFIX}{}", message.subject);
                    let ack = js.send_publish(destination, publish).await?;
                    let done = done.clone();
                    in_flight.push(async move {
                        if ack.await.is_ok() {
                            let _ = acker.ack().await;
                            done.fetch_add(1, Relaxed);
                        } else {
                            let _ = acker.ack_with(AckKind::Nak(None)).await;
                        }
                    });
                }
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    while in_flight.next().await.is_some() {}
    Ok(())
}
