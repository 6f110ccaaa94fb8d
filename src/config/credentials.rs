//! `[credentials.NAME]`: its source (a store path, or dynamic keys), lease
//! timings, `rotation` and `access_tokens`.

use super::*;

/// The credentials an `admin_credential` may name.
pub(super) struct Admins {
    pub(super) names: Vec<String>,
    pub(super) dynamic: Vec<String>,
}

impl Admins {
    pub(super) fn of(credentials: &BTreeMap<String, RawCredential>) -> Admins {
        Admins {
            names: credentials.keys().cloned().collect(),
            dynamic: credentials
                .iter()
                .filter(|(_, c)| c.kind.as_deref() == Some(DYNAMIC_API_KEY))
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }

    /// `admin`, named at `key` by credential `me`, is another, static credential.
    pub(super) fn check(&self, p: &mut Problems, key: String, admin: &str, me: &str) {
        if admin == me {
            p.push(key, "another credential's name (not this one's)");
        } else if !self.names.iter().any(|n| n == admin) {
            p.push(
                key,
                format!("the name of a configured credential; there is no `{admin}`"),
            );
        } else if self.dynamic.iter().any(|n| n == admin) {
            p.push(
                key,
                format!("a static credential; `{admin}` is a dynamic_api_key"),
            );
        }
    }
}

/// One `[credentials.NAME]`.
pub(super) fn credential(
    p: &mut Problems,
    name: String,
    c: RawCredential,
    defaults: &Defaults,
    stores: &BTreeMap<String, StoreConfig>,
    admins: &Admins,
) -> CredentialConfig {
    let key = format!("credentials.{name}");
    check_name(p, &key, &name);
    let dynamic = c.kind.as_deref() == Some(DYNAMIC_API_KEY);
    let kind = kind(p, &key, c.kind.as_deref());
    let lease_ttl = p.duration(
        &format!("{key}.lease_ttl"),
        c.lease_ttl.as_deref(),
        defaults.lease_ttl,
    );
    let refresh_interval = p.duration(
        &format!("{key}.refresh_interval"),
        c.refresh_interval.as_deref(),
        defaults.refresh_interval,
    );
    let max_stale = p.duration(
        &format!("{key}.max_stale"),
        c.max_stale.as_deref(),
        defaults.max_stale,
    );
    if c.lease_ttl.is_some() && lease_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push(format!("{key}.lease_ttl"), "a lease of at most 24h");
    }
    let source = if dynamic {
        dynamic_source(p, &key, &name, &c, admins)
    } else {
        store_source(p, &key, &c, stores, kind)
    };
    let rotation = c.rotation.map(|r| {
        let policy = RotationLimits {
            kind,
            lease_ttl,
            refresh_interval,
        };
        rotation(p, &key, &name, r, &policy, admins)
    });
    if kind == Some(Kind::OAuthClient) && rotation.is_some() {
        p.push(
            format!("{key}.rotation"),
            "nothing for kind = \"oauth_client\": the broker does not rotate an OAuth app's secret (replace it in Twilio's Console, then in the store)",
        );
    }
    let access_tokens = c.access_tokens.map(|a| access_tokens(p, &key, a, kind));
    CredentialConfig {
        name,
        source,
        allow: allow_list(c.allow),
        lease_ttl,
        refresh_interval,
        max_stale,
        rotation: rotation.map(Box::new),
        access_tokens: access_tokens.map(Box::new),
    }
}

/// `:` separates the name in the friendly names of the keys rotation and
/// dynamic credentials create, which are matched by prefix.
/// Names are at most 256 bytes: the server refuses longer ones in
/// requests.
fn check_name(p: &mut Problems, key: &str, name: &str) {
    if name.is_empty()
        || name.len() > 256
        || name
            .chars()
            .any(|ch| ch.is_control() || ch == '/' || ch == ':')
    {
        p.push(
            key,
            "a name of at most 256 bytes without control characters, `/` or `:`",
        );
    }
}

/// `kind`: a stored kind, `None` to read it off the document; the keys of
/// a `dynamic_api_key` are API keys.
fn kind(p: &mut Problems, key: &str, raw: Option<&str>) -> Option<Kind> {
    match raw {
        None => None,
        Some(DYNAMIC_API_KEY) => Some(Kind::ApiKey),
        Some(k) => Kind::parse(k).or_else(|| {
            p.push(
                format!("{key}.kind"),
                format!(
                    "one of \"auth_token\", \"api_key\", \"oauth_client\", \"{DYNAMIC_API_KEY}\", not {k:?}"
                ),
            );
            None
        }),
    }
}

/// A `dynamic_api_key`'s source: minted at Twilio, not read from a store.
pub(super) fn dynamic_source(
    p: &mut Problems,
    key: &str,
    name: &str,
    c: &RawCredential,
    admins: &Admins,
) -> Source {
    for (field, set) in [("store", c.store.is_some()), ("path", c.path.is_some())] {
        if set {
            p.push(
                format!("{key}.{field}"),
                "nothing: a dynamic_api_key is minted at Twilio, not read from a store",
            );
        }
    }
    if c.rotation.is_some() {
        p.push(
            format!("{key}.rotation"),
            "nothing: dynamic keys expire on their own and are not rotated",
        );
    }
    let admin = c.admin_credential.clone().unwrap_or_default();
    if admin.is_empty() {
        p.push(
            format!("{key}.admin_credential"),
            "the credential that creates the keys",
        );
    } else {
        admins.check(p, format!("{key}.admin_credential"), &admin, name);
    }
    let ttl = match c.ttl.as_deref() {
        None => {
            p.push(format!("{key}.ttl"), "each key's lifetime, such as \"15m\"");
            Duration::from_secs(900)
        }
        Some(t) => p.duration(&format!("{key}.ttl"), Some(t), Duration::from_secs(900)),
    };
    let (max_live_keys, max_live_keys_per_uid) = key_caps(p, key, c);
    let policy = c.policy.clone().unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&policy) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => p.push(
            format!("{key}.policy"),
            "a Twilio restricted-key Policy as a JSON object",
        ),
    }
    Source::Dynamic(DynamicKeyConfig {
        admin_credential: admin,
        ttl,
        max_live_keys,
        max_live_keys_per_uid,
        policy,
    })
}

/// `max_live_keys` and `max_live_keys_per_uid` of a dynamic credential.
fn key_caps(p: &mut Problems, key: &str, c: &RawCredential) -> (u32, u32) {
    let max_live_keys = match c.max_live_keys {
        None => 100,
        Some(n) if (1..=100_000).contains(&n) => n as u32,
        Some(_) => {
            p.push(format!("{key}.max_live_keys"), "a number from 1 to 100000");
            100
        }
    };
    // One uid (forking new callers) may take a quarter of the keys unless
    // the config says otherwise.
    let max_live_keys_per_uid = match c.max_live_keys_per_uid {
        None => max_live_keys.div_ceil(4),
        Some(n) if n >= 1 && n <= i64::from(max_live_keys) => n as u32,
        Some(_) => {
            p.push(
                format!("{key}.max_live_keys_per_uid"),
                format!("a number from 1 to max_live_keys ({max_live_keys})"),
            );
            max_live_keys.div_ceil(4)
        }
    };
    (max_live_keys, max_live_keys_per_uid)
}

/// A stored credential's source: a path in one of the `[stores]`.
pub(super) fn store_source(
    p: &mut Problems,
    key: &str,
    c: &RawCredential,
    stores: &BTreeMap<String, StoreConfig>,
    kind: Option<Kind>,
) -> Source {
    for (field, set) in [
        ("admin_credential", c.admin_credential.is_some()),
        ("ttl", c.ttl.is_some()),
        ("max_live_keys", c.max_live_keys.is_some()),
        ("max_live_keys_per_uid", c.max_live_keys_per_uid.is_some()),
        ("policy", c.policy.is_some()),
    ] {
        if set {
            p.push(
                format!("{key}.{field}"),
                "nothing: this key is only for kind = \"dynamic_api_key\"",
            );
        }
    }
    let store = c.store.clone().unwrap_or_default();
    match stores.get(&store) {
        _ if store.is_empty() => {
            p.push(format!("{key}.store"), "the name of a [stores.NAME] table")
        }
        None => p.push(
            format!("{key}.store"),
            format!("the name of a [stores.NAME] table; there is no `{store}`"),
        ),
        Some(StoreConfig::File(_)) => {
            let path = c.path.as_deref().unwrap_or_default();
            if !path.is_empty()
                && !Path::new(path)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
            {
                p.push(
                    format!("{key}.path"),
                    "a key inside the file store (no leading `/`, no `..`)",
                );
            }
        }
        Some(_) => {}
    }
    let path = c.path.clone().unwrap_or_default();
    if path.is_empty() {
        p.push(format!("{key}.path"), "the document's path in its store");
    }
    Source::Store { store, path, kind }
}

/// What a credential's `[rotation]` is checked against.
pub(super) struct RotationLimits {
    pub(super) kind: Option<Kind>,
    pub(super) lease_ttl: Duration,
    pub(super) refresh_interval: Duration,
}

/// A credential's `[credentials.NAME.rotation]`.
pub(super) fn rotation(
    p: &mut Problems,
    key: &str,
    name: &str,
    r: RawRotation,
    limits: &RotationLimits,
    admins: &Admins,
) -> RotationConfig {
    let schedule = cron::Schedule::from_str(&r.schedule).unwrap_or_else(|e| {
        p.push(
            format!("{key}.rotation.schedule"),
            format!(
                "a cron expression with the seconds field first, such as \"0 0 3 * * Sun\" ({e})"
            ),
        );
        cron::Schedule::from_str("0 0 0 1 1 *").expect("a valid fallback")
    });
    let grace = grace(p, key, &r.grace, limits);
    if let Some(admin) = &r.admin_credential {
        admins.check(p, format!("{key}.rotation.admin_credential"), admin, name);
    } else if limits.kind == Some(Kind::ApiKey) {
        p.push(
            format!("{key}.rotation.admin_credential"),
            "the credential allowed to create and delete API keys",
        );
    }
    let validation_url = r
        .validation_url
        .unwrap_or_else(|| DEFAULT_VALIDATION_URL.to_owned());
    if let Err(why) = check_validation_url(&validation_url) {
        p.push(format!("{key}.rotation.validation_url"), why);
    }
    let propagation = propagation(p, key, r.propagation.as_deref(), grace);
    RotationConfig {
        schedule,
        grace,
        admin_credential: r.admin_credential,
        validation_url,
        propagation,
    }
}

/// `rotation.grace`. A broker may serve the old value until its next
/// refresh, and a lease issued then runs lease_ttl more: the old value must
/// stay valid that long after the switch.
fn grace(p: &mut Problems, key: &str, raw: &str, limits: &RotationLimits) -> Duration {
    let grace = p.duration(
        &format!("{key}.rotation.grace"),
        Some(raw),
        limits.lease_ttl,
    );
    let overlap = limits.lease_ttl + limits.refresh_interval;
    if grace < overlap {
        p.push(
            format!("{key}.rotation.grace"),
            format!(
                "at least lease_ttl + refresh_interval ({}), so no lease handed out on the old value outlives it",
                humantime::format_duration(overlap)
            ),
        );
    }
    grace
}

/// `rotation.propagation`: unset, 60 s, or the grace window when that is
/// shorter. The old value must outlive the wait for the new one: a grace
/// shorter than propagation can retire a value still being served when the
/// new one was slow to start working.
fn propagation(p: &mut Problems, key: &str, raw: Option<&str>, grace: Duration) -> Duration {
    let propagation = p.duration(
        &format!("{key}.rotation.propagation"),
        raw,
        DEFAULT_PROPAGATION.min(grace),
    );
    if propagation > grace {
        p.push(
            format!("{key}.rotation.propagation"),
            format!(
                "at most rotation.grace ({})",
                humantime::format_duration(grace)
            ),
        );
    }
    propagation
}

/// A credential's `[credentials.NAME.access_tokens]`.
pub(super) fn access_tokens(
    p: &mut Problems,
    key: &str,
    a: RawAccessTokens,
    kind: Option<Kind>,
) -> AccessTokenPolicy {
    if matches!(kind, Some(Kind::AuthToken | Kind::OAuthClient)) {
        p.push(
            format!("{key}.access_tokens"),
            "an API key credential: Access Tokens are signed with an API Key Secret",
        );
    }
    let max_ttl = p.duration(
        &format!("{key}.access_tokens.max_ttl"),
        a.max_ttl.as_deref(),
        Duration::from_secs(3600),
    );
    if max_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push(
            format!("{key}.access_tokens.max_ttl"),
            "at most 24h, Twilio's limit",
        );
    }
    for g in &a.grants {
        if !GRANTS.contains(&g.as_str()) {
            p.push(
                format!("{key}.access_tokens.grants"),
                format!("grants among \"voice\", \"video\", \"chat\", \"sync\", not {g:?}"),
            );
        }
    }
    AccessTokenPolicy {
        max_ttl,
        grants: a.grants,
        identity_prefix: a.identity_prefix.unwrap_or_default(),
    }
}

/// Checks `rotation.validation_url`: a Twilio REST API path on `api_base`
/// (`/2010-04-01/…` or `/vN/…`), read with GET, whose only placeholder is
/// `{account_sid}`. Hosts are not accepted: the read goes to the configured
/// `api_base`, so tests and proxies see it like every other call.
pub(super) fn check_validation_url(url: &str) -> Result<(), String> {
    let expected = "a Twilio REST API path such as \"/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1\" (a path on [twilio] api_base, starting /2010-04-01/ or /v1/)";
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut segments = path.strip_prefix('/').unwrap_or("").split('/');
    let version = segments.next().unwrap_or("");
    let dated = version.len() == 10
        && version.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    let numbered = version
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let rest: Vec<&str> = segments.collect();
    if !path.starts_with('/') || !(dated || numbered) || rest.is_empty() {
        return Err(format!("{expected}, not {url:?}"));
    }
    if rest.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(format!(
            "{expected}; empty, `.` and `..` segments are refused, not {url:?}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~%{}=&+,:".contains(c);
    if let Some(bad) = path
        .chars()
        .chain(query.chars())
        .find(|c| !allowed(*c) && *c != '/')
    {
        return Err(format!("{expected}; {bad:?} is not allowed in it"));
    }
    let without = url.replace("{account_sid}", "");
    if without.contains('{') || without.contains('}') {
        return Err(format!(
            "{expected}; the only placeholder is {{account_sid}}, not {url:?}"
        ));
    }
    Ok(())
}
