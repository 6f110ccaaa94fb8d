//! Wall-clock time that follows tokio's clock.
//!
//! Leases carry wall-clock timestamps, but every deadline the broker waits
//! for is a tokio sleep. Deriving one from the other keeps them consistent
//! and lets tests drive leases, staleness and renewals with
//! `tokio::time::pause()` / `advance()` instead of sleeping.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A wall clock anchored once and advanced by tokio's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_wall: SystemTime,
    base_instant: Instant,
}

impl Clock {
    /// Anchors the clock at the current system time.
    pub fn new() -> Self {
        Self {
            base_wall: SystemTime::now(),
            base_instant: Instant::now(),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.base_wall + self.base_instant.elapsed()
    }

    /// The tokio instant at which wall-clock `at` falls (now, if it has passed).
    pub fn instant_at(&self, at: SystemTime) -> Instant {
        let now = self.now();
        Instant::now() + at.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = Clock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(
            clock.now().duration_since(t0).unwrap(),
            Duration::from_secs(90)
        );
        let at = clock.now() + Duration::from_secs(5);
        assert_eq!(
            clock.instant_at(at) - Instant::now(),
            Duration::from_secs(5)
        );
    }
}
