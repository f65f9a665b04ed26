//! The consume loop: pull events from the durable consumer, decide each one's subject from the
//! route cache, republish it, and ack the original only after JetStream acked the republish.
//!
//! Republishes are pipelined: up to `max_in_flight` wait for their JetStream ack at once, sent
//! in the order the events arrived, so one slow ack does not stall the stream and the normal
//! case keeps each guild's order. An event whose republish fails is naked with `retry_delay`
//! and comes back later (possibly after newer events). Every republish carries a message id
//! (the event's own `Nats-Msg-Id`, or one derived from its place in the source stream), so a
//! redelivery after a crash is dropped by the destination stream's duplicate window.

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishAckFuture,
        message::{Acker, PublishMessage},
    },
};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio_util::sync::CancellationToken;

use super::{
    RouterConfig,
    cache::RouteCache,
    event::{DeadLetterReason, GuildField},
    stats::{Stats, Target},
    subject,
};

/// The header naming why an event was dead-lettered (`missing_guild_id`, ...).
pub const REASON_HEADER: &str = "Sandboxd-Dead-Letter-Reason";
/// The subject a dead-lettered event was consumed from.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Sandboxd-Original-Subject";
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";
/// Publish conditions about the *source* stream (`Nats-Expected-Last-Sequence`, ...): kept on
/// a republish they would make the destination refuse it forever.
const SOURCE_CONDITIONS: &str = "nats-expected-";

/// Binds the durable pull consumer, creating it (or updating its settings) on the stream.
pub async fn bind(js: &jetstream::Context, config: &RouterConfig) -> anyhow::Result<PullConsumer> {
    let name = if config.stream.is_empty() {
        js.stream_by_subject(config.subject.clone()).await.map_err(|error| {
            anyhow::anyhow!(
                "no JetStream stream captures {:?} ({error}); create one or set router.stream",
                config.subject
            )
        })?
    } else {
        config.stream.clone()
    };
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|error| anyhow::anyhow!("JetStream stream {name:?}: {error}"))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(config.durable.clone()),
            description: Some("sandboxd route-events".into()),
            filter_subject: config.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            deliver_policy: DeliverPolicy::All,
            // Room for the pipeline and one prefetched batch.
            max_ack_pending: (config.max_in_flight * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|error| {
            anyhow::anyhow!("durable consumer {:?} on {name:?}: {error}", config.durable)
        })?;
    tracing::info!(stream = name, durable = config.durable, subject = config.subject, "consuming");
    Ok(consumer)
}

pub struct ConsumeLoop {
    pub js: jetstream::Context,
    pub consumer: PullConsumer,
    pub cache: Arc<RouteCache>,
    pub stats: Arc<Stats>,
    pub field: GuildField,
    pub production_prefix: String,
    pub dead_letter_subject: String,
    pub max_in_flight: usize,
    pub retry_delay: Duration,
}

impl ConsumeLoop {
    /// Runs until cancelled, then waits for the republishes in flight and acks them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut messages = self.messages().await?;
        let mut in_flight = FuturesUnordered::new();
        loop {
            if !self.cache.is_fresh() && !self.pause(&mut in_flight, &shutdown).await {
                break;
            }
            let full = in_flight.len() >= self.max_in_flight;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                next = messages.next(), if !full => match next {
                    Some(Ok(message)) => {
                        // Never route on a cache that went stale while this event was fetched.
                        if !self.cache.is_fresh() && !self.pause(&mut in_flight, &shutdown).await {
                            let (_, acker) = message.split();
                            let _ = acker.ack_with(AckKind::Nak(None)).await;
                            break;
                        }
                        if let Some(pending) = self.republish(message).await {
                            in_flight.push(pending);
                        }
                    }
                    Some(Err(error)) => {
                        // Missed heartbeats, a reconnecting client: the stream goes on.
                        tracing::warn!(%error, "pulling events");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    None => {
                        tracing::warn!("the pull stream ended; pulling again");
                        messages = self.messages().await?;
                    }
                },
            }
        }
        while in_flight.next().await.is_some() {}
        Ok(())
    }

    async fn messages(&self) -> anyhow::Result<pull::Stream> {
        pull_stream(&self.consumer, self.max_in_flight).await
    }

    /// Settles the republishes already on their way (their acks need no routes), then waits
    /// until the cache is fresh again; false when cancelled first.
    async fn pause<F: Future<Output = ()>>(
        &self,
        in_flight: &mut FuturesUnordered<F>,
        shutdown: &CancellationToken,
    ) -> bool {
        while in_flight.next().await.is_some() {}
        self.stats.set_paused(true);
        match self.cache.age() {
            None => tracing::info!("waiting for the first route snapshot before consuming"),
            Some(age) => tracing::warn!(?age, "route cache stale: consumption paused"),
        }
        let resumed = tokio::select! {
            () = shutdown.cancelled() => false,
            () = self.cache.wait_fresh() => true,
        };
        self.stats.set_paused(false);
        if resumed {
            tracing::info!("route cache fresh again: consumption resumed");
        }
        resumed
    }

    /// Sends one event on to its destination; the returned future settles it once JetStream
    /// answered. `None` when it could not even be sent (it was naked for redelivery).
    async fn republish(
        &self,
        message: jetstream::Message,
    ) -> Option<impl Future<Output = ()> + use<>> {
        let message_id = message_id(&message);
        let (message, acker) = message.split();
        let original = message.subject.as_str();
        let mut headers = forwarded_headers(message.headers.as_ref());
        let (target, destination) = match self.field.guild_id(&message.payload) {
            Ok(guild) => match self.cache.lookup(guild) {
                Some(sandbox) => (Target::Sandbox, subject::sandbox_subject(sandbox, original)),
                None => (Target::Production, format!("{}{original}", self.production_prefix)),
            },
            Err(reason) => {
                dead_letter_headers(&mut headers, reason, original);
                (Target::DeadLetter, self.dead_letter_subject.clone())
            }
        };
        let publish = PublishMessage::build()
            .payload(message.payload)
            .headers(headers)
            .message_id(message_id);
        match self.js.send_publish(destination, publish).await {
            Ok(ack) => Some(settle(ack, acker, target, self.stats.clone(), self.retry_delay)),
            Err(error) => {
                tracing::warn!(%error, "republish not sent; redelivering later");
                self.stats.retried();
                let _ = acker.ack_with(AckKind::Nak(Some(self.retry_delay))).await;
                None
            }
        }
    }
}

/// The consumer's messages, pulled in batches sized to the pipeline (shared with the
/// benchmark's plain loop, so both pull alike).
pub async fn pull_stream(
    consumer: &PullConsumer,
    max_in_flight: usize,
) -> anyhow::Result<pull::Stream> {
    let batch = max_in_flight.clamp(16, 1024);
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .map_err(|error| anyhow::anyhow!("pulling from the durable consumer: {error}"))
}

/// Acks the original once the republish is stored; naks it for redelivery otherwise. A lost
/// ack only means a redelivery, which the destination drops as a duplicate.
async fn settle(
    ack: PublishAckFuture,
    acker: Acker,
    target: Target,
    stats: Arc<Stats>,
    retry_delay: Duration,
) {
    match ack.await {
        Ok(stored) => {
            stats.routed(target, stored.duplicate);
            if let Err(error) = acker.ack().await {
                tracing::warn!(%error, "ack of a routed event not sent; it will be redelivered and deduplicated");
            }
        }
        Err(error) => {
            tracing::warn!(%error, ?target, "republish failed; redelivering later");
            stats.retried();
            let _ = acker.ack_with(AckKind::Nak(Some(retry_delay))).await;
        }
    }
}

/// The event's own `Nats-Msg-Id`, else one that is the same on every redelivery of this
/// stored message and differs from any message of an earlier stream of the same name (the
/// store time is part of it).
fn message_id(message: &jetstream::Message) -> String {
    if let Some(id) = message.headers.as_ref().and_then(|h| h.get(MESSAGE_ID_HEADER))
        && !id.as_str().is_empty()
    {
        return id.as_str().to_string();
    }
    match message.info() {
        Ok(info) => {
            format!(
                "{}:{}:{}",
                info.stream,
                info.stream_sequence,
                info.published.unix_timestamp_nanos()
            )
        }
        // JetStream always sends the reply subject this is read from.
        Err(_) => uuid::Uuid::now_v7().to_string(),
    }
}

/// The event's headers minus the source stream's publish conditions.
fn forwarded_headers(incoming: Option<&HeaderMap>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in incoming.into_iter().flat_map(HeaderMap::iter) {
        let name_text: &str = name.as_ref();
        if name_text.to_ascii_lowercase().starts_with(SOURCE_CONDITIONS) {
            continue;
        }
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn dead_letter_headers(headers: &mut HeaderMap, reason: DeadLetterReason, original: &str) {
    headers.insert(REASON_HEADER, reason.as_str());
    headers.insert(ORIGINAL_SUBJECT_HEADER, original);
}
