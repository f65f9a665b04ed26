//! Reading the guild id out of an event: the payload is JSON and the id sits at a configured
//! field or dotted path. Anything unusable becomes a dead-letter reason, never a silent drop.

use serde_json::Value;

use crate::routing::GuildId;

/// Why an event went to the dead-letter subject (the value of its reason header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The payload is not a JSON object.
    NotJson,
    /// The guild id field is absent or null (e.g. a direct-message event).
    MissingGuildId,
    /// The field holds something that is not a Discord snowflake.
    MalformedGuildId,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::NotJson => "not_json",
            DeadLetterReason::MissingGuildId => "missing_guild_id",
            DeadLetterReason::MalformedGuildId => "malformed_guild_id",
        }
    }
}

/// The configured location of the guild id, split once.
#[derive(Debug, Clone)]
pub struct GuildField {
    path: Vec<String>,
}

impl GuildField {
    pub fn new(dotted: &str) -> Self {
        Self { path: dotted.split('.').map(str::to_string).collect() }
    }

    /// The guild id of an event. A snowflake is accepted as a decimal string (what Discord
    /// sends) or as a JSON integer (what some bots re-serialise it to).
    pub fn guild_id(&self, payload: &[u8]) -> Result<GuildId, DeadLetterReason> {
        let event: Value =
            serde_json::from_slice(payload).map_err(|_| DeadLetterReason::NotJson)?;
        if !event.is_object() {
            return Err(DeadLetterReason::NotJson);
        }
        let mut value = &event;
        for key in &self.path {
            match value.get(key) {
                Some(inner) => value = inner,
                None => return Err(DeadLetterReason::MissingGuildId),
            }
        }
        let text = match value {
            Value::Null => return Err(DeadLetterReason::MissingGuildId),
            Value::String(text) => text.clone(),
            Value::Number(number) if number.is_u64() => number.to_string(),
            _ => return Err(DeadLetterReason::MalformedGuildId),
        };
        GuildId::parse("guild_id", &text).map_err(|_| DeadLetterReason::MalformedGuildId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guild_ids_are_read_from_the_field_or_path() {
        let top = GuildField::new("guild_id");
        let id = top.guild_id(br#"{"guild_id": "81384788765712384", "t": "X"}"#).unwrap();
        assert_eq!(id.as_u64(), 81384788765712384);
        assert_eq!(top.guild_id(br#"{"guild_id": 42}"#).unwrap().as_u64(), 42);
        let nested = GuildField::new("d.guild_id");
        assert_eq!(nested.guild_id(br#"{"op":0,"d":{"guild_id":"7"}}"#).unwrap().as_u64(), 7);
    }

    #[test]
    fn unusable_events_get_a_reason() {
        let field = GuildField::new("d.guild_id");
        for (payload, reason) in [
            (&b"not json"[..], DeadLetterReason::NotJson),
            (b"[1, 2]", DeadLetterReason::NotJson),
            (b"", DeadLetterReason::NotJson),
            (br#"{"d": {}}"#, DeadLetterReason::MissingGuildId),
            (br#"{"x": 1}"#, DeadLetterReason::MissingGuildId),
            (br#"{"d": {"guild_id": null}}"#, DeadLetterReason::MissingGuildId),
            (br#"{"d": {"guild_id": "007"}}"#, DeadLetterReason::MalformedGuildId),
            (br#"{"d": {"guild_id": -3}}"#, DeadLetterReason::MalformedGuildId),
            (br#"{"d": {"guild_id": ["1"]}}"#, DeadLetterReason::MalformedGuildId),
            (br#"{"d": "1"}"#, DeadLetterReason::MissingGuildId),
        ] {
            assert_eq!(
                field.guild_id(payload),
                Err(reason),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
