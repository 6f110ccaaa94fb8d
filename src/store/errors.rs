//! The one mapping from a store's failure to a [`StoreError`]: each backend
//! says what its service's answer means (its own codes first, the HTTP
//! status when that is all there is), as a [`Class`]; [`Class::error`] builds
//! the error, with the same shape of message for every store.

use super::StoreError;

/// What a failed store call means for the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Nothing at that path: the credential is unavailable at once.
    NotFound,
    /// The store refused us (401/403, an expired token): served stale
    /// until `max_stale`, since that may pass; fails a start.
    Denied,
    /// An outage, a timeout, throttling, a server error: served stale, and
    /// retried at start.
    Transient,
    /// Anything else the store refused: served stale like a refusal;
    /// fails a start.
    Rejected,
}

impl Class {
    /// The meaning of an HTTP status alone (no service-specific code).
    /// Vault's 412 (a performance standby not yet consistent) passes too.
    pub(crate) fn of_http(status: u16) -> Class {
        match status {
            404 => Class::NotFound,
            401 | 403 => Class::Denied,
            408 | 412 | 429 | 500..=599 => Class::Transient,
            _ => Class::Rejected,
        }
    }

    /// The error for `path` of `store`; `detail` says what was done and
    /// what the service answered, never a secret.
    pub(crate) fn error(self, store: &str, path: &str, detail: String) -> StoreError {
        let (store, path) = (store.to_owned(), path.to_owned());
        match self {
            Class::NotFound => StoreError::NotFound {
                store,
                path,
                detail: format!(" ({detail})"),
            },
            Class::Denied => StoreError::PermissionDenied {
                store,
                path,
                detail: format!(" ({detail})"),
            },
            Class::Transient => StoreError::Unavailable {
                store,
                path,
                detail,
            },
            Class::Rejected => StoreError::Rejected {
                store,
                path,
                detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_and_the_errors_they_make() {
        for (status, class) in [
            (404, Class::NotFound),
            (401, Class::Denied),
            (403, Class::Denied),
            (408, Class::Transient),
            (412, Class::Transient),
            (429, Class::Transient),
            (503, Class::Transient),
            (400, Class::Rejected),
            (409, Class::Rejected),
        ] {
            assert_eq!(Class::of_http(status), class, "HTTP {status}");
        }
        let e = Class::Denied.error("v", "p", "read: HTTP 403".into());
        assert_eq!(
            e.to_string(),
            "store `v`: permission denied reading `p` (read: HTTP 403)"
        );
        assert!(Class::Transient.error("v", "p", "x".into()).is_transient());
        assert!(!Class::Rejected.error("v", "p", "x".into()).is_transient());
    }
}
