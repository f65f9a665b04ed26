//! NATS JetStream for the router tests: the machine's server (`TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`, started by scripts/test when absent; a test fails loudly without
//! it), and per-test streams under a unique namespace, deleted when the test ends (even when it
//! panicked).

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::{
    self, Context,
    message::PublishMessage,
    stream::{Config, StorageType},
};
use bytes::Bytes;

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub async fn connect() -> Context {
    let url = nats_url();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!("cannot reach NATS at TEST_NATS_URL ({url}): {error}; run scripts/test, which starts nats-server -js")
        });
    jetstream::new(client)
}

/// One message as a destination stream stored it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub message_id: String,
    pub headers: async_nats::HeaderMap,
    pub payload: Bytes,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|value| value.as_str().to_string())
    }
}

/// The streams of one test: the source (`<ns>.discord.events.>`) and the destinations the
/// router publishes to with its test settings: production (`prod.<ns>.>`), sandboxes
/// (`sandbox.*.<ns>.>`) and dead letters (`<ns>.dead-letter`).
pub struct Streams {
    pub js: Context,
    /// Lower-case token that starts every subject of this test.
    pub ns: String,
    names: Vec<String>,
}

impl Streams {
    pub async fn create() -> Streams {
        let js = connect().await;
        let ns = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut streams = Streams { js, ns, names: Vec::new() };
        for (suffix, subject) in [
            ("SRC", format!("{}.discord.events.>", streams.ns)),
            ("PROD", format!("prod.{}.>", streams.ns)),
            ("SBX", format!("sandbox.*.{}.>", streams.ns)),
            ("DLQ", streams.dead_letter_subject()),
        ] {
            let name = streams.stream(suffix);
            streams
                .js
                .create_stream(Config {
                    name: name.clone(),
                    subjects: vec![subject],
                    storage: StorageType::Memory,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|error| panic!("creating stream {name}: {error}"));
            streams.names.push(name);
        }
        streams
    }

    /// The stream name for `suffix` (SRC, PROD, SBX, DLQ).
    pub fn stream(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.ns.to_uppercase())
    }

    pub fn subject(&self, event: &str) -> String {
        format!("{}.discord.events.{event}", self.ns)
    }

    pub fn filter(&self) -> String {
        format!("{}.discord.events.>", self.ns)
    }

    pub fn dead_letter_subject(&self) -> String {
        format!("{}.dead-letter", self.ns)
    }

    /// Publishes one event to the source stream with its own message id, waiting for the ack.
    pub async fn publish(&self, event: &str, payload: impl Into<Bytes>, id: &str) {
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(id)
            .header("X-Test-Header", "kept");
        self.js
            .send_publish(self.subject(event), message)
            .await
            .expect("publishing an event")
            .await
            .expect("the source stream stores the event");
    }

    /// Every message a stream holds, in order.
    pub async fn stored(&self, suffix: &str) -> Vec<Stored> {
        let stream = self.js.get_stream(self.stream(suffix)).await.expect("the stream exists");
        let state = stream.get_info().await.expect("stream info").state;
        let mut messages = Vec::new();
        if state.messages == 0 {
            return messages;
        }
        for sequence in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(sequence).await else { continue };
            let message_id = message
                .headers
                .get("Nats-Msg-Id")
                .map(|id| id.as_str().to_string())
                .unwrap_or_default();
            messages.push(Stored {
                subject: message.subject.to_string(),
                message_id,
                headers: message.headers,
                payload: message.payload,
            });
        }
        messages
    }

    pub async fn count(&self, suffix: &str) -> u64 {
        let stream = self.js.get_stream(self.stream(suffix)).await.expect("the stream exists");
        stream.get_info().await.expect("stream info").state.messages
    }

    /// How many times each message id arrived, over the given destination streams.
    pub async fn arrivals(&self, suffixes: &[&str]) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for suffix in suffixes {
            for message in self.stored(suffix).await {
                *seen.entry(message.message_id).or_insert(0) += 1;
            }
        }
        seen
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let js = connect().await;
                for name in names {
                    if let Err(error) = js.delete_stream(&name).await {
                        eprintln!("deleting stream {name}: {error}");
                    }
                }
            });
        });
        if cleanup.join().is_err() {
            eprintln!("stream cleanup failed");
        }
    }
}
