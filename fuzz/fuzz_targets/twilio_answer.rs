//! Twilio's answers to key lists and key creates, as a hostile Twilio
//! could send them: errors stay short (Twilio's message is cut), a next
//! page is only ever a path on our base, a created key has a valid SID.
#![no_main]

use credbroker::twilio::client::fuzz_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (status, body) = input;
    match fuzz_answer(status, body) {
        Err(e) => assert!(e.len() < 1024, "an error of {} bytes", e.len()),
        Ok((keys, next, key)) => {
            if let Some(next) = next {
                assert!(next.starts_with('/') && !next.starts_with("//"), "{next:?}");
            }
            for k in keys {
                let _ = (k.sid.len(), k.friendly_name.len());
            }
            if let Some(key) = key {
                assert!(key.sid.as_str().starts_with("SK") && key.sid.as_str().len() == 34);
            }
        }
    }
});
