//! Twilio webhook signatures: the `X-Twilio-Signature` check behind
//! `ValidateWebhook`.
//!
//! Twilio signs every webhook with HMAC-SHA1 keyed by the account's Auth
//! Token, so a workload that cannot hold the token asks us instead. The
//! signed string is the full URL Twilio called followed by the form
//! parameters, sorted, each name immediately followed by its value; the
//! header is that MAC in base64. A JSON webhook instead carries
//! `bodySHA256=<hex SHA-256 of the raw body>` in its query string: then the
//! signature covers the URL alone and the hash binds the body.
//!
//! We follow the official twilio-python `RequestValidator` (9.x) wherever the
//! docs leave room, because that is what Twilio's own users run and test
//! against:
//! - repeated keys: the distinct `(name, value)` pairs in code-point order
//!   (names sorted, and each name's distinct values sorted; an exact
//!   duplicate pair counts once);
//! - ports: Twilio's signer is inconsistent about the port, so the URL is
//!   tried as given and with its port changed: an explicit port (any
//!   port, not only the default) removed, or the scheme's default (`:443`
//!   for https, `:80` otherwise) added when there is none.
//!
//! Every comparison is constant-time, and nothing here logs: the token only
//! ever reaches the MAC.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use crate::secret::SecretString;

/// The query parameter that marks a JSON webhook and carries its body hash.
pub const BODY_HASH_PARAM: &str = "bodySHA256";

/// One webhook delivery as the workload received it.
///
/// Holds nothing secret (the signature travels in a header Twilio sends in
/// the clear), so it may be printed.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The full URL Twilio called, query string included, exactly as
    /// configured in Twilio (scheme, host, percent-encoding untouched).
    pub url: &'a str,
    /// The form POST parameters, repeats allowed, in any order. Empty for a
    /// JSON webhook.
    pub params: &'a [(String, String)],
    /// The raw body. Read only for a JSON webhook (a URL with
    /// `bodySHA256`); a form body is given through `params` instead.
    pub body: &'a [u8],
    /// The `X-Twilio-Signature` header.
    pub signature: &'a str,
}

/// Whether `req` was signed by Twilio with `auth_token`.
///
/// A form webhook passes when the signature matches the URL (as given, or
/// with its port changed as described in the module docs) plus the
/// parameters. A JSON webhook (its URL's query has a non-empty
/// `bodySHA256`) passes when the body's hex SHA-256 equals that value and
/// the signature matches the URL alone. A JSON webhook that also comes with
/// form parameters is refused, and so is a form webhook (no `bodySHA256`)
/// that comes with a body: Twilio never sends both, and the extra part
/// would not be covered by anything.
///
/// All candidates are computed and compared before deciding, so the time
/// taken does not say which one (or which part) failed.
pub fn validate(auth_token: &SecretString, req: &WebhookRequest<'_>) -> bool {
    let (params, body_ok): (&[(String, String)], Choice) = match body_hash_param(req.url) {
        Some(expected) => {
            if !req.params.is_empty() {
                return false;
            }
            let actual = hex::encode(Sha256::digest(req.body));
            (&[], ct_eq(actual.as_bytes(), &expected))
        }
        None if !req.body.is_empty() => return false,
        None => (req.params, Choice::from(1)),
    };
    let mut signature_ok = Choice::from(0);
    for url in url_candidates(req.url) {
        let expected = signature(auth_token, &url, params);
        signature_ok |= ct_eq(expected.as_bytes(), req.signature.as_bytes());
    }
    (body_ok & signature_ok).into()
}

/// The `X-Twilio-Signature` Twilio sends for a POST of `params` to `url`:
/// base64 of HMAC-SHA1(Auth Token, url + sorted params). No port variants
/// are tried here. For a JSON webhook pass the URL with its `bodySHA256`
/// and no parameters.
///
/// Public so that tests and the Twilio fake can sign requests the same way.
pub fn signature(auth_token: &SecretString, url: &str, params: &[(String, String)]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.expose_secret().as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted_distinct(params) {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The parameters in signing order: distinct pairs, sorted by name, then
/// value. twilio-python computes `sorted(set(names))`, then for each name
/// `sorted(set(values))`; that is exactly this. Rust orders `str` by its
/// UTF-8 bytes, which is code-point order, as Python orders `str`.
fn sorted_distinct(params: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Equality that does not stop at the first differing byte. Lengths are
/// public (a base64 SHA-1 is always 28 characters), so a length mismatch
/// may answer at once.
fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
    #[cfg(test)]
    tests::CT_EQ_CALLS.with(|calls| calls.set(calls.get() + 1));
    a.ct_eq(b)
}

/// The URLs whose signature is accepted: the URL as given, then the same
/// URL with its port removed (when it has a valid non-zero one) or the
/// scheme's default port added (when it has none), as twilio-python's
/// `remove_port` and `add_port` do.
///
/// Differences from twilio-python, which rebuilds both variants with
/// `urlparse(...).geturl()`: we never normalise the URL (Python lowercases
/// the scheme, drops an empty `?`, `#` or `;`, and strips surrounding
/// whitespace and every tab, CR and LF), we remove a port without
/// also cutting `user:password@` or an IPv6 host (Python keeps only the text
/// before the first `:`), and a URL whose port is not a number is tried only
/// as given (Python raises).
fn url_candidates(url: &str) -> Vec<String> {
    let mut candidates = vec![url.to_owned()];
    let Some((scheme, start, end)) = authority(url) else {
        return candidates;
    };
    let host_start = url[start..end]
        .rfind('@')
        .map_or(start, |at| start + at + 1);
    let host_and_port = &url[host_start..end];
    // Python: `hostinfo.partition(':')`, or after `]` for a bracketed host.
    let port_colon = match host_and_port.find('[') {
        Some(open) => host_and_port[open..].find(']').and_then(|close| {
            host_and_port[open + close..]
                .find(':')
                .map(|c| open + close + c)
        }),
        None => host_and_port.find(':'),
    };
    let port = port_colon.map_or("", |c| &host_and_port[c + 1..]);
    let number = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten();
    match number {
        // No port: add the scheme's default. Python's `if not uri.port`
        // treats an empty port and port 0 the same way.
        _ if port.is_empty() => candidates.push(with_default_port(url, scheme, end)),
        Some(0) => candidates.push(with_default_port(url, scheme, end)),
        Some(_) => {
            let colon = host_start + port_colon.expect("a port follows a colon");
            candidates.push(format!("{}{}", &url[..colon], &url[end..]));
        }
        // Not a port number: twilio-python raises; we try the URL as given only.
        None => {}
    }
    candidates
}

/// `url` with `:443` (https) or `:80` (anything else) inserted at `end`,
/// the end of its authority.
fn with_default_port(url: &str, scheme: &str, end: usize) -> String {
    let port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    format!("{}{port}{}", &url[..end], &url[end..])
}

/// The scheme and the byte range of the authority (`user@host:port`), for a
/// URL of the form `scheme://authority...`, split as Python's `urlsplit`
/// does: the scheme is a letter followed by letters, digits, `+`, `-` or
/// `.`; the authority runs to the first `/`, `?` or `#`.
fn authority(url: &str) -> Option<(&str, usize, usize)> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let mut chars = scheme.bytes();
    let first_ok = chars.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !first_ok || !chars.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return None;
    }
    if !url[colon + 1..].starts_with("//") {
        return None;
    }
    let start = colon + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    Some((scheme, start, end))
}

/// The first non-empty `bodySHA256` value of the URL's query, decoded, as
/// twilio-python reads it with `parse_qs(urlparse(url).query)`: the query
/// runs from the first `?` to the first `#`, fields split on `&`, a field
/// without `=` or with an empty value is skipped, and names and values are
/// form-decoded (`+` is a space, `%XX` a byte).
fn body_hash_param(url: &str) -> Option<Vec<u8>> {
    let without_fragment = url.split('#').next().unwrap_or(url);
    let (_, query) = without_fragment.split_once('?')?;
    query.split('&').find_map(|field| {
        let (name, value) = field.split_once('=')?;
        (!value.is_empty() && form_decode(name) == BODY_HASH_PARAM.as_bytes())
            .then(|| form_decode(value))
    })
}

/// `application/x-www-form-urlencoded` decoding as Python's `unquote_plus`
/// does it, to bytes: a `%` not followed by two hex digits stays literal.
fn form_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i..] {
            [b'%', high, low, ..] => hex_pair(high, low),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// How many constant-time comparisons this thread made.
        pub(super) static CT_EQ_CALLS: Cell<usize> = const { Cell::new(0) };
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn token(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    fn valid(token_: &str, url: &str, params: &[(String, String)], sig: &str) -> bool {
        validate(
            &token(token_),
            &WebhookRequest {
                url,
                params,
                body: b"",
                signature: sig,
            },
        )
    }

    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The example on Twilio's security page (docs/usage/security).
    fn docs_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ])
    }

    /// twilio-python's tests/unit/test_request_validator.py.
    fn python_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    #[test]
    fn twilio_docs_example() {
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert_eq!(signature(&token("12345"), DOCS_URL, &docs_params()), sig);
        assert!(valid("12345", DOCS_URL, &docs_params(), sig));
        // Parameter order as received does not matter.
        let mut reversed = docs_params();
        reversed.reverse();
        assert!(valid("12345", DOCS_URL, &reversed, sig));
    }

    #[test]
    fn twilio_python_vectors() {
        let params = python_params();
        assert_eq!(
            signature(&token("12345"), DOCS_URL, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(valid(
            "12345",
            DOCS_URL,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_keys_sort_values_and_count_duplicates_once() {
        // twilio-python's MultiDict / QueryDict vector.
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        let expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
        assert_eq!(signature(&token("12345"), DOCS_URL, &params), expected);
        // An exact duplicate pair adds nothing (Python signs a set).
        let mut doubled = params.clone();
        doubled.push(("Digits".into(), "5678".into()));
        assert_eq!(signature(&token("12345"), DOCS_URL, &doubled), expected);
        // Each value is appended after its own copy of the name.
        let by_hand = {
            let mut mac = Hmac::<Sha1>::new_from_slice(b"12345").unwrap();
            mac.update(format!("{DOCS_URL}Digits1234Digits5678SidCA123SidAccountAC123").as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        };
        assert_eq!(by_hand, expected);
        // A repeated key's values are not interchangeable with another key's.
        let swapped = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "12345"),
        ]);
        assert!(!valid("12345", DOCS_URL, &swapped, expected));
    }

    #[test]
    fn sorting_is_case_sensitive_code_point_order() {
        let params = p(&[("b", "1"), ("B", "2"), ("é", "3"), ("a", "4"), ("z", "")]);
        let mut mac = Hmac::<Sha1>::new_from_slice(b"t").unwrap();
        mac.update("https://x/B2a4b1zé3".as_bytes());
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature(&token("t"), "https://x/", &params), expected);
    }

    #[test]
    fn port_variants_as_twilio_python() {
        let params = python_params();
        let t = "12345";
        // Signed without a port, received with a non-default one: removed.
        let with_1234 = DOCS_URL.replace(".com", ".com:1234");
        assert!(valid(
            t,
            &with_1234,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Signed and received with a port (http, :1234).
        let http_1234 = with_1234.replace("https", "http");
        assert!(valid(
            t,
            &http_1234,
            &params,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        // Signed with :443, received without: added.
        assert!(valid(t, DOCS_URL, &params, "kvajT1Ptam85bY51eRf/AJRuM3w="));
        // Signed with :80, received over http without a port: added.
        let http = DOCS_URL.replace("https", "http");
        assert!(valid(t, &http, &params, "0ZXoZLH/DfblKGATFgpif+LLRf4="));
        // But a port is never swapped for another one.
        let with_443 = DOCS_URL.replace(".com", ".com:443");
        let sig_443 = signature(&token(t), &with_443, &params);
        assert!(valid(t, DOCS_URL, &params, &sig_443));
        let with_8443 = DOCS_URL.replace(".com", ".com:8443");
        assert!(!valid(t, &with_8443, &params, &sig_443));
        // :80 is not the default for https.
        let with_80 = DOCS_URL.replace(".com", ".com:80");
        let sig_80 = signature(&token(t), &with_80, &params);
        assert!(!valid(t, DOCS_URL, &params, &sig_80));
    }

    #[test]
    fn url_candidates_cover_userinfo_ipv6_and_odd_ports() {
        assert_eq!(
            url_candidates("https://u:p@h.example:8443/x?a=b"),
            [
                "https://u:p@h.example:8443/x?a=b",
                "https://u:p@h.example/x?a=b"
            ]
        );
        assert_eq!(
            url_candidates("HTTPS://user@h.example?q#f"),
            [
                "HTTPS://user@h.example?q#f",
                "HTTPS://user@h.example:443?q#f"
            ]
        );
        assert_eq!(
            url_candidates("http://[::1]:8080/x"),
            ["http://[::1]:8080/x", "http://[::1]/x"]
        );
        assert_eq!(
            url_candidates("http://[::1]/x"),
            ["http://[::1]/x", "http://[::1]:80/x"]
        );
        // Not a number, or out of range: as given only.
        assert_eq!(url_candidates("https://h:abc/x"), ["https://h:abc/x"]);
        assert_eq!(url_candidates("https://h:65536/x"), ["https://h:65536/x"]);
        // Port 0 and an empty port count as none, as in Python.
        assert_eq!(
            url_candidates("https://h:0/x"),
            ["https://h:0/x", "https://h:0:443/x"]
        );
        assert_eq!(
            url_candidates("https://h:/x"),
            ["https://h:/x", "https://h::443/x"]
        );
        // No authority: nothing to vary.
        assert_eq!(url_candidates("urn:x:y"), ["urn:x:y"]);
        assert_eq!(url_candidates(""), [""]);
    }

    fn valid_json(t: &str, url: &str, body: &[u8], params: &[(String, String)], sig: &str) -> bool {
        validate(
            &token(t),
            &WebhookRequest {
                url,
                params,
                body,
                signature: sig,
            },
        )
    }

    #[test]
    fn json_body_sha256() {
        // twilio-python's body vector.
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(hex::encode(Sha256::digest(body)), hash);
        let url = format!("{DOCS_URL}&bodySHA256={hash}");
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(signature(&token("12345"), &url, &[]), sig);
        assert!(valid_json("12345", &url, body, &[], sig));
        // The body is bound by the hash.
        let other = br#"{"property": "value", "boolean": false}"#;
        assert!(!valid_json("12345", &url, other, &[], sig));
        assert!(!valid_json("12345", &url, b"", &[], sig));
        // Form parameters next to a JSON body are refused.
        assert!(!valid_json("12345", &url, body, &p(&[("a", "b")]), sig));
        // Port variants apply to JSON webhooks too.
        let with_port = url.replace(".com", ".com:443");
        let sig_port = signature(&token("12345"), &with_port, &[]);
        assert!(valid_json("12345", &url, body, &[], &sig_port));
        // The hash value may be percent-encoded, as parse_qs decodes it.
        let encoded = url.replace("bodySHA256=0a", "bodySHA256=%30a");
        let sig_encoded = signature(&token("12345"), &encoded, &[]);
        assert!(valid_json("12345", &encoded, body, &[], &sig_encoded));
        // Upper-case hex is not what Twilio sends, and Python compares exactly.
        let upper = url.replace(hash, &hash.to_uppercase());
        let sig_upper = signature(&token("12345"), &upper, &[]);
        assert!(!valid_json("12345", &upper, body, &[], &sig_upper));
        // Without bodySHA256 it is a form webhook: with the form's
        // parameters and no body it passes; a body nothing covers is refused.
        assert!(valid_json(
            "12345",
            DOCS_URL,
            b"",
            &python_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!valid_json(
            "12345",
            DOCS_URL,
            b"uncovered",
            &python_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn body_hash_param_parsing() {
        let h = |u: &str| body_hash_param(u).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(h("https://x/?bodySHA256=ab"), Some("ab".into()));
        assert_eq!(
            h("https://x/?a=1&bodySHA256=ab&bodySHA256=cd"),
            Some("ab".into())
        );
        assert_eq!(h("https://x/?bodySHA256=&bodySHA256=cd"), Some("cd".into()));
        assert_eq!(h("https://x/?body%53HA256=a+b%2"), Some("a b%2".into()));
        assert_eq!(h("https://x/?bodySHA256"), None);
        assert_eq!(h("https://x/?bodysha256=ab"), None);
        assert_eq!(h("https://x/#?bodySHA256=ab"), None);
        assert_eq!(h("https://x/?a=b#bodySHA256=ab"), None);
        assert_eq!(h("https://x/bodySHA256=ab"), None);
    }

    #[test]
    fn tampering_is_rejected() {
        let t = "12345";
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let params = docs_params();
        // Changed value, added, removed, renamed parameter.
        let mut changed = params.clone();
        changed[2].1 = "1235".into();
        assert!(!valid(t, DOCS_URL, &changed, sig));
        let mut added = params.clone();
        added.push(("Extra".into(), String::new()));
        assert!(!valid(t, DOCS_URL, &added, sig));
        assert!(!valid(t, DOCS_URL, &params[1..], sig));
        let mut renamed = params.clone();
        renamed[0].0 = "callSid".into();
        assert!(!valid(t, DOCS_URL, &renamed, sig));
        // Moving text between a name and its value changes nothing in the
        // signed string, as in every Twilio library: document, don't hide.
        let mut shifted = params.clone();
        shifted[2] = ("Digits1".into(), "234".into());
        assert!(valid(t, DOCS_URL, &shifted, sig));
        // URL: path, query, scheme, host.
        for url in [
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            "https://mycompany.com/myapp.php?bar=2&foo=1",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "https://mycompany.org/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php?foo=1&bar=2&",
        ] {
            assert!(!valid(t, url, &params, sig), "{url}");
        }
        // Wrong token, wrong or damaged signature.
        assert!(!valid("12346", DOCS_URL, &params, sig));
        assert!(!valid(t, DOCS_URL, &params, ""));
        assert!(!valid(t, DOCS_URL, &params, &sig[..27]));
        assert!(!valid(t, DOCS_URL, &params, &format!("{sig} ")));
        assert!(!valid(t, DOCS_URL, &params, &sig.to_lowercase()));
    }

    #[test]
    fn every_candidate_goes_through_the_constant_time_comparison() {
        let before = CT_EQ_CALLS.with(Cell::get);
        assert!(valid(
            "12345",
            DOCS_URL,
            &docs_params(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        // Two URL candidates, both compared even though the first matched.
        assert_eq!(CT_EQ_CALLS.with(Cell::get) - before, 2);
        let before = CT_EQ_CALLS.with(Cell::get);
        assert!(!valid(
            "12345",
            DOCS_URL,
            &docs_params(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        ));
        assert_eq!(CT_EQ_CALLS.with(Cell::get) - before, 2);
        // JSON: the body hash as well.
        let url = format!(
            "https://x.example/h?bodySHA256={}",
            hex::encode(Sha256::digest(b"{}"))
        );
        let before = CT_EQ_CALLS.with(Cell::get);
        let sig = signature(&token("t"), &url, &[]);
        assert!(validate(
            &token("t"),
            &WebhookRequest {
                url: &url,
                params: &[],
                body: b"{}",
                signature: &sig
            }
        ));
        assert_eq!(CT_EQ_CALLS.with(Cell::get) - before, 3);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let secret = "f00dfeedf00dfeedf00dfeedf00dfeed";
        let t = token(secret);
        let params = docs_params();
        let req = WebhookRequest {
            url: DOCS_URL,
            params: &params,
            body: b"",
            signature: "x",
        };
        let shown = format!("{t:?} {req:?}");
        assert!(!shown.contains(secret), "{shown}");
        // And the token is not recoverable from the signature text.
        assert!(!signature(&t, DOCS_URL, &params).contains(secret));
    }

    #[test]
    fn arbitrary_urls_never_panic() {
        let seeds = [
            "",
            ":",
            "://",
            "a://",
            "a://[",
            "a://[::1",
            "a://@",
            "a://@:",
            "é://x:1",
            "https://é:1/é?é=é#é",
            "https://x?%",
            "https://x?bodySHA256=%",
            "https://x?bodySHA256=%e",
            "https://x:99999999999999999999/",
            "https://[::1]]:1/",
        ];
        for url in seeds {
            for cut in 0..=url.len() {
                if let Some(prefix) = url.get(..cut) {
                    let _ = url_candidates(prefix);
                    let _ = body_hash_param(prefix);
                    let _ = valid("t", prefix, &[], "x");
                }
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const URL: &str = "https://example.com/sms?x=1";

        fn params() -> impl Strategy<Value = Vec<(String, String)>> {
            proptest::collection::vec(("[A-Za-z]{1,8}", "\\PC{0,12}"), 0..8)
        }

        proptest! {
            /// The signature is over the distinct pairs in canonical order:
            /// any order of the parameters, or a pair repeated, signs the
            /// same, and a request so signed passes.
            #[test]
            fn order_and_repeats_do_not_change_the_signature(
                params in params(),
                seed in any::<u64>(),
            ) {
                let t = token("0123456789abcdef0123456789abcdef");
                let signed = signature(&t, URL, &params);
                let mut shuffled = params.clone();
                // A deterministic shuffle from the seed.
                let mut state = seed;
                for i in (1..shuffled.len()).rev() {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (state >> 33) as usize % (i + 1));
                }
                if let Some(first) = params.first() {
                    shuffled.push(first.clone());
                }
                prop_assert_eq!(&signature(&t, URL, &shuffled), &signed);
                let req = WebhookRequest { url: URL, params: &shuffled, body: &[], signature: &signed };
                prop_assert!(validate(&t, &req));
            }

            /// Changing any value, or adding a pair, fails the check.
            #[test]
            fn a_changed_parameter_fails(params in params(), extra in "[a-z]{1,8}", at in any::<prop::sample::Index>()) {
                let t = token("0123456789abcdef0123456789abcdef");
                let signed = signature(&t, URL, &params);
                let mut changed = params.clone();
                if changed.is_empty() {
                    changed.push((extra.clone(), extra));
                } else {
                    let i = at.index(changed.len());
                    // A value that no other pair with this name has.
                    let name = changed[i].0.clone();
                    let taken: Vec<String> = changed.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect();
                    let mut value = format!("{}{extra}", changed[i].1);
                    while taken.contains(&value) {
                        value.push('z');
                    }
                    changed[i].1 = value;
                }
                let req = WebhookRequest { url: URL, params: &changed, body: &[], signature: &signed };
                prop_assert!(!validate(&t, &req));
            }
        }
    }
}
