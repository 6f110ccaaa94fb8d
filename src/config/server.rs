//! `[server]`, `[defaults]` and `[twilio]`.

use super::*;

/// A `[server]` limit `key`: a count from 1 to 1,000,000.
fn count(p: &mut Problems, key: &str, raw: Option<i64>, fallback: u32) -> u32 {
    match raw {
        None => fallback,
        Some(n) if (1..=1_000_000).contains(&n) => n as u32,
        Some(n) => {
            p.push(
                format!("server.{key}"),
                format!("a number from 1 to 1000000, not {n}"),
            );
            fallback
        }
    }
}

/// `server.socket_mode`: octal text or a number, at most 0777.
fn socket_mode(p: &mut Problems, raw: Option<RawMode>) -> u32 {
    match raw {
        None => 0o660,
        Some(RawMode::Text(s)) => match u32::from_str_radix(&s, 8) {
            Ok(m) if m <= 0o777 && !s.is_empty() => m,
            _ => {
                p.push(
                    "server.socket_mode",
                    format!("an octal mode such as \"0660\", not {s:?}"),
                );
                0o660
            }
        },
        Some(RawMode::Number(n)) => match u32::try_from(n) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                p.push(
                    "server.socket_mode",
                    "an octal mode such as \"0660\" or 0o660",
                );
                0o660
            }
        },
    }
}

/// The `[server]` limits, each with its default.
fn limits(p: &mut Problems, raw: &RawServer) -> Limits {
    let defaults = Limits::default();
    Limits {
        max_connections: count(
            p,
            "max_connections",
            raw.max_connections,
            defaults.max_connections,
        ),
        max_connections_per_uid: count(
            p,
            "max_connections_per_uid",
            raw.max_connections_per_uid,
            defaults.max_connections_per_uid,
        ),
        max_streams_per_connection: count(
            p,
            "max_streams_per_connection",
            raw.max_streams_per_connection,
            defaults.max_streams_per_connection,
        ),
        max_watches_per_uid: count(
            p,
            "max_watches_per_uid",
            raw.max_watches_per_uid,
            defaults.max_watches_per_uid,
        ),
        preface_timeout: p.duration(
            "server.preface_timeout",
            raw.preface_timeout.as_deref(),
            defaults.preface_timeout,
        ),
        idle_timeout: p.duration(
            "server.idle_timeout",
            raw.idle_timeout.as_deref(),
            defaults.idle_timeout,
        ),
    }
}

/// `[server]`.
pub(super) fn server(p: &mut Problems, raw: RawServer) -> ServerConfig {
    let limits = limits(p, &raw);
    let socket_mode = socket_mode(p, raw.socket_mode);
    if socket_mode & 0o600 != 0o600 {
        p.push(
            "server.socket_mode",
            "a mode that lets the owner read and write (0600 at least)",
        );
    }
    let socket = match raw.socket.as_deref() {
        None => PathBuf::from(DEFAULT_SOCKET),
        Some("") => {
            p.push("server.socket", "a socket path");
            PathBuf::from(DEFAULT_SOCKET)
        }
        Some(s) => PathBuf::from(s),
    };
    let metrics_addr = raw.metrics_addr.as_deref().and_then(|a| {
        SocketAddr::from_str(a)
            .map_err(|_| {
                p.push(
                    "server.metrics_addr",
                    format!("an address such as \"127.0.0.1:9464\", not {a:?}"),
                )
            })
            .ok()
    });
    ServerConfig {
        socket,
        socket_mode,
        metrics_addr,
        admin: allow_list(raw.admin),
        lock_memory: raw.lock_memory.unwrap_or(true),
        allow_root: raw.allow_root.unwrap_or(false),
        allow_overflow_uid: raw.allow_overflow_uid.unwrap_or(false),
        limits,
    }
}

/// `[defaults]`: what each credential's own keys fall back to.
pub(super) struct Defaults {
    pub(super) lease_ttl: Duration,
    pub(super) refresh_interval: Duration,
    pub(super) max_stale: Duration,
}

/// `[defaults]`.
pub(super) fn defaults(p: &mut Problems, d: &RawDefaults) -> Defaults {
    let lease_ttl = p.duration(
        "defaults.lease_ttl",
        d.lease_ttl.as_deref(),
        DEFAULT_LEASE_TTL,
    );
    let refresh_interval = p.duration(
        "defaults.refresh_interval",
        d.refresh_interval.as_deref(),
        DEFAULT_REFRESH_INTERVAL,
    );
    let max_stale = p.duration(
        "defaults.max_stale",
        d.max_stale.as_deref(),
        DEFAULT_MAX_STALE,
    );
    if lease_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push("defaults.lease_ttl", "a lease of at most 24h");
    }
    Defaults {
        lease_ttl,
        refresh_interval,
        max_stale,
    }
}

/// `[twilio]`.
pub(super) fn twilio(p: &mut Problems, raw: RawTwilio) -> TwilioConfig {
    TwilioConfig {
        api_base: p.url("twilio.api_base", raw.api_base, DEFAULT_API_BASE),
        iam_base: p.url("twilio.iam_base", raw.iam_base, DEFAULT_IAM_BASE),
        accounts_base: p.url(
            "twilio.accounts_base",
            raw.accounts_base,
            DEFAULT_ACCOUNTS_BASE,
        ),
        oauth_base: p.url("twilio.oauth_base", raw.oauth_base, DEFAULT_OAUTH_BASE),
    }
}

/// `server.socket` as it will be bound (relative to the config file's
/// directory): no NUL byte, and short enough for `sun_path`.
pub(super) fn check_socket(p: &mut Problems, file: &Path, socket: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let resolved = match file.parent() {
        Some(base) if socket.is_relative() => base.join(socket),
        _ => socket.to_owned(),
    };
    let bytes = resolved.as_os_str().as_bytes();
    if bytes.contains(&0) {
        p.push("server.socket", "a path without NUL bytes");
    } else if bytes.len() > MAX_SOCKET_PATH {
        p.push(
            "server.socket",
            format!(
                "a path of at most {MAX_SOCKET_PATH} bytes (the kernel's limit for a Unix socket), not {} bytes ({})",
                bytes.len(),
                resolved.display()
            ),
        );
    }
}
