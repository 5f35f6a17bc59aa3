//! GoCardless: verify (hex HMAC-SHA256 in `Webhook-Signature`) and parse (a batch of events).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_fuzz::{check, secrets, Scheme};
use payhook_shared::providers::signature::Digest;
use payhook_shared::providers::GoCardless;

fuzz_target!(|data: &[u8]| {
    let provider = GoCardless::new(secrets());
    check(
        &provider,
        Scheme::HexHmac(Digest::Sha256, "Webhook-Signature"),
        data,
    );
});
