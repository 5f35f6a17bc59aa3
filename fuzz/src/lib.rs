//! What the provider fuzz targets share: how a fuzz input becomes a delivery (headers and body),
//! and the properties every provider must keep on any delivery.
//!
//! Input layout (so seeds can be written by hand, see `seeds/<target>/`):
//!
//! ```text
//! [ctl][aux]name: value\nname: value\n\n<body>
//! ```
//!
//! - `ctl` bit 0: sign the body correctly (a valid signature header goes first, before the
//!   fuzzed headers), bits 1-2: which secret of the rotation list signs (0, 1, 2; 3 is 0),
//!   bit 3: upper-case hex, bits 4-6: a change made after signing (see [`Change`]).
//! - `aux`: where the change happens, and the PayQI timestamp's offset from `NOW`.
//! - headers up to the first blank line (absent: no fuzzed headers, all of it is the body).
//!   A value is kept byte for byte, blanks included: the providers trim what they trim.

use payhook_shared::providers::signature::{self, Digest};
use payhook_shared::providers::{Headers, NewEvent, Provider, Secrets, VerifyError};

/// A rotation list of three: the signing secret can be in any position.
pub const SECRETS: [&str; 3] = ["whsec-old", "whsec-current", "whsec-next"];
/// The clock the targets verify at (2024-05-01T10:00:00Z).
pub const NOW: i64 = 1_714_557_600;
/// PayQI's window, seconds either way.
pub const TOLERANCE: u64 = 300;

pub fn secrets() -> Secrets {
    Secrets::new(SECRETS)
}

/// How a provider signs, for signing fuzzed bodies and for the independent check of a verdict.
#[derive(Clone, Copy)]
pub enum Scheme {
    /// Hex HMAC of the body in `header` (GoCardless, Paystack).
    HexHmac(Digest, &'static str),
    /// `header` equals a secret (Flutterwave); the body is not signed.
    SharedSecret(&'static str),
    /// Hex HMAC-SHA256 plus a unix-seconds timestamp within the window (PayQI).
    PayQi,
}

const PAYQI_SIG: &str = "X-PayQI-Signature";
const PAYQI_TS: &str = "X-PayQI-Timestamp";

/// A change to a correctly signed delivery; every one of them must make verification fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    FlipBodyByte,
    InsertBodyByte,
    DeleteBodyByte,
    TruncateBody,
    /// One hex digit of the signature replaced by another value (not just another case).
    AlterSignatureDigit,
}

impl Change {
    fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            1 => Self::FlipBodyByte,
            2 => Self::InsertBodyByte,
            3 => Self::DeleteBodyByte,
            4 => Self::TruncateBody,
            5 => Self::AlterSignatureDigit,
            _ => Self::None,
        }
    }
}

pub struct Delivery<'a> {
    pub sign: bool,
    pub key: usize,
    pub upper: bool,
    pub change: Change,
    pub aux: u8,
    pub headers: Vec<(String, &'a [u8])>,
    pub body: &'a [u8],
}

impl<'a> Delivery<'a> {
    pub fn split(data: &'a [u8]) -> Self {
        let ctl = data.first().copied().unwrap_or(0);
        let aux = data.get(1).copied().unwrap_or(0);
        let rest = data.get(2..).unwrap_or(&[]);
        let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (&[][..], rest),
        };
        let headers = head
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
                let value = line[colon + 1..]
                    .strip_prefix(b" ")
                    .unwrap_or(&line[colon + 1..]);
                Some((name, value))
            })
            .collect();
        Self {
            sign: ctl & 1 == 1,
            key: usize::from((ctl >> 1) & 3) % SECRETS.len(),
            upper: ctl & 8 == 8,
            change: Change::from_bits(ctl >> 4),
            aux,
            headers,
            body,
        }
    }
}

/// Runs one fuzz input through `provider`: verify, then parse, checking every property.
pub fn check(provider: &dyn Provider, scheme: Scheme, data: &[u8]) {
    let d = Delivery::split(data);
    let mut headers = Headers::new();
    if d.sign {
        sign(&mut headers, scheme, &d, d.body);
    }
    for (name, value) in &d.headers {
        headers.insert(name, value);
    }
    let verdict = provider.verify(&headers, d.body, NOW);
    if d.sign {
        assert_eq!(verdict, Ok(()), "a correctly signed delivery was refused");
        if d.change != Change::None {
            check_change_is_refused(provider, scheme, &d);
        }
    }
    if verdict.is_ok() {
        assert!(
            independently_valid(scheme, &headers, d.body),
            "verify accepted a delivery whose signature is not valid"
        );
    }

    // Parse whatever the signature said: parsing must be total on its own.
    let parsed = provider.parse(d.body);
    if let Ok(events) = &parsed {
        check_events(events);
        assert_eq!(
            provider.parse(d.body).as_ref(),
            Ok(events),
            "parse is not deterministic"
        );
    }
}

fn sign(headers: &mut Headers, scheme: Scheme, d: &Delivery<'_>, body: &[u8]) {
    let key = SECRETS[d.key].as_bytes();
    let hex = |digest| {
        let s = signature::sign_hex(digest, key, body);
        if d.upper {
            s.to_uppercase()
        } else {
            s
        }
    };
    match scheme {
        Scheme::HexHmac(digest, header) => headers.insert(header, hex(digest).as_bytes()),
        Scheme::SharedSecret(header) => headers.insert(header, key),
        Scheme::PayQi => {
            headers.insert(PAYQI_SIG, hex(Digest::Sha256).as_bytes());
            // Anywhere in the window: NOW - 128 ..= NOW + 127.
            let ts = NOW + i64::from(d.aux) - 128;
            headers.insert(PAYQI_TS, ts.to_string().as_bytes());
        }
    }
}

/// Signs the original body, then changes the delivery: verification must fail.
fn check_change_is_refused(provider: &dyn Provider, scheme: Scheme, d: &Delivery<'_>) {
    if matches!(scheme, Scheme::SharedSecret(_)) && d.change != Change::AlterSignatureDigit {
        // The shared secret does not cover the body: a changed body is still "signed".
        return;
    }
    let mut body = d.body.to_vec();
    let at = |len: usize| usize::from(d.aux) % len.max(1);
    match d.change {
        Change::None => return,
        Change::FlipBodyByte if body.is_empty() => return,
        Change::FlipBodyByte => {
            let i = at(body.len());
            body[i] ^= 1 << (d.aux % 8);
        }
        Change::InsertBodyByte => {
            let i = usize::from(d.aux) % (body.len() + 1);
            body.insert(i, d.aux);
        }
        Change::DeleteBodyByte | Change::TruncateBody if body.is_empty() => return,
        Change::DeleteBodyByte => {
            body.remove(at(body.len()));
        }
        Change::TruncateBody => body.truncate(at(body.len())),
        Change::AlterSignatureDigit => {}
    }
    let mut headers = Headers::new();
    let mut signed = Headers::new();
    sign(&mut signed, scheme, d, d.body);
    let sig_header = match scheme {
        Scheme::HexHmac(_, h) | Scheme::SharedSecret(h) => h,
        Scheme::PayQi => PAYQI_SIG,
    };
    let mut sig = signed.get(sig_header).expect("signed above").to_vec();
    if d.change == Change::AlterSignatureDigit {
        let i = at(sig.len());
        sig[i] = other_digit(sig[i], d.aux);
    }
    headers.insert(sig_header, &sig);
    if let Some(ts) = signed.get(PAYQI_TS) {
        headers.insert(PAYQI_TS, ts);
    }
    let verdict = provider.verify(&headers, &body, NOW);
    assert_eq!(
        verdict,
        Err(VerifyError::Mismatch),
        "{:?} was not refused",
        d.change
    );
}

/// Another byte than `b`, and for a hex digit another hex value (not the same in another case).
fn other_digit(b: u8, aux: u8) -> u8 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match (b as char).to_digit(16) {
        Some(v) => {
            let step = u32::from(aux % 15) + 1;
            HEX[((v + step) % 16) as usize]
        }
        None => b ^ (1 << (aux % 8)),
    }
}

/// The same question answered without the provider's code: does some secret sign this?
fn independently_valid(scheme: Scheme, headers: &Headers, body: &[u8]) -> bool {
    let hmac_ok = |digest: Digest, header: &str| {
        let Some(v) = headers.get(header) else {
            return false;
        };
        let Ok(given) = hex::decode(v.trim_ascii()) else {
            return false;
        };
        SECRETS
            .iter()
            .any(|k| signature::sign_hex(digest, k.as_bytes(), body) == hex::encode(&given))
    };
    match scheme {
        Scheme::HexHmac(digest, header) => hmac_ok(digest, header),
        Scheme::SharedSecret(header) => headers
            .get(header)
            .is_some_and(|v| SECRETS.iter().any(|k| k.as_bytes() == v)),
        Scheme::PayQi => {
            let ts_ok = headers
                .get(PAYQI_TS)
                .map(<[u8]>::trim_ascii)
                .filter(|t| !t.is_empty() && t.iter().all(u8::is_ascii_digit))
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<i64>().ok())
                .is_some_and(|t| NOW.abs_diff(t) <= TOLERANCE);
            ts_ok && hmac_ok(Digest::Sha256, PAYQI_SIG)
        }
    }
}

/// What every parsed delivery must look like, whatever the provider.
fn check_events(events: &[NewEvent]) {
    assert!(!events.is_empty(), "a parsed delivery has no event");
    let mut ids = std::collections::HashSet::new();
    for e in events {
        assert!(!e.external_id.is_empty(), "empty external_id");
        assert!(
            ids.insert(&e.external_id),
            "two events with one external_id"
        );
        assert!(!e.event_type.is_empty(), "empty event_type");
        assert!(
            !e.event_type.chars().any(char::is_control),
            "control character in event_type"
        );
        assert!(
            !e.external_id.chars().any(char::is_control),
            "control character in external_id"
        );
        if let Some(r) = &e.resource_id {
            assert!(!r.is_empty(), "empty resource_id");
            assert!(
                !r.chars().any(char::is_control),
                "control character in resource_id"
            );
        }
        assert!(e.payload.is_object(), "payload is not an object");
        // What goes into jsonb: serializable, and without U+0000 (jsonb refuses it).
        serde_json::to_string(&e.payload).expect("payload serializes");
        assert!(!holds_nul(&e.payload), "payload holds U+0000");
    }
}

/// Whether U+0000 is in any string or key of `v` (which PostgreSQL's jsonb cannot store).
pub fn holds_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}
