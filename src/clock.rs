//! Wall-clock time that follows tokio's clock in tests.
//!
//! Anything sent or stored (lease `expires_at`, JWT `iat`/`nbf`/`exp`, the
//! `claimed_at`/`retire_at` written to shared documents) takes the system's
//! wall clock, read afresh each time, so NTP corrections and suspend are
//! followed (any step over [`STEP`]). Every deadline the daemon waits for is
//! a tokio sleep on the monotonic clock. The time is the wall clock at the
//! start advanced by tokio's clock (so paused tests drive it with
//! `advance()`), plus however far the system's wall clock has stepped away
//! from the real monotonic clock since.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Differences between the wall clock and the monotonic clock below this
/// are taken for the noise of reading both; above, for a step.
pub const STEP: Duration = Duration::from_millis(100);

/// The wall clock, plus whatever tokio's (paused) clock has been advanced.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_wall: SystemTime,
    base_tokio: Instant,
    base_real: std::time::Instant,
    wall: fn() -> SystemTime,
}

impl Clock {
    /// The system's wall clock.
    pub fn new() -> Self {
        Self::with_wall(SystemTime::now)
    }

    /// A clock reading `wall` for the wall-clock time.
    fn with_wall(wall: fn() -> SystemTime) -> Self {
        Self {
            base_wall: wall(),
            base_tokio: Instant::now(),
            base_real: std::time::Instant::now(),
            wall,
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        let real = self.base_real.elapsed();
        let wall = (self.wall)();
        let estimate = self.base_wall + self.base_tokio.elapsed();
        // How far the wall clock has stepped since the start (NTP, suspend,
        // an operator's `date -s`).
        let expected = self.base_wall + real;
        let stepped = match wall.duration_since(expected) {
            Ok(ahead) if ahead > STEP => estimate.checked_add(ahead),
            Err(behind) if behind.duration() > STEP => estimate.checked_sub(behind.duration()),
            _ => Some(estimate),
        };
        stepped.unwrap_or(wall)
    }

    /// The tokio instant at which wall-clock `at` falls (now, if it has passed).
    pub fn instant_at(&self, at: SystemTime) -> Instant {
        let now = self.now();
        let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
        // A time beyond what a timer can hold is as good as never.
        Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400))
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

    static WALL_STEP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn stepped_wall() -> SystemTime {
        SystemTime::now() + Duration::from_secs(WALL_STEP.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn follows_the_system_clock_when_it_steps() {
        let clock = Clock::with_wall(stepped_wall);
        let before = clock.now();
        // An NTP step (or a suspend) moves the wall clock an hour ahead
        // without the monotonic clock moving.
        WALL_STEP.store(3600, std::sync::atomic::Ordering::SeqCst);
        let after = clock.now();
        let moved = after.duration_since(before).unwrap();
        assert!(
            moved >= Duration::from_secs(3600) && moved < Duration::from_secs(3610),
            "the clock moved {moved:?} when the wall clock stepped an hour"
        );
    }
}
