//! Retry timing: exponential backoff from about a second, doubling to a ten
//! minute cap, with jitter so deliveries that failed together (an SMTP outage)
//! do not all come back in the same instant.

use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(600);

/// The wait after attempt number `attempt` (1 for the first) failed. `unit` in
/// [0, 1) picks the jitter: the wait is between half and all of the base.
pub fn delay(attempt: i64, unit: f64) -> Duration {
    let doublings = (attempt.max(1) - 1).min(20) as u32;
    let base = FIRST.saturating_mul(1 << doublings).min(CAP);
    let unit = unit.clamp(0.0, 1.0);
    base.mul_f64(0.5 + unit * 0.5)
}

/// A number in [0, 1) for jitter (`fastrand`, seeded per thread from the
/// system's randomness).
pub fn random_unit() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_to_a_cap_with_bounded_jitter() {
        let secs = |attempt, unit| delay(attempt, unit).as_secs_f64();
        for (attempt, base) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (5, 16.0),
            (10, 512.0),
            (11, 600.0),
            (50, 600.0),
        ] {
            assert_eq!(
                secs(attempt, 0.999_999_9).round(),
                base,
                "attempt {attempt}"
            );
            assert_eq!(secs(attempt, 0.0), base / 2.0, "attempt {attempt}");
        }
        assert_eq!(secs(0, 1.0), 1.0, "attempt numbers start at 1");
    }

    #[test]
    fn jitter_varies() {
        let draws: Vec<f64> = (0..50).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let distinct: std::collections::BTreeSet<u64> = draws.iter().map(|u| u.to_bits()).collect();
        assert!(distinct.len() > 40);
    }
}
