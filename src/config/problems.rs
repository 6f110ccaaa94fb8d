//! Problems found while validating, collected so one run of
//! `check-config` lists them all, and the value checks every section shares.

use super::*;

/// Collects problems, so one run of `check-config` lists them all.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, expected: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            expected: expected.into(),
        });
    }

    /// Duration `value` of `key`: positive and at most [`MAX_DURATION`], so
    /// that sums of durations and times plus durations cannot overflow.
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        fallback: Duration,
    ) -> Duration {
        match value {
            None => fallback,
            Some(v) => match humantime::parse_duration(v) {
                Ok(d) if d > MAX_DURATION => {
                    self.push(
                        key,
                        format!("a duration of at most 365 days (\"365d\"), not {v:?}"),
                    );
                    fallback
                }
                Ok(d) if !d.is_zero() => d,
                _ => {
                    self.push(
                        key,
                        format!("a positive duration such as \"90s\", \"5m\" or \"1h\", not {v:?}"),
                    );
                    fallback
                }
            },
        }
    }

    pub(super) fn url(&mut self, key: &str, value: Option<String>, fallback: &str) -> String {
        let v = value.unwrap_or_else(|| fallback.to_owned());
        let rest = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {
                v.trim_end_matches('/').to_owned()
            }
            _ => {
                self.push(key, format!("an http:// or https:// URL, not {v:?}"));
                v
            }
        }
    }
}

pub(super) fn allow_list(raw: Option<RawAllow>) -> AllowList {
    let raw = raw.unwrap_or_default();
    AllowList {
        uids: raw.uids,
        gids: raw.gids,
    }
}
