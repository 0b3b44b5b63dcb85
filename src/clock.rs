//! Saturating time arithmetic: every duration a user can pass (up to `Duration::MAX`)
//! becomes a deadline without overflowing `Instant`.

use std::time::{Duration, Instant};

/// Longest wait logsender ever computes a deadline for (about 100 years): longer
/// durations mean "no deadline" in practice, and stay far from `Instant`'s limits.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `t + d`, saturating at about a century past `t` instead of panicking.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

/// `now + d`, saturating (see [`after`]).
pub(crate) fn deadline_in(d: Duration) -> Instant {
    after(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert_eq!(
            after(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        assert!(deadline_in(Duration::MAX) > now);
    }
}
