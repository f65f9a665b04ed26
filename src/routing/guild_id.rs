//! Discord guild ids: snowflakes, written as decimal strings that fit in a u64.

use std::fmt;

use crate::error::FieldViolation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuildId(u64);

impl GuildId {
    /// Accepts only the canonical form: decimal digits, no sign, no leading zeros, not zero.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let invalid = || {
            FieldViolation::new(
                field,
                "must be a Discord snowflake: a positive decimal integer that fits in 64 bits, without leading zeros",
            )
        };
        if value.is_empty()
            || value.len() > 20
            || !value.bytes().all(|b| b.is_ascii_digit())
            || value.starts_with('0')
        {
            return Err(invalid());
        }
        value.parse::<u64>().map(Self).map_err(|_| invalid())
    }

    pub fn as_u64(&self) -> u64 {
        self.0
    }

    pub fn as_str(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for GuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_u64_decimals_are_guild_ids() {
        assert_eq!(GuildId::parse("g", "81384788765712384").unwrap().as_u64(), 81384788765712384);
        assert!(GuildId::parse("g", "18446744073709551615").is_ok());
        for bad in ["", "0", "012", "-1", "+1", "1.5", "18446744073709551616", "12a", " 1", "١٢"]
        {
            assert!(GuildId::parse("g", bad).is_err(), "{bad:?} accepted");
        }
    }
}
