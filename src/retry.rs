//! The one backoff with jitter that retry loops use: the broker's store
//! refresh and first load, the Twilio client's retries, the rotation's wait
//! for a new value to start working at Twilio, and the rotation schedule's
//! retry after a failed run.
//!
//! Jitter spreads the retries of many sidecars that failed together (a
//! store outage, a Twilio incident), so they do not return in lockstep.

use std::time::Duration;

use rand::Rng as _;

/// Exponential backoff from `base` (`base`, 2×`base`, 4×`base`, … for
/// `failures` = 1, 2, 3, …), capped at `cap`, with jitter in its upper
/// half: the wait is between half and all of that.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let full = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// `d` shortened by up to a tenth, so periodic work spreads out.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_base_and_is_capped() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            let first = backoff(1, base, cap);
            assert!(first >= base / 2 && first <= base, "{first:?}");
            let fourth = backoff(4, base, cap);
            assert!(fourth >= base * 4 && fourth <= base * 8, "{fourth:?}");
            assert!(backoff(30, base, cap) <= cap);
            assert!(backoff(30, base, cap) >= cap / 2);
            let short = backoff(2, Duration::from_millis(250), cap);
            assert!(short >= Duration::from_millis(250) && short <= Duration::from_millis(500));
        }
    }

    #[test]
    fn jitter_shortens_by_at_most_a_tenth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(10));
        }
    }
}
