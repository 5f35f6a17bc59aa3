//! Property tests of every provider's signature check, through the [`Provider`] trait.
//!
//! - A correct signature passes, whatever the position of the signing secret in the rotation
//!   list; a secret not in the list fails.
//! - Any single-byte change to a signed body (a byte flipped, inserted or deleted, the body cut
//!   short) fails, for every gateway that signs the body (all but Flutterwave, whose header is
//!   the secret itself and does not cover the body).
//! - Any single-byte change to the signature header fails, except the two spellings of the
//!   same signature that are accepted by design: hex in another case, and blanks around the
//!   value (HTTP strips those anyway). For Flutterwave, any change to the secret hash fails.

use proptest::prelude::*;
use proptest::sample::Index;

use super::signature::{sign_hex, Digest};
use super::*;

const NOW: i64 = 1_714_557_600;
const TOLERANCE: u64 = 300;

#[derive(Debug, Clone, Copy)]
enum Gateway {
    GoCardless,
    Paystack,
    Flutterwave,
    PayQi,
}

const ALL: [Gateway; 4] = [
    Gateway::GoCardless,
    Gateway::Paystack,
    Gateway::Flutterwave,
    Gateway::PayQi,
];

impl Gateway {
    fn provider(self, secrets: Secrets) -> Box<dyn Provider> {
        match self {
            Gateway::GoCardless => Box::new(GoCardless::new(secrets)),
            Gateway::Paystack => Box::new(Paystack::new(secrets)),
            Gateway::Flutterwave => Box::new(Flutterwave::new(secrets)),
            Gateway::PayQi => Box::new(PayQi::new(secrets, TOLERANCE)),
        }
    }

    /// The header carrying the signature (or the secret), and its value for `body`.
    fn signature(self, key: &[u8], body: &[u8]) -> (&'static str, Vec<u8>) {
        let hex = |digest| sign_hex(digest, key, body).into_bytes();
        match self {
            Gateway::GoCardless => ("Webhook-Signature", hex(Digest::Sha256)),
            Gateway::Paystack => ("x-paystack-signature", hex(Digest::Sha512)),
            Gateway::Flutterwave => ("verif-hash", key.to_vec()),
            Gateway::PayQi => ("X-PayQI-Signature", hex(Digest::Sha256)),
        }
    }

    fn signs_body(self) -> bool {
        !matches!(self, Gateway::Flutterwave)
    }

    /// Verifies `body` with `sig` as the signature header (and a timestamp in the window).
    fn verify(
        self,
        secrets: &Secrets,
        sig: &[u8],
        ts_offset: i64,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        let (name, _) = self.signature(b"", b"");
        let mut h = Headers::new();
        h.insert(name, sig);
        if let Gateway::PayQi = self {
            h.insert(
                "X-PayQI-Timestamp",
                (NOW + ts_offset).to_string().as_bytes(),
            );
        }
        self.provider(secrets.clone()).verify(&h, body, NOW)
    }
}

/// One single-byte change to a byte string.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR with a non-zero mask.
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    /// Cut to a shorter length.
    Truncate(Index),
}

impl Edit {
    /// The edited copy, or `None` when the edit needs a byte that `v` does not have.
    fn apply(&self, v: &[u8]) -> Option<Vec<u8>> {
        let mut v = v.to_vec();
        match self {
            Edit::Insert(at, b) => v.insert(at.index(v.len() + 1), *b),
            _ if v.is_empty() => return None,
            Edit::Flip(at, mask) => {
                let i = at.index(v.len());
                v[i] ^= mask;
            }
            Edit::Delete(at) => {
                v.remove(at.index(v.len()));
            }
            Edit::Truncate(at) => v.truncate(at.index(v.len())),
        }
        Some(v)
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, m)| Edit::Flip(i, m)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn gateway() -> impl Strategy<Value = Gateway> {
    prop::sample::select(ALL.to_vec())
}

/// A rotation list of 1 to 4 distinct secrets, and the position of the one that signs.
fn rotation() -> impl Strategy<Value = (Vec<Vec<u8>>, usize)> {
    prop::collection::btree_set(prop::collection::vec(any::<u8>(), 1..48), 1..5)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_flat_map(|list| {
            let n = list.len();
            (Just(list), 0..n)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_correct_signature_passes_whichever_secret_of_the_rotation_signs(
        gw in gateway(), (keys, pos) in rotation(), body in body(), ts in -300i64..=300
    ) {
        let secrets = Secrets::new(&keys);
        let (_, sig) = gw.signature(&keys[pos], &body);
        prop_assert_eq!(gw.verify(&secrets, &sig, ts, &body), Ok(()));
    }

    #[test]
    fn a_secret_not_in_the_rotation_fails(
        gw in gateway(), (keys, _) in rotation(), outsider in prop::collection::vec(any::<u8>(), 1..48),
        body in body()
    ) {
        prop_assume!(!keys.contains(&outsider));
        let (_, sig) = gw.signature(&outsider, &body);
        prop_assert_eq!(gw.verify(&Secrets::new(&keys), &sig, 0, &body), Err(VerifyError::Mismatch));
    }

    #[test]
    fn any_single_byte_change_to_a_signed_body_fails(
        gw in gateway(), (keys, pos) in rotation(), body in body(), edit in edit()
    ) {
        prop_assume!(gw.signs_body());
        let Some(changed) = edit.apply(&body) else { return Ok(()) };
        let (_, sig) = gw.signature(&keys[pos], &body);
        prop_assert_eq!(
            gw.verify(&Secrets::new(&keys), &sig, 0, &changed),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn any_single_byte_change_to_the_signature_fails(
        gw in gateway(), (keys, pos) in rotation(), body in body(), edit in edit()
    ) {
        let secrets = Secrets::new(&keys);
        let (_, sig) = gw.signature(&keys[pos], &body);
        let Some(changed) = edit.apply(&sig) else { return Ok(()) };
        let verdict = gw.verify(&secrets, &changed, 0, &body);
        if gw.signs_body() {
            // The same signature, spelled another way, is still the signature.
            let same = hex::decode(changed.trim_ascii()).ok() == hex::decode(&sig).ok();
            if same {
                prop_assert_eq!(verdict, Ok(()));
            } else {
                prop_assert!(verdict.is_err(), "{:?} accepted", edit);
            }
        } else {
            // The header is compared byte for byte with each secret.
            if keys.contains(&changed) {
                prop_assert_eq!(verdict, Ok(()));
            } else {
                prop_assert!(verdict.is_err(), "{:?} accepted", edit);
            }
        }
    }

    #[test]
    fn a_hex_digit_changed_to_another_value_is_a_mismatch(
        gw in gateway(), (keys, pos) in rotation(), body in body(), at in any::<Index>(), step in 1u32..16
    ) {
        prop_assume!(gw.signs_body());
        let (_, sig) = gw.signature(&keys[pos], &body);
        let mut changed = sig.clone();
        let i = at.index(changed.len());
        let digit = char::from(changed[i]).to_digit(16).unwrap();
        changed[i] = char::from_digit((digit + step) % 16, 16).unwrap() as u8;
        prop_assert_eq!(
            gw.verify(&Secrets::new(&keys), &changed, 0, &body),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_payqi_timestamp_outside_the_window_fails_even_with_a_correct_signature(
        (keys, pos) in rotation(), body in body(), off in 301i64..1_000_000, future in any::<bool>()
    ) {
        let (_, sig) = Gateway::PayQi.signature(&keys[pos], &body);
        let off = if future { off } else { -off };
        prop_assert_eq!(
            Gateway::PayQi.verify(&Secrets::new(&keys), &sig, off, &body),
            Err(VerifyError::StaleTimestamp)
        );
    }
}
