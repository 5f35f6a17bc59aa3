//! PayQI: verify (hex HMAC-SHA256 plus a timestamp within the window) and parse (one event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_fuzz::{check, secrets, Scheme, TOLERANCE};
use payhook_shared::providers::PayQi;

fuzz_target!(|data: &[u8]| {
    let provider = PayQi::new(secrets(), TOLERANCE);
    check(&provider, Scheme::PayQi, data);
});
