//! The config parser and validator: any text gives a config within the
//! documented bounds, or an error; never a panic.
#![no_main]

use std::path::Path;

use credbroker::config::{self, MAX_DURATION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match config::parse(Path::new("fuzz.toml"), text) {
        Ok(cfg) => {
            for c in cfg.credentials.values() {
                for d in [c.lease_ttl, c.refresh_interval, c.max_stale] {
                    assert!(d <= MAX_DURATION && !d.is_zero(), "{}: {d:?}", c.name);
                }
                if let Some(r) = &c.rotation {
                    assert!(r.grace <= MAX_DURATION && r.propagation <= r.grace);
                    assert!(r.grace >= c.lease_ttl + c.refresh_interval);
                }
                assert!(c.name.len() <= 256);
            }
            let l = cfg.server.limits;
            assert!(l.preface_timeout <= MAX_DURATION && l.idle_timeout <= MAX_DURATION);
            let socket = cfg.server.socket.as_os_str().as_encoded_bytes();
            assert!(socket.len() <= 107 && !socket.contains(&0));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
