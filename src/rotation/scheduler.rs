//! The daemon's rotation schedule: cron (seconds field first, UTC), a
//! random delay so a fleet does not rotate in the same second, a missed run
//! made up once at start (not once per missed slot), and a wake-up at the
//! previous value's `retire_at` so it is retired on time.
//!
//! All waiting is on tokio's clock, so tests drive it with paused time.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::RotationError;
use crate::clock::Clock;

/// Most random delay added to a scheduled run.
pub const MAX_JITTER: Duration = Duration::from_secs(30);
/// Wait after a failed run before trying again, doubling up to [`MAX_RETRY`]
/// (the shared backoff of `retry.rs`, jittered into its upper half).
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between attempts after failures.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// The first slot of `schedule` strictly after `after`.
pub fn next_slot(schedule: &cron::Schedule, after: SystemTime) -> Option<SystemTime> {
    let after: DateTime<Utc> = after.into();
    schedule.after(&after).next().map(SystemTime::from)
}

/// When the next run is due: the first slot after the last rotation (or
/// after `since`, for a credential never rotated). A slot already past — a
/// run missed while the daemon was down — is due now, once.
pub fn due(
    schedule: &cron::Schedule,
    last_rotation: Option<SystemTime>,
    since: SystemTime,
) -> Option<SystemTime> {
    next_slot(schedule, last_rotation.unwrap_or(since))
}

/// What the scheduler drives: one credential's rotation.
#[async_trait::async_trait]
pub trait Rotation: Send + Sync {
    /// When the last rotation was promoted, and when the previous value retires.
    async fn timeline(&self) -> Result<(Option<SystemTime>, Option<SystemTime>), RotationError>;
    /// Advances the rotation; `start` begins a new one.
    async fn run(&self, start: bool) -> Result<(), RotationError>;
    /// Tells the status when the next run is.
    fn next_run(&self, at: SystemTime);
    /// Resolves when the rotation's state changed outside the schedule (a
    /// `Rotate` call): the schedule is worked out again.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// Runs `rotation` on `schedule` until `stop` is cancelled.
pub async fn run(
    rotation: impl Rotation,
    schedule: cron::Schedule,
    clock: Clock,
    jitter: Duration,
    stop: CancellationToken,
) {
    let started = clock.now();
    let mut failures = 0u32;
    let mut retry_at: Option<SystemTime> = None;
    loop {
        let (last, retire_at) = match rotation.timeline().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rotation state; retrying");
                (None, None)
            }
        };
        let Some(slot) = due(&schedule, last, started) else {
            tracing::warn!("the rotation schedule has no future slot; not scheduling");
            return;
        };
        let delay = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(rand::rng().random_range(0.0..1.0))
        };
        let mut wake = slot.max(clock.now()) + delay;
        if let Some(at) = retire_at {
            wake = wake.min(at.max(clock.now()));
        }
        if let Some(at) = retry_at {
            wake = wake.max(at);
        }
        rotation.next_run(wake);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = rotation.changed() => continue,
            _ = tokio::time::sleep_until(clock.instant_at(wake)) => {}
        }
        let start = clock.now() >= slot;
        match rotation.run(start).await {
            Ok(()) => {
                failures = 0;
                retry_at = None;
            }
            Err(e) => {
                failures += 1;
                let wait = crate::retry::backoff(failures, FIRST_RETRY, MAX_RETRY);
                tracing::warn!(error = %e, retry_in = ?wait, "rotation attempt failed");
                retry_at = Some(clock.now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        str::FromStr,
        sync::{Arc, Mutex},
    };

    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn slots_are_utc_and_strictly_after() {
        let daily = cron::Schedule::from_str("0 0 3 * * *").unwrap();
        assert_eq!(
            next_slot(&daily, at("2026-03-29T00:30:00Z")),
            Some(at("2026-03-29T03:00:00Z"))
        );
        // Exactly on a slot: the next one, not the same.
        assert_eq!(
            next_slot(&daily, at("2026-03-29T03:00:00Z")),
            Some(at("2026-03-30T03:00:00Z"))
        );
        let sunday = cron::Schedule::from_str("0 0 3 * * Sun").unwrap();
        assert_eq!(
            next_slot(&sunday, at("2026-11-27T12:00:00Z")),
            Some(at("2026-11-29T03:00:00Z"))
        );
        // A missed run (last rotation long ago) is due at once: its slot is past.
        let due = due(
            &daily,
            Some(at("2026-01-01T03:00:00Z")),
            at("2026-11-27T12:00:00Z"),
        )
        .unwrap();
        assert!(due < at("2026-11-27T12:00:00Z"));
    }

    /// A rotation whose "document" is in memory: counts runs.
    #[derive(Clone)]
    struct Fake {
        clock: Clock,
        last: Arc<Mutex<Option<SystemTime>>>,
        runs: Arc<Mutex<Vec<(SystemTime, bool)>>>,
        fail: Arc<Mutex<u32>>,
    }

    #[async_trait::async_trait]
    impl Rotation for Fake {
        async fn timeline(
            &self,
        ) -> Result<(Option<SystemTime>, Option<SystemTime>), RotationError> {
            Ok((*self.last.lock().unwrap(), None))
        }
        async fn run(&self, start: bool) -> Result<(), RotationError> {
            self.runs.lock().unwrap().push((self.clock.now(), start));
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(RotationError::Unsettled("fake".into()));
            }
            if start {
                *self.last.lock().unwrap() = Some(self.clock.now());
            }
            Ok(())
        }
        fn next_run(&self, _: SystemTime) {}
    }

    fn fake(clock: Clock, last: Option<SystemTime>, fail: u32) -> Fake {
        Fake {
            clock,
            last: Arc::new(Mutex::new(last)),
            runs: Arc::new(Mutex::new(Vec::new())),
            fail: Arc::new(Mutex::new(fail)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missed_runs_are_made_up_once_then_the_schedule_resumes() {
        let clock = Clock::new();
        let hourly = cron::Schedule::from_str("0 0 * * * *").unwrap();
        // Last rotated three days ago: 72 slots were missed while down.
        let f = fake(
            clock,
            Some(clock.now() - Duration::from_secs(3 * 86_400)),
            0,
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(f.clone(), hourly, clock, Duration::ZERO, stop.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(f.runs.lock().unwrap().len(), 1, "one catch-up run, not 72");
        // Then one run per slot.
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        let runs = f.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 4, "{runs:?}");
        for (t, start) in &runs[1..] {
            let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(secs % 3600, 0, "runs on the hour (UTC)");
            assert!(start);
        }
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn never_rotated_waits_for_the_first_slot_and_jitter_stays_bounded() {
        let clock = Clock::new();
        let hourly = cron::Schedule::from_str("0 0 * * * *").unwrap();
        let f = fake(clock, None, 0);
        let stop = CancellationToken::new();
        tokio::spawn(run(
            f.clone(),
            hourly.clone(),
            clock,
            Duration::from_secs(30),
            stop.clone(),
        ));
        let first_slot = next_slot(&hourly, clock.now()).unwrap();
        tokio::time::sleep(
            first_slot.duration_since(clock.now()).unwrap() - Duration::from_secs(1),
        )
        .await;
        assert!(
            f.runs.lock().unwrap().is_empty(),
            "nothing runs before the first slot"
        );
        tokio::time::sleep(Duration::from_secs(32)).await;
        let runs = f.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        let late = runs[0].0.duration_since(first_slot).unwrap();
        assert!(late <= Duration::from_secs(30), "jitter {late:?}");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_instead_of_spinning() {
        let clock = Clock::new();
        // Yearly, last run over a year ago: due now, and the next slot is
        // months away whatever the time of day the test runs at.
        let hourly = cron::Schedule::from_str("0 0 0 1 1 *").unwrap();
        let f = fake(
            clock,
            Some(clock.now() - Duration::from_secs(400 * 86_400)),
            3,
        );
        let stop = CancellationToken::new();
        tokio::spawn(run(f.clone(), hourly, clock, Duration::ZERO, stop.clone()));
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let runs = f.runs.lock().unwrap().clone();
        // Immediately, then after about 30 s, 60 s and 120 s (each jittered
        // into its upper half): the fourth succeeds.
        assert_eq!(runs.len(), 4, "{runs:?}");
        let gaps: Vec<u64> = runs
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].0).unwrap().as_secs())
            .collect();
        for (gap, full) in gaps.iter().zip([30, 60, 120]) {
            assert!((full / 2..=full).contains(gap), "{gaps:?}");
        }
        stop.cancel();
    }
}
