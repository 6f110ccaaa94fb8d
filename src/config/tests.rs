//! The config's tests; each case's TOML is a file under
//! `tests/fixtures/config/`, named for the case.

use super::*;

/// The fixture `name`.toml.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("test.toml"), text)
}

/// Parses fixture `name` as `test.toml`.
fn parse_fixture(name: &str) -> Result<Config, ConfigError> {
    parse_str(&fixture(name))
}

#[test]
fn defaults_apply() {
    let c = parse_fixture("minimal").unwrap();
    assert_eq!(c.server.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(c.server.socket_mode, 0o660);
    assert!(c.server.lock_memory);
    assert!(!c.server.allow_root);
    let v = &c.credentials["verify"];
    assert_eq!(v.lease_ttl, DEFAULT_LEASE_TTL);
    assert_eq!(v.refresh_interval, DEFAULT_REFRESH_INTERVAL);
    assert_eq!(v.max_stale, DEFAULT_MAX_STALE);
    assert_eq!(c.twilio.api_base, DEFAULT_API_BASE);
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let msg = parse_fixture("unknown_key").unwrap_err().to_string();
    assert!(msg.starts_with("test.toml: credentials.verify"), "{msg}");
    assert!(msg.contains("alow"), "{msg}");
}

#[test]
fn every_problem_is_reported() {
    let ConfigError::Invalid { problems, .. } = parse_fixture("every_problem").unwrap_err() else {
        panic!("expected Invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "server.socket_mode",
        "defaults.lease_ttl",
        "credentials.a.store",
        "credentials.b.path",
        "credentials.b.rotation.schedule",
        "credentials.b.rotation.grace",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn validation_url_and_propagation_are_checked() {
    let rotation = fixture("rotation");
    let c = parse_str(&rotation).unwrap();
    let r = c.credentials["verify"].rotation.clone().unwrap();
    assert_eq!(r.validation_url, DEFAULT_VALIDATION_URL);
    assert_eq!(r.propagation, Duration::from_secs(60));
    let short = parse_fixture("rotation_short_grace").unwrap();
    assert_eq!(
        short.credentials["verify"]
            .rotation
            .as_ref()
            .unwrap()
            .propagation,
        Duration::from_secs(30),
        "unset, propagation is capped at grace"
    );
    for bad in [
        "https://api.twilio.com/2010-04-01/Accounts.json",
        "2010-04-01/Accounts.json",
        "/Accounts/{account_sid}.json",
        "/2010-04-01/",
        "/2010-04-01/Accounts/../Keys.json",
        "/2010-04-01/Accounts/{sid}/Calls.json",
        "/2010-04-01/Accounts/{account_sid}/Calls.json#x",
        "/v1/Services list",
    ] {
        let text = format!("{rotation}validation_url = {bad:?}\n");
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("`credentials.verify.rotation.validation_url`: a Twilio REST API path"),
            "{bad}: {e}"
        );
    }
    for good in [
        "/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1",
        "/v1/Services?PageSize=1",
    ] {
        let text = format!("{rotation}validation_url = {good:?}\n");
        let c = parse_str(&text).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(
            c.credentials["verify"]
                .rotation
                .as_ref()
                .unwrap()
                .validation_url,
            good
        );
    }
    let long = format!("{rotation}propagation = \"5m\"\n");
    let e = parse_str(&long).unwrap_err().to_string();
    assert!(
        e.contains("`credentials.verify.rotation.propagation`: at most rotation.grace (2m)"),
        "{e}"
    );
}

#[test]
fn grace_must_cover_lease() {
    let e = parse_fixture("grace_below_lease").unwrap_err().to_string();
    assert!(e.contains("credentials.verify.rotation.grace"), "{e}");
    let c = parse_fixture("grace_above_lease").unwrap();
    assert_eq!(
        c.credentials["verify"].rotation.as_ref().unwrap().grace,
        Duration::from_secs(3600)
    );
}

#[test]
fn dynamic_keys_are_checked() {
    let c = parse_fixture("dynamic").unwrap();
    assert!(matches!(c.credentials["dyn"].source, Source::Dynamic(_)));
    assert!(
        parse_fixture("dynamic_unknown_admin")
            .unwrap_err()
            .to_string()
            .contains("there is no `nobody`")
    );
}

#[test]
fn vault_and_cloud_stores_parse() {
    let c = parse_fixture("vault_and_cloud").unwrap();
    match &c.stores["vault"] {
        StoreConfig::Vault(VaultConfig {
            mount,
            kv_version,
            auth,
            ..
        }) => {
            assert_eq!(mount, "secret");
            assert_eq!(*kv_version, 2);
            assert!(matches!(auth, VaultAuth::Kubernetes { mount, .. } if mount == "kubernetes"));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.stores.contains_key("aws") && c.stores.contains_key("gcp"));
    let e = parse_fixture("vault_unknown_auth").unwrap_err().to_string();
    assert!(
        e.contains("stores.vault") && e.contains("unknown variant `ldap`"),
        "{e}"
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let c = parse(
        Path::new("/etc/credbroker/config.toml"),
        &fixture("relative_paths"),
    )
    .unwrap();
    assert_eq!(
        c.stores["local"],
        StoreConfig::File(FileConfig {
            path: "/etc/credbroker/secrets.json".into()
        })
    );
}

#[test]
fn allow_list_defaults_to_own_uid() {
    let empty = AllowList::default();
    assert!(empty.permits(1000, 1000, 1000));
    assert!(!empty.permits(1001, 1000, 1000));
    let by_gid = AllowList {
        uids: vec![],
        gids: vec![50],
    };
    assert!(by_gid.permits(7, 50, 0));
    assert!(!by_gid.permits(7, 51, 0));
}

#[test]
fn durations_are_bounded() {
    let ConfigError::Invalid { problems, .. } = parse_fixture("durations_too_long").unwrap_err()
    else {
        panic!("expected Invalid");
    };
    for key in [
        "defaults.refresh_interval",
        "defaults.max_stale",
        "credentials.verify.rotation.grace",
    ] {
        let p = problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{key} missing from {problems:?}"));
        assert!(p.expected.contains("at most 365 days"), "{p}");
    }
}

#[test]
fn socket_path_fits_sun_path() {
    let e = parse_fixture("socket_path_too_long")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`server.socket`: a path of at most 107 bytes"),
        "{e}"
    );
    let nul = fixture("minimal").replace(
        "[stores.local]",
        "[server]\nsocket = \"/run/a\\u0000b.sock\"\n[stores.local]",
    );
    let e = parse_str(&nul).unwrap_err().to_string();
    assert!(
        e.contains("`server.socket`: a path without NUL bytes"),
        "{e}"
    );
    // Relative paths are measured once resolved against the config's directory.
    let deep = format!("/{}/config.toml", "d".repeat(100));
    let e = parse(
        Path::new(&deep),
        &fixture("minimal").replace(
            "[stores.local]",
            "[server]\nsocket = \"broker.sock\"\n[stores.local]",
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a path of at most 107 bytes"), "{e}");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `minimal` with `max_stale` set to `value`.
    fn with_max_stale(value: &str) -> Result<Config, ConfigError> {
        parse_str(&format!("{}max_stale = {value:?}\n", fixture("minimal")))
    }

    proptest! {
        /// Any number of seconds is accepted exactly when it is between 1 s
        /// and 365 days, and then read as exactly that; above, the error says
        /// the bound.
        #[test]
        fn durations_are_read_exactly_within_the_bound(secs in any::<u64>()) {
            let parsed = with_max_stale(&format!("{secs}s"));
            let bound = MAX_DURATION.as_secs();
            if (1..=bound).contains(&secs) {
                let c = parsed.unwrap();
                prop_assert_eq!(c.credentials["verify"].max_stale, Duration::from_secs(secs));
            } else {
                let e = parsed.unwrap_err().to_string();
                prop_assert!(e.contains("credentials.verify.max_stale"), "{}", e);
                if secs > bound {
                    prop_assert!(e.contains("at most 365 days"), "{}", e);
                }
            }
        }

        /// Any duration up to the bound, to the nanosecond, written as
        /// humantime writes it (the form errors quote: "1month 2days 3ms"),
        /// is read back as exactly itself; any above it is refused.
        #[test]
        fn written_durations_round_trip_up_to_the_bound(nanos in 1u128..=2 * MAX_DURATION.as_nanos()) {
            let d = Duration::from_nanos(u64::try_from(nanos).unwrap());
            let written = humantime::format_duration(d).to_string();
            match with_max_stale(&written) {
                Ok(c) => {
                    prop_assert!(d <= MAX_DURATION, "{} accepted", written);
                    prop_assert_eq!(c.credentials["verify"].max_stale, d);
                }
                Err(e) => {
                    prop_assert!(d > MAX_DURATION, "{} refused: {}", written, e);
                    prop_assert!(e.to_string().contains("at most 365 days"), "{}", e);
                }
            }
        }

        /// humantime's units and sums are read as their seconds.
        #[test]
        fn duration_units_add_up(d in 0u64..300, h in 0u64..24, m in 0u64..60, s in 1u64..60) {
            let c = with_max_stale(&format!("{d}d {h}h {m}m {s}s")).unwrap();
            prop_assert_eq!(
                c.credentials["verify"].max_stale,
                Duration::from_secs(((d * 24 + h) * 60 + m) * 60 + s)
            );
        }
    }
}

#[test]
fn usage_tables_parse_with_their_defaults() {
    let c = parse_fixture("usage").unwrap();
    let u = &c.usage["main"];
    assert_eq!(u.admin_credential, "twilio-admin");
    assert_eq!(u.categories, ["sms", "verify-voice-and-sms"]);
    assert_eq!(u.poll_interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(u.window, DEFAULT_USAGE_WINDOW);
    assert_eq!(u.factor, DEFAULT_FACTOR);
    assert_eq!(u.baseline, DEFAULT_BASELINE);
    assert_eq!(u.max_per_window, Some(5000));
    assert_eq!(u.on_spike, OnSpike::Rotate);
    assert_eq!(u.rotate, ["twilio-verify"]);
    assert_eq!(u.trigger_value, Some(20000));
    assert_eq!(
        u.trigger_url.as_deref(),
        Some("https://app.example/twilio/usage-trigger")
    );
}

#[test]
fn usage_problems_are_all_reported() {
    let ConfigError::Invalid { problems, .. } = parse_fixture("usage_every_problem").unwrap_err()
    else {
        panic!("expected Invalid");
    };
    let said = |key: &str, words: &str| {
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.expected.contains(words)),
            "no problem at `{key}` saying {words:?} in {problems:#?}"
        );
    };
    said("usage.bad name", "letters, digits");
    said("usage.bad name.admin_credential", "there is no `nobody`");
    said("usage.bad name.categories", "1 to 20");
    said("usage.bad name.window", "at least poll_interval");
    said("usage.bad name.factor", "greater than 1");
    said("usage.bad name.baseline", "from 1 to 1000");
    said("usage.bad name.max_per_window", "a positive count");
    said("usage.bad name.on_spike", "\"panic\"");
    said("usage.second.categories", "listed twice");
    said("usage.second.categories", "\"SMS!\"");
    said("usage.second.poll_interval", "at most 10000 polls");
    said("usage.second.rotate", "has none");
    said("usage.second.rotate", "there is no `ghost`");
    said("usage.second.trigger_url", "http:// or https://");
    said("usage.second.trigger_url", "metrics_addr");
    said("usage.second.trigger_value", "a daily figure");
    said("usage.third.rotate", "unless on_spike = \"rotate\"");
    said(
        "usage.third.admin_credential",
        "one [usage] table per account",
    );
}
