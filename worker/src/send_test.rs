//! `payhook-worker send-test PROVIDER`: like a gateway dashboard's "send test webhook". Builds
//! a sample event for the gateway, signs it with the first secret of the gateway's variable
//! (`GOCARDLESS_WEBHOOK_SECRET`, ...; PayQI also gets `X-PayQI-Timestamp`), posts it to
//! ingest, and says what the answer means.
//!
//! The sample's type is `payhook.test`, which no domain handler takes: it goes the whole way
//! (verified, stored, published, consumed) and ends `ignored`, changing no member or payment.
//! Its id is new each time, so it is never a duplicate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use payhook_shared::providers::signature::{sign_hex, Digest};
use serde_json::{json, Value};

/// The gateways, with the variable holding each one's webhook secret.
pub use payhook_shared::config::WEBHOOK_SECRET_VARS as PROVIDERS;

/// Where ingest's webhook listener is. The same variables as ingest's own, so one env file
/// serves both binaries; `PAYHOOK_INGEST_URL` is for when ingest is reached another way
/// (a load balancer, a certificate naming a public host).
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Base URL of ingest's webhook listener; unset: built from INGEST_ADDR and
    /// INGEST_TLS_CERT.
    #[arg(long, env = "PAYHOOK_INGEST_URL")]
    pub ingest_url: Option<String>,

    /// ingest's webhook listener, used when PAYHOOK_INGEST_URL is unset; 0.0.0.0 and [::]
    /// mean this machine.
    #[arg(long, env = "INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub ingest_addr: SocketAddr,

    /// ingest's PEM certificate chain: when set, send-test speaks HTTPS and trusts the
    /// certificates in this file (ingest's own), as well as the usual roots.
    #[arg(long, env = "INGEST_TLS_CERT")]
    pub ingest_tls_cert: Option<PathBuf>,
}

impl Target {
    /// The base URL to post to.
    pub fn base_url(&self) -> String {
        if let Some(url) = &self.ingest_url {
            return url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.ingest_tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        // A listener on every interface is reached on loopback from here.
        let ip = match self.ingest_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "{scheme}://{}",
            SocketAddr::new(ip, self.ingest_addr.port())
        )
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent("payhook-worker send-test");
        if let Some(path) = &self.ingest_tls_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading INGEST_TLS_CERT {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("INGEST_TLS_CERT {} is not PEM", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }
}

/// A signed test delivery, ready to post.
#[derive(Debug, Clone)]
pub struct TestDelivery {
    pub provider: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    /// The event's dedup key in `webhook_events.external_id`.
    pub external_id: String,
    /// The status ingest answers for an accepted delivery of this gateway.
    pub accepted: u16,
}

/// The sample event of `provider`, signed with `secret`; `now` is unix seconds, `nonce` makes
/// the ids unique.
pub fn build(provider: &str, secret: &[u8], now: i64, nonce: &str) -> anyhow::Result<TestDelivery> {
    let created = chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let (name, body, external_id, accepted): (&'static str, Value, String, u16) = match provider {
        "gocardless" => {
            let id = format!("EVTEST{nonce}");
            let body = json!({
                "events": [{
                    "id": id, "created_at": created, "resource_type": "payhook", "action": "test",
                    "links": {},
                    "details": {"origin": "payhook", "cause": "send_test",
                                "description": "A test webhook from payhook-worker send-test"},
                    "metadata": {}
                }],
                "meta": {"webhook_id": format!("WBTEST{nonce}")}
            });
            ("gocardless", body, id, 204)
        }
        "paystack" => {
            let body = json!({
                "event": "payhook.test",
                "data": {"id": format!("test-{nonce}"), "reference": format!("payhook-test-{nonce}"),
                         "amount": 0, "currency": "NGN", "status": "success",
                         "paid_at": created}
            });
            ("paystack", body, format!("payhook.test:test-{nonce}"), 200)
        }
        "flutterwave" => {
            let body = json!({
                "event": "payhook.test",
                "data": {"id": format!("test-{nonce}"), "tx_ref": format!("payhook-test-{nonce}"),
                         "amount": "0.00", "currency": "NGN", "status": "successful"}
            });
            (
                "flutterwave",
                body,
                format!("payhook.test:test-{nonce}"),
                200,
            )
        }
        "payqi" => {
            let id = format!("evt_test_{nonce}");
            let body = json!({
                "id": id, "type": "payhook.test", "created": now,
                "data": {"id": format!("pay_test_{nonce}"), "amount": "0.00", "currency": "GBP",
                         "status": "pending", "metadata": {"order_id": format!("payhook-test-{nonce}")}}
            });
            ("payqi", body, id, 204)
        }
        other => anyhow::bail!(
            "unknown provider {other:?}: one of {}",
            PROVIDERS.map(|p| p.0).join(", ")
        ),
    };
    let body = body.to_string();
    let headers = match name {
        "gocardless" => vec![(
            "Webhook-Signature",
            sign_hex(Digest::Sha256, secret, body.as_bytes()),
        )],
        "paystack" => vec![(
            "x-paystack-signature",
            sign_hex(Digest::Sha512, secret, body.as_bytes()),
        )],
        "flutterwave" => vec![("verif-hash", String::from_utf8_lossy(secret).into_owned())],
        _ => vec![
            (
                "X-PayQI-Signature",
                sign_hex(Digest::Sha256, secret, body.as_bytes()),
            ),
            ("X-PayQI-Timestamp", now.to_string()),
        ],
    };
    Ok(TestDelivery {
        provider: name,
        body,
        headers,
        external_id,
        accepted,
    })
}

/// What ingest's answer means, for an operator.
pub fn meaning(d: &TestDelivery, status: u16, secret_var: &str) -> String {
    match status {
        s if s == d.accepted => format!(
            "accepted: stored and published. A worker will process it; as a test event it ends \
             `ignored` and changes nothing. See it with: payhook-worker show {}",
            d.external_id
        ),
        200..=299 => format!(
            "accepted with {status}, though {} answers {} (an older ingest?)",
            d.provider, d.accepted
        ),
        401 | 498 => format!(
            "signature refused: {secret_var} here is not one of the secrets ingest accepts for \
             {}{}",
            d.provider,
            if d.provider == "payqi" {
                " (or the clocks differ by more than PAYQI_TOLERANCE_SECS)"
            } else {
                ""
            }
        ),
        403 => "forbidden: ingest requires a client certificate for this gateway \
                (INGEST_CLIENT_CA is set); send-test has none"
            .into(),
        404 => format!(
            "not found: ingest does not serve /webhooks/{} (its {secret_var} is unset), or the \
             URL is not ingest's webhook listener (INGEST_ADDR)",
            d.provider
        ),
        400 => "bad request: ingest verified the signature but refused the body".into(),
        405 => "method not allowed: the URL is not a webhook route".into(),
        413 => "body too large for ingest".into(),
        503 => "unavailable: ingest cannot reach PostgreSQL or RabbitMQ right now; a gateway \
                would retry (check /readyz on INGEST_OPS_ADDR)"
            .into(),
        other => format!("unexpected answer {other}"),
    }
}

/// Builds, signs and posts the test delivery; prints the answer and its meaning. `Err` when it
/// was not accepted.
pub async fn send_test(provider: &str, target: &Target) -> anyhow::Result<()> {
    let var = PROVIDERS
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown provider {provider:?}: one of {}",
                PROVIDERS.map(|p| p.0).join(", ")
            )
        })?;
    let secrets = payhook_shared::config::secret_from_env(var)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{var} is unset: set it to the webhook secret ingest uses for {provider}"
            )
        })?;
    let now = chrono::Utc::now();
    let nonce = format!("{}{:03}", now.timestamp(), now.timestamp_subsec_millis());
    let delivery = build(provider, secrets.primary(), now.timestamp(), &nonce)?;

    let url = format!("{}/webhooks/{}", target.base_url(), delivery.provider);
    let client = target.client()?;
    let mut req = client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(delivery.body.clone());
    for (k, v) in &delivery.headers {
        req = req.header(*k, v);
    }
    println!("POST {url}  ({} event {})", provider, delivery.external_id);
    let res = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("could not reach ingest at {url}: {e}"))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("");
    println!("{} {reason}", status.as_u16());
    if !body.trim().is_empty() {
        println!("{}", body.trim());
    }
    println!("{}", meaning(&delivery, status.as_u16(), var));
    if status.is_success() {
        Ok(())
    } else {
        anyhow::bail!("the test webhook was not accepted ({})", status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: Option<&str>, addr: &str, tls: bool) -> Target {
        Target {
            ingest_url: url.map(str::to_owned),
            ingest_addr: addr.parse().unwrap(),
            ingest_tls_cert: tls.then(|| "/etc/payhook/cert.pem".into()),
        }
    }

    #[test]
    fn the_url_comes_from_ingest_addr_unless_payhook_ingest_url_is_set() {
        assert_eq!(
            target(None, "127.0.0.1:8080", false).base_url(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            target(None, "0.0.0.0:9000", false).base_url(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            target(None, "[::]:9000", true).base_url(),
            "https://[::1]:9000"
        );
        assert_eq!(
            target(None, "10.1.2.3:443", true).base_url(),
            "https://10.1.2.3:443"
        );
        assert_eq!(
            target(Some("https://hooks.example.org/"), "0.0.0.0:9000", false).base_url(),
            "https://hooks.example.org"
        );
    }
    use payhook_shared::providers::{self, Headers, Secrets};

    #[test]
    fn each_sample_passes_the_gateways_own_verification_and_parses() {
        let secrets = Secrets::new(["first-secret"]);
        let configured = payhook_shared::config::ProviderSecrets {
            gocardless: Some(secrets.clone()),
            paystack: Some(secrets.clone()),
            flutterwave: Some(secrets.clone()),
            payqi: Some(secrets.clone()),
            payqi_tolerance_secs: 300,
        };
        let now = 1_764_000_000;
        for p in providers::configured(&configured) {
            let d = build(p.name(), secrets.primary(), now, "42").unwrap();
            let headers: Headers = d.headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            p.verify(&headers, d.body.as_bytes(), now)
                .unwrap_or_else(|e| panic!("{}: {e}", p.name()));
            let events = p.parse(d.body.as_bytes()).unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].external_id, d.external_id, "{}", p.name());
            assert_eq!(events[0].event_type, "payhook.test", "{}", p.name());
            assert_eq!(d.accepted, p.accepted_status(), "{}", p.name());
        }
    }
}
