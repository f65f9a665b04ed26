//! The router's settings: the `[router]` section of the one config (`SANDBOXD_ROUTER__*` env
//! vars, `sandboxd route-events` flags), checked once by [`RouterConfig::validate`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::subject;
use crate::secret::{Secret, SecretUrl};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// sandboxd's gRPC address, for `WatchGuildRoutes`.
    pub sandboxd_addr: String,
    /// TLS to an `https://` `sandboxd_addr`: `ca_file`, and `cert_file`/`key_file` for mTLS.
    pub sandboxd_tls: crate::tls::grpc_client::GrpcClientTls,
    /// API key for sandboxd (role `router` sees every tenant's routes; an owner or admin key
    /// only its tenant's). Empty: no key (a server with `auth.mode = "disabled"`).
    pub api_key: Secret,
    /// NATS server (may carry `user:password@`, never logged).
    pub nats_url: SecretUrl,
    /// The JetStream stream to consume; empty: the stream that captures `subject`.
    pub stream: String,
    /// The subjects consumed (a filter on the stream; wildcards allowed).
    pub subject: String,
    /// Name of the durable pull consumer, so a restarted router continues where it stopped.
    pub durable: String,
    /// Where the guild id is in an event's JSON: a field name, or a dotted path (`d.guild_id`
    /// for raw Discord gateway payloads).
    pub guild_field: String,
    /// Events of unrouted guilds go to this prefix + the original subject.
    pub production_prefix: String,
    /// Events without a usable guild id go here, with a reason header.
    pub dead_letter_subject: String,
    /// When the route watch has been broken this long, consumption pauses until it is back.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// How long JetStream waits for an ack before redelivering (the consumer's `ack_wait`).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Republishes awaiting their JetStream ack at once (the pipeline depth).
    pub max_in_flight: usize,
    /// Delay before JetStream redelivers an event whose republish failed.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Interval of the log line with the counts and the route cache age.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            sandboxd_addr: "http://127.0.0.1:50051".into(),
            sandboxd_tls: Default::default(),
            api_key: Secret::default(),
            nats_url: SecretUrl::new("nats://127.0.0.1:4222"),
            stream: String::new(),
            subject: "discord.events.>".into(),
            durable: "sandboxd-router".into(),
            guild_field: "guild_id".into(),
            production_prefix: "prod.".into(),
            dead_letter_subject: "discord.dead-letter".into(),
            max_staleness: Duration::from_secs(30),
            ack_wait: Duration::from_secs(30),
            max_in_flight: 512,
            retry_delay: Duration::from_secs(1),
            stats_interval: Duration::from_secs(30),
        }
    }
}

/// Most republishes in flight; async-nats allows 5,000 pending acks per context.
const MAX_IN_FLIGHT: usize = 4096;

impl RouterConfig {
    /// Every problem at once. Rejects settings under which the router would consume its own
    /// output (an endless loop) or that NATS would refuse.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if !self.sandboxd_addr.starts_with("http://") && !self.sandboxd_addr.starts_with("https://")
        {
            problems.push("router.sandboxd_addr must start with http:// or https://".to_string());
        }
        if !self.nats_url.expose().starts_with("nats://") {
            problems.push("router.nats_url must start with nats://".to_string());
        }
        if !subject::is_valid_filter(&self.subject) {
            problems.push(format!("router.subject {:?} is not a NATS subject", self.subject));
        }
        if !subject::is_valid_name(&self.dead_letter_subject) {
            problems.push(format!(
                "router.dead_letter_subject {:?} must be a NATS subject without wildcards",
                self.dead_letter_subject
            ));
        } else if subject::matches(&self.subject, &self.dead_letter_subject) {
            problems.push("router.dead_letter_subject must not match router.subject (the router would consume its dead letters)".to_string());
        }
        let production = format!("{}{}", self.production_prefix, self.subject);
        if !self.production_prefix.ends_with('.') || !subject::is_valid_filter(&production) {
            problems.push(format!(
                "router.production_prefix {:?} must be subject tokens ending in '.'",
                self.production_prefix
            ));
        } else if subject::overlap(&self.subject, &production) {
            problems.push("router.production_prefix makes production subjects that router.subject matches (the router would consume its own output)".to_string());
        }
        if subject::overlap(&self.subject, &format!("sandbox.*.{}", self.subject)) {
            problems.push("router.subject matches sandbox.<uuid>.… subjects (the router would consume its own output)".to_string());
        }
        if self.durable.is_empty()
            || !self.durable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push("router.durable must be letters, digits, '-' or '_'".to_string());
        }
        if !self.stream.is_empty()
            && !self.stream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push("router.stream must be letters, digits, '-' or '_'".to_string());
        }
        if self.guild_field.is_empty() || self.guild_field.split('.').any(str::is_empty) {
            problems.push("router.guild_field must be a field name or a dotted path".to_string());
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            problems.push(format!("router.max_in_flight must be 1 to {MAX_IN_FLIGHT}"));
        }
        for (name, value) in [
            ("router.max_staleness", self.max_staleness),
            ("router.ack_wait", self.ack_wait),
            ("router.stats_interval", self.stats_interval),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid router configuration:\n  - {}", problems.join("\n  - "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        RouterConfig::default().validate().unwrap();
    }

    #[test]
    fn loops_and_bad_subjects_are_refused_all_at_once() {
        let config = RouterConfig {
            subject: ">".into(),
            dead_letter_subject: "bad subject".into(),
            production_prefix: "prod".into(),
            durable: "a.b".into(),
            guild_field: "d..guild_id".into(),
            max_in_flight: 0,
            ..RouterConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        for expected in [
            "dead_letter_subject",
            "production_prefix",
            "sandbox.<uuid>",
            "durable",
            "guild_field",
            "max_in_flight",
        ] {
            assert!(message.contains(expected), "{expected} missing in: {message}");
        }
        let looping = RouterConfig {
            subject: "events.>".into(),
            dead_letter_subject: "events.dead".into(),
            production_prefix: "events.".into(),
            ..RouterConfig::default()
        };
        let message = looping.validate().unwrap_err().to_string();
        assert!(message.contains("consume its dead letters"), "{message}");
        assert!(message.contains("consume its own output"), "{message}");
    }
}
