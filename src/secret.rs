//! Secret values (a leaf: imports nothing of ours).
//!
//! Every secret lives in a type that is zeroized on drop, whose `Debug` shows
//! only its length, and that has neither `Display` nor `Serialize`: the only
//! way to the bytes is `expose_secret()`, which is easy to grep for. The
//! Twilio credential model built from them is in `credential`.

use std::fmt;

use serde_json::Value;
use zeroize::Zeroizing;

/// A secret string: an Auth Token, an API Key Secret, a store token.
///
/// Equality is constant-time in the content (`subtle`): a comparison does
/// not stop at the first differing byte. Lengths may differ at once.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretString {}

impl SecretString {
    /// Takes ownership of `value` without copying it.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself. Call sites are the places a secret leaves its type.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Length in bytes: what `Debug` shows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the secret itself into a serializer: for
    /// `#[serde(serialize_with = "SecretString::serialize_exposed")]` on a
    /// request body that [`SecretBytes::json`] turns straight into bytes.
    pub fn serialize_exposed<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose_secret())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString([redacted; {} bytes])", self.0.len())
    }
}

/// JSON that may hold secrets (an API answer, a request body): no `Debug`,
/// no `Display`, so it cannot be logged or formatted by mistake. The value
/// is freed, and wiped by the zeroizing allocator, when it is dropped.
pub struct SecretJson(pub Value);

impl SecretJson {
    /// Moves the value at JSON `pointer` (`/auth/client_token`) out, leaving
    /// null; null when there is none. Never panics, whatever the answer's
    /// shape (indexing a JSON number or array mutably does).
    pub fn take_at(&mut self, pointer: &str) -> Value {
        self.0
            .pointer_mut(pointer)
            .map(Value::take)
            .unwrap_or(Value::Null)
    }
}

/// Secret bytes: a whole stored document, which holds secrets.
///
/// Equality is constant-time in the content, as for [`SecretString`].
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for SecretBytes {}

impl SecretBytes {
    /// `value` as JSON, for a request body that holds secrets: serialized
    /// straight into secret bytes, with no JSON tree in between.
    pub fn json(value: &impl serde::Serialize) -> Self {
        Self::new(serde_json::to_vec(value).expect("a request body serializes"))
    }

    /// Takes ownership of `value` without copying it.
    pub fn new(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The body of an HTTP answer (which may hold secrets), read into secret
    /// bytes and refused past `max` bytes — by its Content-Length, or as it
    /// arrives — rather than buffered whole: a hostile or broken server
    /// cannot make the daemon hold more. A body cut short reads as what
    /// arrived.
    pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Self, String> {
        let too_long = || format!("the answer is larger than {max} bytes; not read");
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_long());
        }
        let mut body = Self::new(Vec::new());
        while let Ok(Some(chunk)) = response.chunk().await {
            if body.0.len() + chunk.len() > max {
                return Err(too_long());
            }
            // Grown in place when it fits; a reallocation leaves the old
            // buffer to the zeroizing allocator.
            body.0.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The bytes themselves.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes: what `Debug` shows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";

    #[test]
    fn debug_shows_only_length() {
        let s = SecretString::new(TOKEN.to_owned());
        let shown = format!("{s:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("32 bytes"));
        let b = SecretBytes::new(TOKEN.as_bytes().to_vec());
        assert!(!format!("{b:?}").contains(TOKEN));
    }

    #[test]
    fn secret_equality_compares_content() {
        let s = |v: &str| SecretString::new(v.to_owned());
        assert_eq!(s("abcd"), s("abcd"));
        assert_ne!(s("abcd"), s("abce"));
        assert_ne!(s("abcd"), s("abc"));
        let b = |v: &[u8]| SecretBytes::new(v.to_vec());
        assert_eq!(b(b"xy"), b(b"xy"));
        assert_ne!(b(b"xy"), b(b"xz"));
    }
}
