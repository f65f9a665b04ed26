//! NATS subject rules the router needs: validity, matching a filter, and whether two filters
//! can match a common subject (to refuse settings that would make the router consume its own
//! output), plus the destination subjects themselves.

use uuid::Uuid;

fn token_ok(token: &str) -> bool {
    !token.is_empty() && !token.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// A subject that can be published to: dot-separated tokens, no wildcards.
pub fn is_valid_name(subject: &str) -> bool {
    subject.split('.').all(|t| token_ok(t) && t != "*" && t != ">")
}

/// A subject filter: like a name, where a token may be `*` and the last one `>`.
pub fn is_valid_filter(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| token_ok(t) && (*t != ">" || i == last))
}

/// Whether `filter` matches the concrete subject `subject`.
pub fn matches(filter: &str, subject: &str) -> bool {
    overlap(filter, subject)
}

/// Whether some subject matches both filters.
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `sandbox.<uuid>.<original subject>`: the sandbox's subject namespace.
pub fn sandbox_subject(sandbox: Uuid, original: &str) -> String {
    format!("sandbox.{sandbox}.{original}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_and_overlap_like_nats() {
        assert!(matches("discord.events.>", "discord.events.GUILD_CREATE"));
        assert!(matches("discord.*.x", "discord.events.x"));
        assert!(!matches("discord.events.>", "discord.events"));
        assert!(!matches("discord.events.>", "prod.discord.events.x"));
        assert!(overlap(">", "sandbox.*.a"));
        assert!(overlap("a.*.c", "a.b.>"));
        assert!(!overlap("discord.events.>", "sandbox.*.discord.events.>"));
        assert!(!overlap("a.b", "a.b.c"));
    }

    #[test]
    fn names_and_filters_are_checked() {
        assert!(is_valid_name("discord.dead-letter"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_filter("discord.*.>"));
        assert!(!is_valid_filter("a.>.b"));
        assert!(!is_valid_filter("a."));
    }
}
