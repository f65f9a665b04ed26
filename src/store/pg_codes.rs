//! PostgreSQL SQLSTATE codes the store reacts to, in one place.

pub const UNIQUE_VIOLATION: &str = "23505";

/// The constraint name of a unique violation, if `error` is one.
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    let db_error = error.as_database_error()?;
    if db_error.code().as_deref() != Some(UNIQUE_VIOLATION) {
        return None;
    }
    Some(db_error.constraint().unwrap_or_default().to_string())
}
