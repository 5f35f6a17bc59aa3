//! Paystack: verify (hex HMAC-SHA512 in `x-paystack-signature`) and parse (one event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_fuzz::{check, secrets, Scheme};
use payhook_shared::providers::signature::Digest;
use payhook_shared::providers::Paystack;

fuzz_target!(|data: &[u8]| {
    let provider = Paystack::new(secrets());
    check(
        &provider,
        Scheme::HexHmac(Digest::Sha512, "x-paystack-signature"),
        data,
    );
});
