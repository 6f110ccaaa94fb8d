//! Compare-and-set, the part every store shares: what a lost race is
//! called, and the compare step of the stores whose backend cannot check
//! the version itself (a file, Vault KV v1, AWS before its stage move).
//! Vault KV v2 (`cas`), GCP (etag) and AWS (`RemoveFromVersionId`) also
//! check on the backend, so a writer that slips in after the compare still
//! loses there.

use super::{Document, StoreError};

/// The answer to a write that expected `expected` (`None`: no document)
/// and found something else.
pub(crate) fn conflict(store: &str, path: &str, expected: Option<&str>) -> StoreError {
    StoreError::Conflict {
        store: store.to_owned(),
        path: path.to_owned(),
        expected: expected.unwrap_or("(none)").to_owned(),
    }
}

/// The version `read` found: `None` when there is no document.
pub(crate) fn version_of(read: Result<Document, StoreError>) -> Result<Option<String>, StoreError> {
    match read {
        Ok(doc) => Ok(Some(doc.version)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The compare step: refuses the write unless the stored version
/// (`current`, `None` for no document) is the `expected` one.
pub(crate) fn check(
    store: &str,
    path: &str,
    current: Option<&str>,
    expected: Option<&str>,
) -> Result<(), StoreError> {
    if current == expected {
        Ok(())
    } else {
        Err(conflict(store, path, expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    #[test]
    fn only_the_expected_version_passes() {
        assert!(check("s", "p", Some("v1"), Some("v1")).is_ok());
        assert!(check("s", "p", None, None).is_ok());
        for (current, expected) in [
            (Some("v2"), Some("v1")),
            (None, Some("v1")),
            (Some("v1"), None),
        ] {
            match check("s", "p", current, expected) {
                Err(StoreError::Conflict { expected: e, .. }) => {
                    assert_eq!(e, expected.unwrap_or("(none)"))
                }
                other => panic!("{current:?} vs {expected:?}: {other:?}"),
            }
        }
        let found = Document {
            bytes: SecretBytes::new(b"{}".to_vec()),
            version: "v3".into(),
        };
        assert_eq!(version_of(Ok(found)).unwrap().as_deref(), Some("v3"));
        let gone = StoreError::NotFound {
            store: "s".into(),
            path: "p".into(),
            detail: String::new(),
        };
        assert_eq!(version_of(Err(gone)).unwrap(), None);
    }
}
