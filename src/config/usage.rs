//! `[usage.NAME]`: watching one Twilio account's usage for spikes.

use super::*;

/// Most categories one `[usage.NAME]` may watch.
pub const MAX_CATEGORIES: usize = 20;
/// Most polls of history one category keeps: `(baseline + 1) × window /
/// poll_interval` may not exceed it.
pub const MAX_SAMPLES: u64 = 10_000;
/// The shortest `poll_interval`: Twilio updates usage records every few
/// minutes; polling faster only costs API calls (tests use 1 s).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One `[usage.NAME]`; `credentials` are the validated credentials.
pub(super) fn usage(
    p: &mut Problems,
    name: String,
    u: RawUsage,
    credentials: &BTreeMap<String, Arc<CredentialConfig>>,
    metrics_addr: Option<SocketAddr>,
) -> UsageConfig {
    let key = format!("usage.{name}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.push(
            key.clone(),
            "a name of 1 to 64 letters, digits, `-` or `_` (it becomes a metrics label)",
        );
    }
    match credentials.get(&u.admin_credential) {
        None => p.push(
            format!("{key}.admin_credential"),
            format!(
                "the name of a configured credential; there is no `{}`",
                u.admin_credential
            ),
        ),
        Some(c) if !matches!(c.source, Source::Store { .. }) => p.push(
            format!("{key}.admin_credential"),
            format!(
                "a stored credential (the account's Auth Token or a Main key); `{}` is a dynamic_api_key",
                u.admin_credential
            ),
        ),
        Some(c) if matches!(c.source, Source::Store { kind: Some(Kind::OAuthClient), .. }) => p
            .push(
                format!("{key}.admin_credential"),
                format!(
                    "the account's Auth Token or a Main key; `{}` is an oauth_client",
                    u.admin_credential
                ),
            ),
        Some(_) => {}
    }
    let categories = categories(p, &key, u.categories);
    let poll_interval = p.duration(
        &format!("{key}.poll_interval"),
        u.poll_interval.as_deref(),
        DEFAULT_POLL_INTERVAL,
    );
    if poll_interval < MIN_POLL_INTERVAL {
        p.push(
            format!("{key}.poll_interval"),
            "at least 1s (Twilio updates usage every few minutes)",
        );
    }
    let window = p.duration(
        &format!("{key}.window"),
        u.window.as_deref(),
        DEFAULT_USAGE_WINDOW,
    );
    if window < poll_interval {
        p.push(
            format!("{key}.window"),
            format!(
                "at least poll_interval ({}): a window is the difference between two polls",
                humantime::format_duration(poll_interval)
            ),
        );
    }
    let factor = match u.factor {
        None => DEFAULT_FACTOR,
        Some(f) if f.is_finite() && f > 1.0 && f <= 1_000_000.0 => f,
        Some(f) => {
            p.push(
                format!("{key}.factor"),
                format!("a number greater than 1 (and at most 1000000), not {f}"),
            );
            DEFAULT_FACTOR
        }
    };
    let baseline = match u.baseline {
        None => DEFAULT_BASELINE,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            p.push(
                format!("{key}.baseline"),
                format!("a number of windows from 1 to 1000, not {n}"),
            );
            DEFAULT_BASELINE
        }
    };
    if !poll_interval.is_zero() {
        let samples = (u64::from(baseline) + 1).saturating_mul(window.as_millis() as u64)
            / (poll_interval.as_millis() as u64).max(1);
        if samples > MAX_SAMPLES {
            p.push(
                format!("{key}.poll_interval"),
                format!(
                    "at most {MAX_SAMPLES} polls in (baseline + 1) windows; these settings keep {samples}: raise poll_interval or lower baseline or window"
                ),
            );
        }
    }
    let positive = |p: &mut Problems, what: &str, raw: Option<i64>| match raw {
        None => None,
        Some(n) if n >= 1 => Some(n as u64),
        Some(n) => {
            p.push(
                format!("{key}.{what}"),
                format!("a positive count, not {n}"),
            );
            None
        }
    };
    let max_per_window = positive(p, "max_per_window", u.max_per_window);
    let on_spike = match u.on_spike.as_deref() {
        None | Some("alert") => OnSpike::Alert,
        Some("freeze_dynamic_keys") => OnSpike::FreezeDynamicKeys,
        Some("rotate") => OnSpike::Rotate,
        Some(other) => {
            p.push(
                format!("{key}.on_spike"),
                format!("one of \"alert\", \"freeze_dynamic_keys\", \"rotate\"; not {other:?}"),
            );
            OnSpike::Alert
        }
    };
    check_rotate(p, &key, on_spike, &u.rotate, credentials);
    let trigger_url = u
        .trigger_url
        .map(|url| p.url(&format!("{key}.trigger_url"), Some(url), ""));
    let trigger_value = positive(p, "trigger_value", u.trigger_value);
    if trigger_url.is_some() {
        if trigger_value.is_none() && u.trigger_value.is_none() {
            p.push(
                format!("{key}.trigger_value"),
                "the day's count per category at which Twilio calls trigger_url (a daily figure: set it above a normal day)",
            );
        }
        if let Some(c) = credentials.get(&u.admin_credential)
            && matches!(
                c.source,
                Source::Store {
                    kind: Some(Kind::ApiKey),
                    ..
                }
            )
        {
            p.push(
                format!("{key}.trigger_url"),
                format!(
                    "an admin_credential holding the account's Auth Token: Twilio signs trigger callbacks with it; `{}` is an api_key",
                    u.admin_credential
                ),
            );
        }
        if metrics_addr.is_none() {
            p.push(
                format!("{key}.trigger_url"),
                "[server] metrics_addr too: Twilio's callbacks arrive at POST /twilio/usage-trigger on the metrics listener",
            );
        }
    }
    UsageConfig {
        name,
        admin_credential: u.admin_credential,
        categories,
        poll_interval,
        window,
        factor,
        baseline,
        max_per_window,
        on_spike,
        rotate: u.rotate,
        trigger_url,
        trigger_value,
    }
}

/// `categories`: 1 to [`MAX_CATEGORIES`] distinct Twilio usage categories.
fn categories(p: &mut Problems, key: &str, raw: Vec<String>) -> Vec<String> {
    if raw.is_empty() || raw.len() > MAX_CATEGORIES {
        p.push(
            format!("{key}.categories"),
            format!(
                "1 to {MAX_CATEGORIES} Twilio usage categories such as \"sms\" or \"verify-voice-and-sms\""
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &raw {
        let well_formed = !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            p.push(
                format!("{key}.categories"),
                format!(
                    "Twilio usage categories (lower-case letters, digits and `-`, such as \"sms\"), not {:?}",
                    c.chars().take(64).collect::<String>()
                ),
            );
        } else if !seen.insert(c.as_str()) {
            p.push(
                format!("{key}.categories"),
                format!("each category once; {c:?} is listed twice"),
            );
        }
    }
    raw
}

/// `rotate`: with `on_spike = "rotate"`, the credentials to rotate, each
/// with a `[rotation]` table; without it, nothing.
fn check_rotate(
    p: &mut Problems,
    key: &str,
    on_spike: OnSpike,
    rotate: &[String],
    credentials: &BTreeMap<String, Arc<CredentialConfig>>,
) {
    let at = format!("{key}.rotate");
    if on_spike != OnSpike::Rotate {
        if !rotate.is_empty() {
            p.push(at, "nothing unless on_spike = \"rotate\"");
        }
        return;
    }
    if rotate.is_empty() {
        p.push(
            at.clone(),
            "the credentials to rotate when a spike is found (on_spike = \"rotate\")",
        );
    }
    for name in rotate {
        match credentials.get(name) {
            None => p.push(
                at.clone(),
                format!("names of configured credentials; there is no `{name}`"),
            ),
            Some(c) if c.rotation.is_none() => p.push(
                at.clone(),
                format!(
                    "credentials with a [credentials.{name}.rotation] table; `{name}` has none"
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Two `[usage]` tables on the same admin credential would poll the same
/// account twice and fight over its Usage Triggers.
pub(super) fn check_accounts(p: &mut Problems, usage: &BTreeMap<String, UsageConfig>) {
    let mut by_admin: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, u) in usage {
        if let Some(first) = by_admin.insert(&u.admin_credential, name) {
            p.push(
                format!("usage.{name}.admin_credential"),
                format!(
                    "one [usage] table per account; [usage.{first}] watches `{}` already",
                    u.admin_credential
                ),
            );
        }
    }
}
