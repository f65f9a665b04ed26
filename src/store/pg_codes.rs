//! PostgreSQL SQLSTATE codes the store reacts to, in one place.

pub const UNIQUE_VIOLATION: &str = "23505";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Whether `error` is PostgreSQL refusing for lack of a privilege.
pub fn insufficient_privilege(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|db| db.code()).as_deref() == Some(INSUFFICIENT_PRIVILEGE)
}

/// The constraint name of a unique violation, if `error` is one.
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    let db_error = error.as_database_error()?;
    if db_error.code().as_deref() != Some(UNIQUE_VIOLATION) {
        return None;
    }
    Some(db_error.constraint().unwrap_or_default().to_string())
}

/// How a database error should reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Deadlock detected or serialization failure: the transaction lost a race; retryable.
    Contention,
    /// `statement_timeout` (or a cancel) stopped the statement.
    Timeout,
    /// The server is going away, refusing connections or out of them; retryable.
    Unavailable,
    /// A value the database cannot store (a NUL character in text or JSON, a number or a
    /// time out of range): the request's fault. Validation at the edge should have refused it
    /// first; this is the backstop, so such a request is never INTERNAL.
    BadValue,
    /// Anything else: a bug or an unexpected failure.
    Other,
}

/// Classifies a database error by its SQLSTATE.
pub fn condition(code: &str) -> Condition {
    match code {
        // deadlock_detected, serialization_failure
        "40P01" | "40001" => Condition::Contention,
        // query_canceled (statement_timeout), lock_not_available (lock_timeout)
        "57014" | "55P03" => Condition::Timeout,
        // too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now,
        // database_dropped, and the whole connection_exception class
        "53300" | "57P01" | "57P02" | "57P03" | "57P04" => Condition::Unavailable,
        code if code.starts_with("08") => Condition::Unavailable,
        // character_not_in_repertoire, untranslatable_character, numeric_value_out_of_range,
        // datetime_field_overflow, invalid_text_representation, string_data_right_truncation
        "22021" | "22P05" | "22003" | "22008" | "22P02" | "22001" => Condition::BadValue,
        _ => Condition::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(condition("40P01"), Condition::Contention);
        assert_eq!(condition("40001"), Condition::Contention);
        assert_eq!(condition("57014"), Condition::Timeout);
        assert_eq!(condition("57P01"), Condition::Unavailable);
        assert_eq!(condition("53300"), Condition::Unavailable);
        assert_eq!(condition("08006"), Condition::Unavailable);
        assert_eq!(condition("22P05"), Condition::BadValue);
        assert_eq!(condition("23505"), Condition::Other);
    }
}
