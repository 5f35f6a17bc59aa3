//! Flutterwave: verify (`verif-hash` equals a secret) and parse (one event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_fuzz::{check, secrets, Scheme};
use payhook_shared::providers::Flutterwave;

fuzz_target!(|data: &[u8]| {
    let provider = Flutterwave::new(secrets());
    check(&provider, Scheme::SharedSecret("verif-hash"), data);
});
