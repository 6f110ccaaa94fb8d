//! AWS service errors: whatever code, status and message the endpoint
//! sends, the error is short and a refusal is never taken for a missing
//! secret unless AWS said so.
#![no_main]

use credbroker::store::{StoreError, aws::fuzz_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u16, &str)| {
    let (code, status, message) = input;
    let e = fuzz_error(code, status, message);
    let text = e.to_string();
    assert!(text.len() < 1200, "an error of {} bytes", text.len());
    assert!(!text.contains('\n'));
    if matches!(e, StoreError::NotFound { .. }) {
        assert_eq!(code, "ResourceNotFoundException");
    }
});
