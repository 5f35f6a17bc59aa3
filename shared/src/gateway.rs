//! The gateways' HTTP APIs: GoCardless enrichment (payments, mandates, customers, payment
//! retry) for the worker, and one "what is this payment's status?" call per gateway for the
//! reconciler. Bearer token from `<PROVIDER>_API_TOKEN` (env only), base URL from
//! `<PROVIDER>_API_URL`, rustls, a timeout on every call.
//!
//! Errors are classified for the caller: a 5xx, 429, timeout or connection failure is
//! [`GatewayError::Transient`] (retry later); a 404 is [`GatewayError::NotFound`] (an answer:
//! the worker makes it a permanent error, the reconciler reads it as expired); any other
//! refusal or an answer we cannot read is [`GatewayError::Permanent`]; a gateway without a
//! token is [`GatewayError::NotConfigured`] (no call made). Messages carry the
//! method, path and status, never a token or a response body (it may hold personal data).
//!
//! GoCardless's Bank Account Data API (bank transactions) has its own client in
//! [`crate::bank_api`], reached as [`Gateways::bank`]; it classifies answers with the same
//! functions as here.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::bank_api::BankApi;
use crate::config::{parse_duration, token_from_env};
use crate::money;

/// The GoCardless API version every call names (its API refuses calls without one).
pub const GOCARDLESS_VERSION: &str = "2015-07-06";

/// Where the gateways' APIs are. Tokens are not here: they come from the environment only.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewaySettings {
    /// GoCardless API base URL (enrichment, reconciliation).
    #[arg(
        long,
        env = "GOCARDLESS_API_URL",
        default_value = "https://api.gocardless.com"
    )]
    pub gocardless_api_url: String,

    /// Paystack API base URL (reconciliation).
    #[arg(
        long,
        env = "PAYSTACK_API_URL",
        default_value = "https://api.paystack.co"
    )]
    pub paystack_api_url: String,

    /// Flutterwave API base URL (reconciliation).
    #[arg(
        long,
        env = "FLUTTERWAVE_API_URL",
        default_value = "https://api.flutterwave.com"
    )]
    pub flutterwave_api_url: String,

    /// PayQI API base URL (reconciliation).
    #[arg(long, env = "PAYQI_API_URL", default_value = "https://api.payqi.com")]
    pub payqi_api_url: String,

    /// GoCardless Bank Account Data API base URL (bank transactions that arrive as ids only).
    /// Its secrets, GOCARDLESS_BANK_SECRET_ID and GOCARDLESS_BANK_SECRET_KEY, come from the
    /// environment only.
    #[arg(
        long,
        env = "GOCARDLESS_BANK_API_URL",
        default_value = "https://bankaccountdata.gocardless.com"
    )]
    pub gocardless_bank_api_url: String,

    /// Least time between two calls to the Bank Account Data API from one process: its rate
    /// limits are tight (100 account calls a minute per company, 100 tokens an hour, and banks
    /// may allow as few as four transaction calls per account a day), so calls wait their turn.
    #[arg(long, env = "BANK_API_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub bank_api_interval: Duration,

    /// How long one bank account's transaction list is reused, so that many transaction
    /// events for one account cost one call; 0 asks the API every time.
    #[arg(long, env = "BANK_API_CACHE", default_value = "60s", value_parser = parse_duration)]
    pub bank_api_cache: Duration,

    /// Longest a gateway API call may take before it counts as a transient failure.
    #[arg(long, env = "GATEWAY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub gateway_timeout: Duration,
}

/// Why a gateway call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Try again later: 5xx, 429, timeout, connection refused.
    #[error("{0}")]
    Transient(String),
    /// The gateway does not know this id.
    #[error("{0}")]
    NotFound(String),
    /// Retrying will not help: 4xx, an unreadable answer.
    #[error("{0}")]
    Permanent(String),
    /// No `<PROVIDER>_API_TOKEN`: the call was never made. Not the event's fault: an
    /// installation may run with only its webhook secret, and the operator may add the token
    /// later (the message names the variable).
    #[error("{0}")]
    NotConfigured(String),
}

impl GatewayError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// One gateway's API: base URL, token, and the shared HTTP client.
#[derive(Clone)]
struct Api {
    name: &'static str,
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    extra_header: Option<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Api")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish()
    }
}

impl Api {
    fn token_var(&self) -> String {
        format!("{}_API_TOKEN", self.name.to_uppercase())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, GatewayError> {
        let body = self.call_raw(method, path).await?;
        serde_json::from_slice(&body).map_err(|e| {
            GatewayError::Permanent(format!("{} {path}: unreadable answer: {e}", self.name))
        })
    }

    /// The answer body of a 2xx, classified errors otherwise.
    async fn call_raw(&self, method: reqwest::Method, path: &str) -> Result<Vec<u8>, GatewayError> {
        let what = format!("{} {method} {path}", self.name);
        let token = self.token.as_deref().ok_or_else(|| {
            GatewayError::NotConfigured(format!(
                "{what}: {} is not set (set it and replay the event)",
                self.token_var()
            ))
        })?;
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut req = self.client.request(method, url).bearer_auth(token);
        if let Some((name, value)) = self.extra_header {
            req = req.header(name, value);
        }
        let resp = send(&what, req).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(refusal(&what, status));
        }
        answer_body(&what, resp).await
    }
}

/// Sends a call; failing to get an answer at all (connection, timeout) is transient. `what`
/// (gateway, method, path) starts every message.
pub(crate) async fn send(
    what: &str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, GatewayError> {
    req.send().await.map_err(|e| {
        // No URL in the message: it is ours, and a query string may hold a reference.
        GatewayError::Transient(format!("{what}: {}", e.without_url()))
    })
}

/// The error for an answer that is not a 2xx: 404 is an answer about the id, 5xx, 429 and
/// 408 may pass, anything else will not. Only the status: a body may hold personal data.
pub(crate) fn refusal(what: &str, status: reqwest::StatusCode) -> GatewayError {
    let msg = format!("{what}: HTTP {}", status.as_u16());
    if status == reqwest::StatusCode::NOT_FOUND {
        GatewayError::NotFound(msg)
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        GatewayError::Transient(msg)
    } else {
        GatewayError::Permanent(msg)
    }
}

/// The body of a 2xx answer; a body cut short (timeout, connection lost) is transient.
pub(crate) async fn answer_body(
    what: &str,
    resp: reqwest::Response,
) -> Result<Vec<u8>, GatewayError> {
    resp.bytes().await.map(|b| b.to_vec()).map_err(|e| {
        GatewayError::Transient(format!("{what}: reading the answer: {}", e.without_url()))
    })
}

/// Every gateway's API client.
#[derive(Debug, Clone)]
pub struct Gateways {
    pub gocardless: GoCardlessApi,
    pub paystack: PaystackApi,
    pub flutterwave: FlutterwaveApi,
    pub payqi: PayQiApi,
    /// GoCardless Bank Account Data (bank transactions), paced and cached per process.
    pub bank: BankApi,
}

impl Gateways {
    /// Clients for every gateway; tokens from `<PROVIDER>_API_TOKEN`, the bank data API's
    /// secrets from `GOCARDLESS_BANK_SECRET_ID` / `GOCARDLESS_BANK_SECRET_KEY`.
    pub fn from_settings(settings: &GatewaySettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.gateway_timeout)
            .connect_timeout(settings.gateway_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("payhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let api = |name: &'static str, base: &str, token_var: &str| Api {
            name,
            client: client.clone(),
            base: base.to_owned(),
            token: token_from_env(token_var),
            extra_header: None,
        };
        let mut gocardless = api(
            "gocardless",
            &settings.gocardless_api_url,
            "GOCARDLESS_API_TOKEN",
        );
        gocardless.extra_header = Some(("GoCardless-Version", GOCARDLESS_VERSION));
        Ok(Self {
            gocardless: GoCardlessApi(gocardless),
            paystack: PaystackApi(api(
                "paystack",
                &settings.paystack_api_url,
                "PAYSTACK_API_TOKEN",
            )),
            flutterwave: FlutterwaveApi(api(
                "flutterwave",
                &settings.flutterwave_api_url,
                "FLUTTERWAVE_API_TOKEN",
            )),
            payqi: PayQiApi(api("payqi", &settings.payqi_api_url, "PAYQI_API_TOKEN")),
            bank: BankApi::new(
                client.clone(),
                &settings.gocardless_bank_api_url,
                crate::bank_api::secrets_from_env(),
                settings.bank_api_interval,
                settings.bank_api_cache,
            ),
        })
    }

    /// The token variables that are not set, one per gateway whose API is therefore off
    /// (enrichment and reconciliation of that gateway are skipped).
    pub fn missing_tokens(&self) -> Vec<String> {
        let mut missing: Vec<String> = [
            &self.gocardless.0,
            &self.paystack.0,
            &self.flutterwave.0,
            &self.payqi.0,
        ]
        .into_iter()
        .filter(|api| api.token.is_none())
        .map(Api::token_var)
        .collect();
        if !self.bank.is_configured() {
            missing.push(crate::bank_api::SECRET_VARS.to_owned());
        }
        missing
    }

    /// Whether `provider`'s API has a token (the reconciler asks only those).
    pub fn is_configured(&self, provider: &str) -> bool {
        match provider {
            "gocardless" => self.gocardless.is_configured(),
            "paystack" => self.paystack.0.token.is_some(),
            "flutterwave" => self.flutterwave.0.token.is_some(),
            "payqi" => self.payqi.0.token.is_some(),
            _ => false,
        }
    }

    /// The status of a payment as its gateway reports it now (reconciliation), by the
    /// payment's `external_id` (see DESIGN.md, "Data").
    pub async fn payment_status(
        &self,
        provider: &str,
        external_id: &str,
    ) -> Result<RemotePayment, GatewayError> {
        match provider {
            "gocardless" => self
                .gocardless
                .payment(external_id)
                .await
                .map(|p| p.into_remote(external_id)),
            "paystack" => self.paystack.verify(external_id).await,
            "flutterwave" => self.flutterwave.verify_by_reference(external_id).await,
            "payqi" => self.payqi.payment(external_id).await,
            other => Err(GatewayError::Permanent(format!(
                "no API client for provider {other:?}"
            ))),
        }
    }
}

/// A payment as a gateway reports it, normalized: `status` is one of payhook's payment statuses
/// (`None` when the gateway's status has no equivalent yet, e.g. an abandoned Paystack
/// checkout), amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePayment {
    pub external_id: String,
    pub gateway_status: String,
    pub status: Option<&'static str>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    /// The gateway's own id of the payment (or transaction), if it has one besides external_id.
    pub gateway_id: Option<String>,
}

pub(crate) fn percent(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------- GoCardless

#[derive(Debug, Clone)]
pub struct GoCardlessApi(Api);

/// `GET /payments/{id}` → `payments`.
#[derive(Debug, Clone, Deserialize)]
pub struct GcPayment {
    pub id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub charge_date: Option<String>,
    pub reference: Option<String>,
    #[serde(default)]
    pub links: GcPaymentLinks,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GcPaymentLinks {
    pub mandate: Option<String>,
}

/// `GET /mandates/{id}` → `mandates`.
#[derive(Debug, Clone, Deserialize)]
pub struct GcMandate {
    pub id: Option<String>,
    pub created_at: Option<String>,
    pub links: GcMandateLinks,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcMandateLinks {
    pub customer: String,
}

/// `GET /customers/{id}` → `customers`. Personal data: never logged.
#[derive(Clone, Default, Deserialize)]
pub struct GcCustomer {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub company_name: Option<String>,
    pub email: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
}

impl std::fmt::Debug for GcCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GcCustomer { .. }")
    }
}

impl GcCustomer {
    /// The company name, else given + family name.
    pub fn display_name(&self) -> Option<String> {
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        nonempty(&self.company_name).or_else(|| {
            let parts: Vec<String> = [nonempty(&self.given_name), nonempty(&self.family_name)]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
    }
}

#[derive(Deserialize)]
struct PaymentsEnvelope {
    payments: GcPayment,
}
#[derive(Deserialize)]
struct MandatesEnvelope {
    mandates: GcMandate,
}
#[derive(Deserialize)]
struct CustomersEnvelope {
    customers: GcCustomer,
}

impl GoCardlessApi {
    /// Whether `GOCARDLESS_API_TOKEN` is set: without it no call is made.
    pub fn is_configured(&self) -> bool {
        self.0.token.is_some()
    }

    pub async fn payment(&self, id: &str) -> Result<GcPayment, GatewayError> {
        let e: PaymentsEnvelope = self
            .0
            .call(reqwest::Method::GET, &format!("/payments/{}", percent(id)))
            .await?;
        Ok(e.payments)
    }

    pub async fn mandate(&self, id: &str) -> Result<GcMandate, GatewayError> {
        let e: MandatesEnvelope = self
            .0
            .call(reqwest::Method::GET, &format!("/mandates/{}", percent(id)))
            .await?;
        Ok(e.mandates)
    }

    pub async fn customer(&self, id: &str) -> Result<GcCustomer, GatewayError> {
        let e: CustomersEnvelope = self
            .0
            .call(reqwest::Method::GET, &format!("/customers/{}", percent(id)))
            .await?;
        Ok(e.customers)
    }

    /// `POST /payments/{id}/actions/retry`: asks GoCardless to collect a failed payment again.
    pub async fn retry_payment(&self, id: &str) -> Result<(), GatewayError> {
        self.0
            .call_raw(
                reqwest::Method::POST,
                &format!("/payments/{}/actions/retry", percent(id)),
            )
            .await
            .map(drop)
    }
}

impl GcPayment {
    fn into_remote(self, external_id: &str) -> RemotePayment {
        let status = match self.status.as_str() {
            "pending_customer_approval" | "pending_submission" => Some("pending"),
            "submitted" => Some("submitted"),
            "confirmed" => Some("completed"),
            "paid_out" => Some("paid_out"),
            "failed" => Some("failed"),
            "cancelled" | "customer_approval_denied" => Some("cancelled"),
            "charged_back" => Some("charged_back"),
            _ => None,
        };
        RemotePayment {
            external_id: external_id.to_owned(),
            gateway_status: self.status,
            status,
            amount_minor: Some(self.amount),
            currency: Some(self.currency),
            gateway_id: self.id,
        }
    }
}

// ------------------------------------------------------------------------------------ Paystack

#[derive(Debug, Clone)]
pub struct PaystackApi(Api);

impl PaystackApi {
    /// `GET /transaction/verify/{reference}`; amounts are minor units.
    pub async fn verify(&self, reference: &str) -> Result<RemotePayment, GatewayError> {
        let path = format!("/transaction/verify/{}", percent(reference));
        let answer: Value = self.0.call(reqwest::Method::GET, &path).await?;
        let bad = |what: &str| GatewayError::Permanent(format!("paystack GET {path}: {what}"));
        if answer.get("status") != Some(&Value::Bool(true)) {
            return Err(bad("status is not true"));
        }
        let data = answer.get("data").ok_or_else(|| bad("no data"))?;
        let gateway_status = str_field(data, "status").ok_or_else(|| bad("no data.status"))?;
        let status = match gateway_status.as_str() {
            "success" => Some("completed"),
            "failed" => Some("failed"),
            "reversed" => Some("refunded"),
            "ongoing" | "pending" | "processing" | "queued" => Some("pending"),
            _ => None,
        };
        let amount_minor = match data.get("amount") {
            None | Some(Value::Null) => None,
            Some(v) => Some(money::minor_units(v).map_err(|e| bad(&format!("data.amount: {e}")))?),
        };
        Ok(RemotePayment {
            external_id: reference.to_owned(),
            gateway_status,
            status,
            amount_minor,
            currency: str_field(data, "currency"),
            gateway_id: id_field(data, "id"),
        })
    }
}

// --------------------------------------------------------------------------------- Flutterwave

#[derive(Debug, Clone)]
pub struct FlutterwaveApi(Api);

impl FlutterwaveApi {
    /// `GET /v3/transactions/verify_by_reference?tx_ref=`; amounts are major units, converted
    /// exactly from the answer's text.
    pub async fn verify_by_reference(&self, tx_ref: &str) -> Result<RemotePayment, GatewayError> {
        let path = format!(
            "/v3/transactions/verify_by_reference?tx_ref={}",
            percent(tx_ref)
        );
        let body = self.0.call_raw(reqwest::Method::GET, &path).await?;
        let what = "flutterwave GET /v3/transactions/verify_by_reference";
        let bad = |m: &str| GatewayError::Permanent(format!("{what}: {m}"));
        let text = std::str::from_utf8(&body).map_err(|_| bad("answer is not UTF-8"))?;
        let answer: Value = serde_json::from_str(text).map_err(|_| bad("answer is not JSON"))?;
        if answer.get("status").and_then(Value::as_str) != Some("success") {
            return Err(bad("status is not success"));
        }
        let data = answer.get("data").ok_or_else(|| bad("no data"))?;
        let gateway_status = str_field(data, "status").ok_or_else(|| bad("no data.status"))?;
        let status = match gateway_status.as_str() {
            "successful" => Some("completed"),
            "failed" => Some("failed"),
            "pending" => Some("pending"),
            _ => None,
        };
        let currency = str_field(data, "currency");
        let amount_minor =
            major_amount(text, &["data", "amount"], currency.as_deref()).map_err(|e| bad(&e))?;
        Ok(RemotePayment {
            external_id: tx_ref.to_owned(),
            gateway_status,
            status,
            amount_minor,
            currency,
            gateway_id: id_field(data, "id"),
        })
    }
}

// --------------------------------------------------------------------------------------- PayQI

#[derive(Debug, Clone)]
pub struct PayQiApi(Api);

impl PayQiApi {
    /// `GET /v1/payments/{id}`; amounts are major units.
    pub async fn payment(&self, id: &str) -> Result<RemotePayment, GatewayError> {
        let path = format!("/v1/payments/{}", percent(id));
        let body = self.0.call_raw(reqwest::Method::GET, &path).await?;
        let bad = |m: &str| GatewayError::Permanent(format!("payqi GET /v1/payments/{{id}}: {m}"));
        let text = std::str::from_utf8(&body).map_err(|_| bad("answer is not UTF-8"))?;
        let answer: Value = serde_json::from_str(text).map_err(|_| bad("answer is not JSON"))?;
        let gateway_status = str_field(&answer, "status").ok_or_else(|| bad("no status"))?;
        let status = match gateway_status.as_str() {
            "created" | "pending" => Some("pending"),
            "completed" => Some("completed"),
            "failed" => Some("failed"),
            "expired" => Some("expired"),
            _ => None,
        };
        let currency = str_field(&answer, "currency");
        let amount_minor =
            major_amount(text, &["amount"], currency.as_deref()).map_err(|e| bad(&e))?;
        Ok(RemotePayment {
            external_id: id.to_owned(),
            gateway_status,
            status,
            amount_minor,
            currency,
            gateway_id: id_field(&answer, "id"),
        })
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn id_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A major-unit amount at `path` of the JSON text, in minor units of `currency`.
fn major_amount(text: &str, path: &[&str], currency: Option<&str>) -> Result<Option<i64>, String> {
    let Some(raw) = money::raw_scalar_at(text, path).map_err(|e| format!("amount: {e}"))? else {
        return Ok(None);
    };
    let currency = currency.ok_or("amount without currency")?;
    money::to_minor(&raw, currency)
        .map(Some)
        .map_err(|e| format!("amount: {e}"))
}
