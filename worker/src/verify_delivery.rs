//! `payhook-worker verify-delivery ID`: re-checks a stored delivery's signature, for an
//! auditor who wants proof that a row in `webhook_deliveries` is what the gateway sent. The
//! stored raw body and signature headers are checked against each secret of the gateway's
//! variable in turn, and the answer says which one (by position in the list) signed it.
//!
//! PayQI's timestamp is checked against the time the delivery was received, not now: the
//! window is about replays at receipt. Flutterwave sends its secret itself as the signature
//! (`verif-hash`), which payhook never stores, so its deliveries cannot be re-verified.

use chrono::{DateTime, Utc};
use payhook_shared::config::webhook_secret_var;
use payhook_shared::providers::{self, Headers, Secrets, VerifyError};
use sqlx::PgPool;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed with the secret at this position (1-based) of a list of `of`.
    Signed { position: usize, of: usize },
    /// The check failed; the text says why.
    Refused(String),
}

/// A stored delivery and its verdict, for printing.
#[derive(Debug)]
pub struct Report {
    pub id: i64,
    pub provider: String,
    pub received_at: DateTime<Utc>,
    pub var: &'static str,
    pub verdict: Verdict,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivery {} ({}, received {}): ",
            self.id,
            self.provider,
            self.received_at.format("%Y-%m-%d %H:%M:%SZ")
        )?;
        match &self.verdict {
            Verdict::Signed { position, of } => write!(
                f,
                "genuine: signed with secret {position} of {of} in {}",
                self.var
            ),
            Verdict::Refused(why) => write!(f, "NOT verified: {why}"),
        }
    }
}

/// Checks delivery `id` against the secrets in the gateway's variable (read from the
/// environment, like ingest). `Err` when the delivery is unknown or no secret is configured.
pub async fn verify_delivery(
    pool: &PgPool,
    id: i64,
    payqi_tolerance_secs: u64,
) -> anyhow::Result<Report> {
    let row: Option<(String, DateTime<Utc>, serde_json::Value, Vec<u8>)> = sqlx::query_as(
        "SELECT provider, received_at, headers, body FROM webhook_deliveries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((provider, received_at, stored_headers, body)) = row else {
        anyhow::bail!("no delivery {id} in webhook_deliveries (pruned, or erased?)");
    };
    let var = webhook_secret_var(&provider).ok_or_else(|| {
        anyhow::anyhow!("delivery {id} is from {provider:?}, a gateway payhook does not know")
    })?;
    let verdict = if provider == "flutterwave" {
        Verdict::Refused(
            "a Flutterwave delivery cannot be re-verified: its verif-hash header is the secret \
             itself, which payhook never stores"
                .into(),
        )
    } else {
        let secrets = payhook_shared::config::secret_from_env(var)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("{var} is unset: set it to the secrets ingest uses"))?;
        check(
            &provider,
            &secrets,
            &headers(&stored_headers),
            &body,
            received_at.timestamp(),
            payqi_tolerance_secs,
        )
    };
    Ok(Report {
        id,
        provider,
        received_at,
        var,
        verdict,
    })
}

/// The stored audit headers (a JSON object of text values) as the providers read them.
fn headers(stored: &serde_json::Value) -> Headers {
    let mut h = Headers::new();
    for (name, value) in stored.as_object().into_iter().flatten() {
        if let Some(v) = value.as_str() {
            h.insert(name, v.as_bytes());
        }
    }
    h
}

/// Tries each secret alone, first to last.
fn check(
    provider: &str,
    secrets: &Secrets,
    headers: &Headers,
    body: &[u8],
    at: i64,
    payqi_tolerance_secs: u64,
) -> Verdict {
    let all: Vec<&[u8]> = secrets.iter().collect();
    let mut refusal = None;
    for (i, secret) in all.iter().enumerate() {
        let Some(p) = providers::by_name(provider, Secrets::new([secret]), payqi_tolerance_secs)
        else {
            return Verdict::Refused(format!("no provider {provider:?}"));
        };
        match p.verify(headers, body, at) {
            Ok(()) => {
                return Verdict::Signed {
                    position: i + 1,
                    of: all.len(),
                }
            }
            Err(e) => refusal = Some(e),
        }
    }
    Verdict::Refused(match refusal {
        Some(VerifyError::Mismatch) | None => format!(
            "the signature matches none of the {} secret(s) configured: the stored body or \
             signature was changed, or it was signed with a secret no longer listed",
            all.len()
        ),
        Some(e @ VerifyError::MissingHeader(_)) => {
            format!("{e}: the delivery was stored before payhook kept signature headers")
        }
        Some(VerifyError::StaleTimestamp) => format!(
            "its timestamp was outside the {payqi_tolerance_secs} s window when it was received"
        ),
        Some(e) => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhook_shared::providers::signature::{sign_hex, Digest};

    fn paystack_headers(key: &str, body: &[u8]) -> Headers {
        [(
            "x-paystack-signature",
            sign_hex(Digest::Sha512, key.as_bytes(), body).as_bytes(),
        )]
        .into_iter()
        .collect()
    }

    #[test]
    fn the_verdict_names_the_position_of_the_secret_that_signed() {
        let secrets: Secrets = "first,second,third".parse().unwrap();
        let body = b"{}";
        for (key, position) in [("first", 1), ("second", 2), ("third", 3)] {
            assert_eq!(
                check(
                    "paystack",
                    &secrets,
                    &paystack_headers(key, body),
                    body,
                    0,
                    300
                ),
                Verdict::Signed { position, of: 3 }
            );
        }
        assert!(matches!(
            check("paystack", &secrets, &paystack_headers("other", body), body, 0, 300),
            Verdict::Refused(why) if why.contains("none of the 3 secret(s)")
        ));
    }
}
