//! Checked time arithmetic: every timestamp computed from a caller's duration goes through
//! here, so no duration, however large, can overflow a timestamp and panic.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `at + by`, or `None` when the result is beyond what a timestamp can hold.
pub fn later(at: DateTime<Utc>, by: Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(chrono::Duration::from_std(by).ok()?)
}

/// `at + by`, saturating at the latest representable timestamp (for expiry times where "never"
/// is the honest answer to an absurd duration).
pub fn later_saturating(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    later(at, by).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_do_not_overflow() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::from_secs(10)), Some(now + chrono::Duration::seconds(10)));
        assert_eq!(later(now, Duration::from_secs(10_u64.pow(13))), None);
        assert_eq!(later(now, Duration::MAX), None);
        assert_eq!(later_saturating(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
