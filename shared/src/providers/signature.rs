//! Signature checks shared by the providers: secrets with rotation, hex HMACs compared in
//! constant time after a length check, and plain shared-secret headers.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::VerifyError;

/// One or more secrets for a provider, all accepted, so a secret can be rotated without
/// refusing deliveries signed with the old one. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Self(secrets.into_iter().map(|s| s.as_ref().to_vec()).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }

    /// The first secret: the one used to sign what payhook itself sends (`send-test`).
    pub fn primary(&self) -> &[u8] {
        &self.0[0]
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets([{} redacted])", self.0.len())
    }
}

impl FromStr for Secrets {
    type Err = String;

    /// Comma-separated; blanks around a secret are trimmed, empty entries are refused (an empty
    /// HMAC key would let anyone sign).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err("a secret list must not contain an empty secret".into());
        }
        Ok(Self::new(parts))
    }
}

/// The HMAC digests the gateways use.
#[derive(Debug, Clone, Copy)]
pub enum Digest {
    Sha256,
    Sha512,
}

impl Digest {
    fn len(self) -> usize {
        match self {
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }

    pub fn mac(self, key: &[u8], body: &[u8]) -> Vec<u8> {
        match self {
            Digest::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(body);
                m.finalize().into_bytes().to_vec()
            }
            Digest::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(body);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// Lower-case hex HMAC of `body` with `key`: what a gateway puts in its signature header.
pub fn sign_hex(digest: Digest, key: &[u8], body: &[u8]) -> String {
    hex::encode(digest.mac(key, body))
}

/// Checks a hex HMAC header against every secret. Hex is decoded case-insensitively; a wrong
/// length (empty, truncated, a prefix of the right value) fails before any comparison.
pub fn verify_hex_hmac(
    header: &'static str,
    value: Option<&[u8]>,
    digest: Digest,
    secrets: &Secrets,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = value.ok_or(VerifyError::MissingHeader(header))?;
    let value = trim_ascii(value);
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(header));
    }
    let given = hex::decode(value).map_err(|_| VerifyError::Malformed(header))?;
    if given.len() != digest.len() {
        return Err(VerifyError::Malformed(header));
    }
    // Every secret is tried, so the time taken does not tell which one (if any) matched.
    let matched = secrets.iter().fold(subtle::Choice::from(0), |acc, key| {
        acc | digest.mac(key, body).as_slice().ct_eq(&given)
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Checks a header that must equal one of the secrets (Flutterwave's `verif-hash`).
pub fn verify_shared_secret(
    header: &'static str,
    value: Option<&[u8]>,
    secrets: &Secrets,
) -> Result<(), VerifyError> {
    let value = value.ok_or(VerifyError::MissingHeader(header))?;
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(header));
    }
    let matched = secrets.iter().fold(subtle::Choice::from(0), |acc, key| {
        // ct_eq on slices of different lengths is false without comparing contents.
        acc | key.ct_eq(value)
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn trim_ascii(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        "old-secret,new-secret".parse().unwrap()
    }

    #[test]
    fn every_listed_secret_is_accepted() {
        for key in ["old-secret", "new-secret"] {
            let sig = sign_hex(Digest::Sha256, key.as_bytes(), b"body");
            assert_eq!(
                verify_hex_hmac(
                    "h",
                    Some(sig.as_bytes()),
                    Digest::Sha256,
                    &secrets(),
                    b"body"
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let sig = sign_hex(Digest::Sha512, b"new-secret", b"body").to_uppercase();
        assert_eq!(
            verify_hex_hmac(
                "h",
                Some(sig.as_bytes()),
                Digest::Sha512,
                &secrets(),
                b"body"
            ),
            Ok(())
        );
    }

    #[test]
    fn a_prefix_of_the_right_signature_is_refused() {
        let sig = sign_hex(Digest::Sha256, b"new-secret", b"body");
        let r = verify_hex_hmac(
            "h",
            Some(&sig.as_bytes()[..32]),
            Digest::Sha256,
            &secrets(),
            b"body",
        );
        assert_eq!(r, Err(VerifyError::Malformed("h")));
    }

    #[test]
    fn an_empty_signature_is_refused() {
        let r = verify_hex_hmac("h", Some(b""), Digest::Sha256, &secrets(), b"body");
        assert_eq!(r, Err(VerifyError::MissingHeader("h")));
    }

    #[test]
    fn a_shared_secret_must_match_exactly() {
        assert_eq!(
            verify_shared_secret("h", Some(b"new-secret"), &secrets()),
            Ok(())
        );
        assert_eq!(
            verify_shared_secret("h", Some(b"new-secre"), &secrets()),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_shared_secret("h", Some(b"new-secretX"), &secrets()),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn an_empty_entry_in_a_secret_list_is_refused() {
        assert!("a,,b".parse::<Secrets>().is_err());
        assert!("".parse::<Secrets>().is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        assert_eq!(format!("{:?}", secrets()), "Secrets([2 redacted])");
    }
}
