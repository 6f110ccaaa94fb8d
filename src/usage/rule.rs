//! The spike rule over one category's history of polls.
//!
//! Twilio's Usage Records Today gives the day's cumulative count. Each poll
//! adds the difference since the previous poll to a running total (an
//! odometer): on a new UTC day the difference is the new day's count so
//! far, since Today starts again from zero at midnight (what the old day
//! brought after its last poll is not counted); a count that went down
//! within a day (Twilio corrected it) adds nothing. The count over any
//! stretch of time is then the difference of two odometer readings. After
//! polls failed for longer than a window, what the gap brought is spread
//! evenly over it, so the first window after an outage is not charged
//! with the whole outage.
//!
//! A window's count is a spike when it exceeds `max_per_window`, or
//! `factor` × the median of the `baseline` windows before it (a median of
//! less than 1 counts as 1, so a quiet account needs more than `factor`
//! events to alert). The median rule applies once at least half of the
//! baseline windows are complete: after a start, only `max_per_window`
//! guards the first `baseline / 2` windows. The first poll only sets the
//! odometer's start: a day's cumulative count is not a window.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

/// One poll.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at: SystemTime,
    /// The odometer after this poll.
    total: f64,
}

/// The rule's settings (`[usage.NAME]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The window.
    pub window: Duration,
    /// Multiple of the baseline median that is a spike.
    pub factor: f64,
    /// Windows in the baseline.
    pub baseline: u32,
    /// A window's count above this is a spike.
    pub max_per_window: Option<u64>,
    /// Most samples kept (config: `MAX_SAMPLES` bounds the settings).
    pub max_samples: usize,
}

/// One category's polls.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    /// The day and count of the last poll.
    last: Option<(String, f64)>,
    /// The odometer when an alert was last cleared: what came before was
    /// seen by an operator and counts in no window after it.
    acknowledged: f64,
}

/// What the rule says after a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The count in the last window (since the last clear, if later).
    pub window_count: f64,
    /// The median of the complete baseline windows; `None` while fewer
    /// than half of them are complete.
    pub median: Option<f64>,
    /// Why this is a spike, with the numbers; `None` if it is not.
    pub spike: Option<String>,
}

impl History {
    /// Records a poll at `at` that found `count` for `day` (`YYYY-MM-DD`).
    pub fn record(&mut self, at: SystemTime, day: &str, count: f64, rule: &Rule) {
        let delta = match &self.last {
            None => 0.0,
            Some((last_day, last)) if last_day == day => (count - last).max(0.0),
            // A new day: Today counts from midnight again.
            Some(_) => count.max(0.0),
        };
        self.last = Some((day.to_owned(), count));
        let before = self.samples.back().copied();
        let total = before.map_or(0.0, |s| s.total) + delta;
        // After a gap longer than the window (polls failed), what the gap
        // brought is spread evenly over it: a window that saw part of the
        // gap counts its share, not the whole gap's.
        if let Some(b) = before
            && let Ok(gap) = at.duration_since(b.at)
            && gap > rule.window
            && delta > 0.0
            && !rule.window.is_zero()
        {
            let rate = delta / gap.as_secs_f64();
            // One reading per window across the gap (the last span the rule
            // reads, at most).
            let span = rule.window.saturating_mul(rule.baseline.saturating_add(1));
            let mut t = if gap > span {
                at - span
            } else {
                b.at + rule.window
            };
            while t < at {
                let elapsed = t.duration_since(b.at).unwrap_or_default().as_secs_f64();
                self.samples.push_back(Sample {
                    at: t,
                    total: b.total + rate * elapsed,
                });
                t += rule.window;
            }
        }
        self.samples.push_back(Sample { at, total });
        // Keep one sample at or before the oldest instant the rule reads.
        let span = rule.window.saturating_mul(rule.baseline.saturating_add(1));
        if let Some(oldest) = at.checked_sub(span) {
            while self.samples.len() > 1 && self.samples[1].at <= oldest {
                self.samples.pop_front();
            }
        }
        while self.samples.len() > rule.max_samples.max(2) {
            self.samples.pop_front();
        }
    }

    /// Forgets the counts so far for the spike rule (ClearAlert): the next
    /// windows count only what comes after.
    pub fn acknowledge(&mut self) {
        self.acknowledged = self.samples.back().map_or(0.0, |s| s.total);
    }

    /// The odometer at `t`: the last sample at or before it; `None` before
    /// the first.
    fn total_at(&self, t: SystemTime) -> Option<f64> {
        let i = self.samples.partition_point(|s| s.at <= t);
        (i > 0).then(|| self.samples[i - 1].total)
    }

    /// The rule applied at the latest poll.
    pub fn evaluate(&self, rule: &Rule) -> Evaluation {
        let Some(last) = self.samples.back() else {
            return Evaluation {
                window_count: 0.0,
                median: None,
                spike: None,
            };
        };
        let now = last.at;
        let first = self.samples[0].total;
        let start = now
            .checked_sub(rule.window)
            .and_then(|t| self.total_at(t))
            .unwrap_or(first)
            .max(self.acknowledged);
        let window_count = (last.total - start).max(0.0);
        let mut windows: Vec<f64> = (1..=rule.baseline)
            .filter_map(|k| {
                let end = now.checked_sub(rule.window.checked_mul(k)?)?;
                let begin = end.checked_sub(rule.window)?;
                // A window is complete when the history reaches back to it.
                if begin < self.samples[0].at {
                    return None;
                }
                Some(self.total_at(end)? - self.total_at(begin)?)
            })
            .collect();
        let need = (rule.baseline as usize).div_ceil(2).max(1);
        let median = (windows.len() >= need).then(|| median(&mut windows));
        let window = humantime::format_duration(rule.window);
        let spike = if let Some(max) = rule.max_per_window.filter(|m| window_count > *m as f64) {
            Some(format!(
                "{window_count} in the last {window} > max_per_window {max}"
            ))
        } else {
            median
                .filter(|m| window_count > rule.factor * m.max(1.0))
                .map(|m| {
                    format!(
                        "{window_count} in the last {window} > factor {} × median {m} of the {} windows before",
                        rule.factor,
                        windows.len()
                    )
                })
        };
        Evaluation {
            window_count,
            median,
            spike,
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn rule() -> Rule {
        Rule {
            window: MIN * 10,
            factor: 5.0,
            baseline: 6,
            max_per_window: None,
            max_samples: 10_000,
        }
    }

    fn t(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MIN * minutes as u32
    }

    /// Polls every 5 minutes from minute 0, adding `per_poll(i)` each time.
    fn steady(h: &mut History, r: &Rule, polls: u64, per_poll: impl Fn(u64) -> f64) -> f64 {
        let mut count = 0.0;
        for i in 0..polls {
            count += per_poll(i);
            h.record(t(i * 5), "2027-01-15", count, r);
            assert_eq!(h.evaluate(r).spike, None, "poll {i}");
        }
        count
    }

    #[test]
    fn steady_usage_never_alerts_and_a_spike_alerts_at_the_next_poll() {
        let r = rule();
        let mut h = History::default();
        // 13 polls: 60 minutes, six full windows of 20 each.
        let count = steady(&mut h, &r, 13, |i| if i == 0 { 500.0 } else { 10.0 });
        let e = h.evaluate(&r);
        assert_eq!(e.window_count, 20.0);
        assert_eq!(e.median, Some(20.0));
        // 101 more in one poll: over 5 × 20.
        h.record(t(13 * 5), "2027-01-15", count + 101.0, &r);
        let e = h.evaluate(&r);
        let why = e.spike.expect("a spike");
        assert!(
            why.contains("111 in the last 10m > factor 5 × median 20"),
            "{why}"
        );
        // 90 more is not: the window holds 10 + 90 = 100, not over 5 × 20.
        let mut h2 = History::default();
        let count = steady(&mut h2, &r, 13, |i| if i == 0 { 500.0 } else { 10.0 });
        h2.record(t(65), "2027-01-15", count + 90.0, &r);
        assert_eq!(h2.evaluate(&r).spike, None);
    }

    #[test]
    fn the_first_poll_sets_the_start_and_the_median_waits_for_half_the_baseline() {
        let r = rule();
        let mut h = History::default();
        // A large count at the first poll is the day so far, not a window.
        h.record(t(0), "2027-01-15", 1_000_000.0, &r);
        assert_eq!(h.evaluate(&r).window_count, 0.0);
        // Two windows (20 min) are not half of six: no median yet, so a
        // jump is no spike by the median rule...
        h.record(t(10), "2027-01-15", 1_000_010.0, &r);
        h.record(t(20), "2027-01-15", 1_000_020.0, &r);
        h.record(t(25), "2027-01-15", 1_000_500.0, &r);
        let e = h.evaluate(&r);
        assert_eq!(e.median, None);
        assert_eq!(e.spike, None);
        // ...but max_per_window applies from the start.
        let strict = Rule {
            max_per_window: Some(400),
            ..r
        };
        let why = h.evaluate(&strict).spike.unwrap();
        assert!(why.contains("> max_per_window 400"), "{why}");
    }

    #[test]
    fn the_day_rolling_over_is_no_spike_and_no_gap() {
        let r = Rule {
            max_per_window: Some(50),
            ..rule()
        };
        let mut h = History::default();
        let count = steady(&mut h, &r, 13, |i| if i == 0 { 5000.0 } else { 10.0 });
        // Midnight UTC: Today starts from 0; 10 since midnight.
        h.record(t(65), "2027-01-16", 10.0, &r);
        let e = h.evaluate(&r);
        assert_eq!(e.window_count, 20.0, "{e:?}");
        assert_eq!(e.spike, None);
        h.record(t(70), "2027-01-16", 20.0, &r);
        assert_eq!(h.evaluate(&r).window_count, 20.0);
        // A count that went down within the day adds nothing.
        h.record(t(75), "2027-01-16", 15.0, &r);
        assert_eq!(h.evaluate(&r).window_count, 10.0);
        assert!(count > 0.0);
    }

    #[test]
    fn a_quiet_account_needs_more_than_factor_events() {
        let r = rule();
        let mut h = History::default();
        let count = steady(&mut h, &r, 13, |_| 0.0);
        assert_eq!(h.evaluate(&r).median, Some(0.0));
        h.record(t(65), "2027-01-15", count + 5.0, &r);
        assert_eq!(h.evaluate(&r).spike, None);
        h.record(t(70), "2027-01-15", count + 6.0, &r);
        assert!(h.evaluate(&r).spike.is_some());
    }

    #[test]
    fn acknowledged_counts_are_not_counted_again() {
        let r = Rule {
            max_per_window: Some(50),
            ..rule()
        };
        let mut h = History::default();
        h.record(t(0), "2027-01-15", 0.0, &r);
        h.record(t(5), "2027-01-15", 100.0, &r);
        assert!(h.evaluate(&r).spike.is_some());
        h.acknowledge();
        h.record(t(10), "2027-01-15", 110.0, &r);
        assert_eq!(h.evaluate(&r).window_count, 10.0);
        assert_eq!(h.evaluate(&r).spike, None);
        h.record(t(12), "2027-01-15", 170.0, &r);
        assert!(h.evaluate(&r).spike.is_some());
    }

    #[test]
    fn an_outage_longer_than_the_window_is_spread_over_its_length() {
        let r = Rule {
            max_per_window: Some(150),
            ..rule()
        };
        let mut h = History::default();
        h.record(t(0), "2027-01-15", 0.0, &r);
        h.record(t(5), "2027-01-15", 10.0, &r);
        // 40 minutes without a good poll, 400 more meanwhile: 10 a minute,
        // 100 per 10-minute window, not 400 in one.
        h.record(t(45), "2027-01-15", 410.0, &r);
        let e = h.evaluate(&r);
        assert_eq!(e.window_count, 100.0, "{e:?}");
        assert_eq!(e.spike, None);
    }

    #[test]
    fn history_is_bounded() {
        let r = Rule {
            max_samples: 50,
            ..rule()
        };
        let mut h = History::default();
        for i in 0..10_000 {
            h.record(t(i), "2027-01-15", i as f64, &r);
        }
        assert!(h.samples.len() <= 50);
        // The span the rule reads: (baseline + 1) windows = 70 minutes of
        // minute polls, plus the one before.
        let mut h = History::default();
        for i in 0..1000 {
            h.record(t(i), "2027-01-15", i as f64, &rule());
        }
        assert_eq!(h.samples.len(), 71);
        assert_eq!(h.evaluate(&rule()).median, Some(10.0));
    }
}
