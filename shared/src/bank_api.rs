//! GoCardless's Bank Account Data API, for the bank transactions whose webhook event carries
//! only ids (DESIGN.md, "Bank data"): `GET /api/v2/accounts/{account}/transactions/`, then the
//! booked transaction with the event's id. Base URL from `GOCARDLESS_BANK_API_URL`; the secret
//! id and key from `GOCARDLESS_BANK_SECRET_ID` / `GOCARDLESS_BANK_SECRET_KEY` (env only).
//!
//! Unlike the gateways' APIs in [`crate::gateway`], this one is scarce, so the client spares it:
//! - Token: the secrets buy an access token (`POST /api/v2/token/new/`, itself limited to 100
//!   an hour per company), kept and shared by every clone until shortly before it expires. A 401
//!   on a data call (a token revoked early) drops it and retries that call once with a new one.
//! - Pacing: at most one call every `BANK_API_INTERVAL` from this process. The account
//!   endpoints allow 100 calls a minute per company, and banks may allow as few as four
//!   successful transaction calls per account a day; waiting is cheaper than a 429.
//! - Cache: an account's booked transactions are reused for `BANK_API_CACHE`, so that a burst of
//!   `transaction.created` events for one account (banks book in batches) costs one call. A
//!   transaction missing from a cached list older than the pacing interval is looked up again
//!   once (it may have been booked since); one missing from a fresher list is "not booked yet"
//!   and the event retries later, so a flood of events for new transactions cannot hammer the
//!   API either.
//!
//! Errors are classified with [`crate::gateway`]'s functions: 5xx, 429, 408, timeout or
//! connection failure is [`GatewayError::Transient`]; 404 is [`GatewayError::NotFound`];
//! another refusal or an answer we cannot read is [`GatewayError::Permanent`] (so are refused
//! secrets); unset secrets are [`GatewayError::NotConfigured`] (no call made). Messages carry
//! the method, path and status, never a secret, a token or a response body: transactions name
//! their debtors. The cached lists stay in memory only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::token_from_env;
use crate::gateway::{answer_body, percent, refusal, send, GatewayError};

pub const SECRET_ID_VAR: &str = "GOCARDLESS_BANK_SECRET_ID";
pub const SECRET_KEY_VAR: &str = "GOCARDLESS_BANK_SECRET_KEY";
/// Both secret variables, as messages and `Gateways::missing_tokens` name them.
pub const SECRET_VARS: &str = "GOCARDLESS_BANK_SECRET_ID and GOCARDLESS_BANK_SECRET_KEY";

/// How messages name this API.
const NAME: &str = "gocardless bank data";
const TOKEN_PATH: &str = "/api/v2/token/new/";
/// A token is renewed this long before it expires (at most half its life), so that a call
/// never leaves with a token that runs out on the way.
const RENEW_EARLY: Duration = Duration::from_secs(30);
/// An `access_expires` beyond this is read as this (the API gives a day).
const LONGEST_TOKEN: Duration = Duration::from_secs(30 * 86400);

/// The secret id and key from the environment; `None` unless both are set.
pub(crate) fn secrets_from_env() -> Option<(String, String)> {
    Some((
        token_from_env(SECRET_ID_VAR)?,
        token_from_env(SECRET_KEY_VAR)?,
    ))
}

/// The Bank Account Data API client. Clones share the token, the pacing and the cache.
#[derive(Clone)]
pub struct BankApi {
    client: reqwest::Client,
    base: String,
    secrets: Option<Arc<Secrets>>,
    interval: Duration,
    cache_for: Duration,
    shared: Arc<Shared>,
}

/// Never printed: no Debug.
struct Secrets {
    id: String,
    key: String,
}

struct Shared {
    access: Mutex<Option<Access>>,
    /// When the next call may leave.
    next_call: Mutex<Instant>,
    /// One slot per account: its lock is held while the list is fetched, so that concurrent
    /// lookups for one account wait for that answer instead of asking again.
    accounts: StdMutex<HashMap<String, Arc<Mutex<Option<Booked>>>>>,
}

struct Access {
    token: String,
    renew_at: Instant,
}

/// One account's booked transactions by `transactionId`.
struct Booked {
    fetched_at: Instant,
    by_id: HashMap<String, Value>,
}

/// `POST /api/v2/token/new/`; the refresh fields are not used (a new token costs one call
/// as a refresh does, and needs no second expiry to track).
#[derive(Deserialize)]
struct TokenAnswer {
    access: String,
    access_expires: u64,
}

#[derive(Deserialize)]
struct TransactionsAnswer {
    transactions: Lists,
}

#[derive(Deserialize)]
struct Lists {
    #[serde(default)]
    booked: Vec<Value>,
}

impl std::fmt::Debug for BankApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets or the token.
        f.debug_struct("BankApi")
            .field("base", &self.base)
            .field("configured", &self.is_configured())
            .field("interval", &self.interval)
            .field("cache", &self.cache_for)
            .finish()
    }
}

impl BankApi {
    /// A client of the API at `base`. `secrets` is (secret id, secret key), `None` when not
    /// configured; [`crate::gateway::Gateways::from_settings`] reads them from the environment,
    /// tests pass their own. `interval`: least time between two calls; `cache`: how long one
    /// account's transaction list is reused (zero: never).
    pub fn new(
        client: reqwest::Client,
        base: &str,
        secrets: Option<(String, String)>,
        interval: Duration,
        cache: Duration,
    ) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            secrets: secrets.map(|(id, key)| Arc::new(Secrets { id, key })),
            interval,
            cache_for: cache,
            shared: Arc::new(Shared {
                access: Mutex::new(None),
                next_call: Mutex::new(Instant::now()),
                accounts: StdMutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether both secrets are set: without them no call is made.
    pub fn is_configured(&self) -> bool {
        self.secrets.is_some()
    }

    /// The booked transaction `transaction_id` of bank account `account`, as the API gives it
    /// (`transactionId`, `bookingDate`, `transactionAmount` {`amount`, `currency`},
    /// `remittanceInformationUnstructured`, `debtorName`, ...). Pending or not listed yet:
    /// [`GatewayError::Transient`] (retry later). May wait for its turn (pacing) and answer
    /// from the cache.
    pub async fn booked_transaction(
        &self,
        account: &str,
        transaction_id: &str,
    ) -> Result<Value, GatewayError> {
        let path = format!("/api/v2/accounts/{}/transactions/", percent(account));
        let what = format!("{NAME} GET {path}");
        let Some(secrets) = self.secrets.as_deref() else {
            return Err(GatewayError::NotConfigured(format!(
                "{what}: {SECRET_VARS} are not set (set them and replay the event)"
            )));
        };
        let not_booked = || {
            GatewayError::Transient(format!(
                "{what}: transaction {transaction_id} not booked yet"
            ))
        };
        let slot = self.account_slot(account);
        let mut cached = slot.lock().await;
        if let Some(list) = cached
            .as_ref()
            .filter(|list| list.fetched_at.elapsed() < self.cache_for)
        {
            if let Some(found) = list.by_id.get(transaction_id) {
                return Ok(found.clone());
            }
            if list.fetched_at.elapsed() < self.interval {
                // As fresh as pacing allows: asking again now would likely tell the same.
                return Err(not_booked());
            }
        }
        let list = self.fetch(secrets, &what, &path).await?;
        let found = list.by_id.get(transaction_id).cloned();
        *cached = Some(list);
        found.ok_or_else(not_booked)
    }

    /// The cache slot of `account`, created if need be.
    fn account_slot(&self, account: &str) -> Arc<Mutex<Option<Booked>>> {
        let mut accounts = self
            .shared
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = accounts.get(account) {
            return slot.clone();
        }
        // Lists past their use go before a new account comes in: the map stays as small as
        // the accounts in use, and debtors' names are not kept longer than needed.
        let keep = self.cache_for.max(self.interval);
        accounts.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |list| {
                    list.as_ref()
                        .is_some_and(|list| list.fetched_at.elapsed() < keep)
                })
        });
        accounts.entry(account.to_owned()).or_default().clone()
    }

    /// The account's booked transactions, asked now.
    async fn fetch(
        &self,
        secrets: &Secrets,
        what: &str,
        path: &str,
    ) -> Result<Booked, GatewayError> {
        let url = format!("{}{path}", self.base);
        let token = self.access(secrets).await?;
        let mut resp = self
            .paced_send(what, self.client.get(&url).bearer_auth(&token))
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // Revoked or expired before its time: one new token, one more try.
            self.forget(&token).await;
            let token = self.access(secrets).await?;
            resp = self
                .paced_send(what, self.client.get(&url).bearer_auth(&token))
                .await?;
        }
        let status = resp.status();
        if !status.is_success() {
            return Err(refusal(what, status));
        }
        let body = answer_body(what, resp).await?;
        // Not serde's message: it may quote the body.
        let answer: TransactionsAnswer =
            serde_json::from_slice(&body).map_err(|_| unreadable(what))?;
        let by_id = answer
            .transactions
            .booked
            .into_iter()
            .filter_map(|tx| Some((tx.get("transactionId")?.as_str()?.to_owned(), tx)))
            .collect();
        Ok(Booked {
            fetched_at: Instant::now(),
            by_id,
        })
    }

    /// The access token, a new one if there is none or it is about to expire.
    async fn access(&self, secrets: &Secrets) -> Result<String, GatewayError> {
        // Held while asking: concurrent calls wait for that token rather than each buying one.
        let mut access = self.shared.access.lock().await;
        if let Some(current) = access.as_ref().filter(|a| Instant::now() < a.renew_at) {
            return Ok(current.token.clone());
        }
        let new = self.new_token(secrets).await?;
        let token = new.token.clone();
        *access = Some(new);
        Ok(token)
    }

    /// Drops `token` unless another call has already replaced it.
    async fn forget(&self, token: &str) {
        let mut access = self.shared.access.lock().await;
        if access.as_ref().is_some_and(|a| a.token == token) {
            *access = None;
        }
    }

    async fn new_token(&self, secrets: &Secrets) -> Result<Access, GatewayError> {
        let what = format!("{NAME} POST {TOKEN_PATH}");
        let req = self
            .client
            .post(format!("{}{TOKEN_PATH}", self.base))
            .json(&serde_json::json!({"secret_id": secrets.id, "secret_key": secrets.key}));
        self.pace().await;
        // The token's life counts from before the call: it may already have begun.
        let asked_at = Instant::now();
        let resp = send(&what, req).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(GatewayError::Permanent(format!(
                "{what}: HTTP {}: the secret id and key were refused (check {SECRET_VARS})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(match refusal(&what, status) {
                // Not an answer about the event's ids: the base URL is wrong.
                GatewayError::NotFound(msg) => GatewayError::Permanent(msg),
                other => other,
            });
        }
        let body = answer_body(&what, resp).await?;
        // Not serde's message: it may quote the token.
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| unreadable(&what))?;
        let life = Duration::from_secs(answer.access_expires).min(LONGEST_TOKEN);
        Ok(Access {
            token: answer.access,
            renew_at: asked_at + life - RENEW_EARLY.min(life / 2),
        })
    }

    /// Waits for this process's turn to call (see the module doc), then sends.
    async fn paced_send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GatewayError> {
        self.pace().await;
        send(what, req).await
    }

    async fn pace(&self) {
        // Held while waiting: callers leave one by one, in the order they came.
        let mut next = self.shared.next_call.lock().await;
        tokio::time::sleep_until((*next).into()).await;
        *next = Instant::now() + self.interval;
    }
}

fn unreadable(what: &str) -> GatewayError {
    GatewayError::Permanent(format!("{what}: unreadable answer"))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const ID: &str = "secret-id-1234";
    const KEY: &str = "secret-key-5678";
    const ACCOUNT: &str = "7e944232-bda9-40bc-b784-660c7ab5fe78";
    const DATA_PATH: &str = "/api/v2/accounts/7e944232-bda9-40bc-b784-660c7ab5fe78/transactions/";

    struct Call {
        path: String,
        auth: Option<String>,
        body: String,
        at: Instant,
    }

    /// The API on loopback: canned answers in order per endpoint (a default once they run
    /// out: token `tok-<n>` for the n-th token call, booked `tx-1` and pending `tx-2`), every
    /// call recorded.
    #[derive(Clone, Default)]
    struct Fake {
        base: String,
        calls: Arc<StdMutex<Vec<Call>>>,
        tokens: Arc<StdMutex<VecDeque<(u16, String)>>>,
        lists: Arc<StdMutex<VecDeque<(u16, String)>>>,
    }

    impl Fake {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let fake = Fake {
                base: format!("http://{}", listener.local_addr().unwrap()),
                ..Default::default()
            };
            let server = fake.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let server = server.clone();
                    tokio::spawn(async move { server.serve(stream).await });
                }
            });
            fake
        }

        async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let (mut len, mut auth) = (0, None);
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).await?;
                let Some((name, value)) = header.trim_end().split_once(':') else {
                    break;
                };
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => len = value.trim().parse().unwrap(),
                    "authorization" => auth = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await?;
            let (status, answer) = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    path: path.clone(),
                    auth,
                    body: String::from_utf8(body).unwrap(),
                    at: Instant::now(),
                });
                if path == TOKEN_PATH {
                    let n = calls.iter().filter(|c| c.path == TOKEN_PATH).count();
                    self.tokens.lock().unwrap().pop_front().unwrap_or_else(|| {
                        let token = json!({"access": format!("tok-{n}"), "access_expires": 86400,
                                           "refresh": "refresh-token", "refresh_expires": 2592000});
                        (200, token.to_string())
                    })
                } else {
                    let default = || (200, list(&["tx-1"], &["tx-2"]));
                    self.lists
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(default)
                }
            };
            let mut stream = reader.into_inner();
            let head = format!(
                "HTTP/1.1 {status} Canned\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        }

        fn token(&self, status: u16, answer: Value) {
            let answer = answer.to_string();
            self.tokens.lock().unwrap().push_back((status, answer));
        }

        fn list(&self, status: u16, answer: impl Into<String>) {
            self.lists
                .lock()
                .unwrap()
                .push_back((status, answer.into()));
        }

        fn token_calls(&self) -> usize {
            let calls = self.calls.lock().unwrap();
            calls.iter().filter(|c| c.path == TOKEN_PATH).count()
        }

        /// The data calls' paths and bearer tokens.
        fn data_calls(&self) -> Vec<(String, String)> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .filter(|c| c.path != TOKEN_PATH)
                .map(|c| (c.path.clone(), c.auth.clone().unwrap_or_default()))
                .collect()
        }

        fn api(&self, interval: Duration, cache: Duration) -> BankApi {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .unwrap();
            let secrets = Some((ID.to_owned(), KEY.to_owned()));
            BankApi::new(client, &self.base, secrets, interval, cache)
        }

        /// No pacing, no cache: every lookup is one data call.
        fn plain_api(&self) -> BankApi {
            self.api(Duration::ZERO, Duration::ZERO)
        }
    }

    fn tx(id: &str) -> Value {
        json!({
            "transactionId": id,
            "bookingDate": "2024-05-02",
            "transactionAmount": {"amount": "12.50", "currency": "EUR"},
            "remittanceInformationUnstructured": "PAY-42 May",
            "debtorName": "Jane Debtor",
        })
    }

    fn list(booked: &[&str], pending: &[&str]) -> String {
        let booked: Vec<Value> = booked.iter().map(|id| tx(id)).collect();
        let pending: Vec<Value> = pending.iter().map(|id| tx(id)).collect();
        json!({"transactions": {"booked": booked, "pending": pending}}).to_string()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[tokio::test]
    async fn finds_the_booked_transaction_with_the_secrets_token() {
        let fake = Fake::start().await;
        let found = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap();
        assert_eq!(found, tx("tx-1"));
        let token_body: Value = {
            let calls = fake.calls.lock().unwrap();
            serde_json::from_str(&calls[0].body).unwrap()
        };
        assert_eq!(token_body, json!({"secret_id": ID, "secret_key": KEY}));
        assert_eq!(fake.data_calls(), [(DATA_PATH.to_owned(), bearer("tok-1"))]);
    }

    #[tokio::test]
    async fn one_token_serves_two_calls_and_every_clone() {
        let fake = Fake::start().await;
        let api = fake.plain_api();
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        api.clone()
            .booked_transaction("other-account", "tx-1")
            .await
            .unwrap();
        assert_eq!(fake.token_calls(), 1);
        let auths: Vec<String> = fake.data_calls().into_iter().map(|c| c.1).collect();
        assert_eq!(auths, [bearer("tok-1"), bearer("tok-1")]);
    }

    #[tokio::test]
    async fn a_token_is_renewed_before_it_expires() {
        let fake = Fake::start().await;
        // One second of life: renewed after half of it.
        fake.token(200, json!({"access": "short", "access_expires": 1}));
        let api = fake.plain_api();
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        assert_eq!(fake.token_calls(), 2);
        let auths: Vec<String> = fake.data_calls().into_iter().map(|c| c.1).collect();
        assert_eq!(auths, [bearer("short"), bearer("tok-2")]);
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_and_the_call_tried_once_more() {
        let fake = Fake::start().await;
        fake.list(401, r#"{"summary":"Invalid token"}"#);
        let found = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap();
        assert_eq!(found, tx("tx-1"));
        assert_eq!(fake.token_calls(), 2);
        let auths: Vec<String> = fake.data_calls().into_iter().map(|c| c.1).collect();
        assert_eq!(auths, [bearer("tok-1"), bearer("tok-2")]);

        // Refused again with the new token: no third try.
        let fake = Fake::start().await;
        fake.list(401, "{}");
        fake.list(401, "{}");
        let err = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Permanent(_)), "{err:?}");
        assert_eq!((fake.token_calls(), fake.data_calls().len()), (2, 2));
    }

    #[tokio::test]
    async fn a_pending_or_unknown_transaction_is_not_booked_yet() {
        let fake = Fake::start().await;
        let api = fake.plain_api();
        for id in ["tx-2", "tx-9"] {
            let err = api.booked_transaction(ACCOUNT, id).await.unwrap_err();
            let GatewayError::Transient(msg) = err else {
                panic!("{err:?}")
            };
            assert!(
                msg.contains(&format!("transaction {id} not booked yet")),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn refusals_are_classified_and_name_no_body() {
        let fake = Fake::start().await;
        let api = fake.plain_api();
        let personal = r#"{"detail":"Jane Debtor"}"#;
        for (status, body) in [
            (503, personal),
            (429, personal),
            (404, personal),
            (400, personal),
            (200, "<html>Jane Debtor"),
        ] {
            fake.list(status, body);
            let err = api.booked_transaction(ACCOUNT, "tx-1").await.unwrap_err();
            let msg = err.to_string();
            match status {
                503 | 429 => assert!(matches!(err, GatewayError::Transient(_)), "{err:?}"),
                404 => assert!(matches!(err, GatewayError::NotFound(_)), "{err:?}"),
                _ => assert!(matches!(err, GatewayError::Permanent(_)), "{err:?}"),
            }
            assert!(msg.contains(&format!("GET {DATA_PATH}")), "{msg}");
            if status != 200 {
                assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
            }
            assert!(!msg.contains("Jane") && !msg.contains("tok-"), "{msg}");
        }
        // Errors are not cached: the next lookup asks again.
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        assert_eq!(fake.data_calls().len(), 6);
    }

    #[tokio::test]
    async fn no_answer_at_all_is_transient() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let fake = Fake {
            base,
            ..Default::default()
        };
        let err = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Transient(_)), "{err:?}");
    }

    #[tokio::test]
    async fn refused_secrets_are_permanent_and_never_shown() {
        let fake = Fake::start().await;
        fake.token(
            401,
            json!({"summary": "Authentication failed", "detail": ID}),
        );
        let err = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap_err();
        let GatewayError::Permanent(msg) = &err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("POST /api/v2/token/new/: HTTP 401"), "{msg}");
        assert!(msg.contains("secret id and key were refused"), "{msg}");
        assert!(!msg.contains(ID) && !msg.contains(KEY), "{msg}");
        assert!(fake.data_calls().is_empty());

        // A token endpoint that is not there is the base URL's fault, not the account's.
        fake.token(404, json!({}));
        let err = fake
            .plain_api()
            .booked_transaction(ACCOUNT, "tx-1")
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Permanent(_)), "{err:?}");
    }

    #[tokio::test]
    async fn without_secrets_no_call_is_made() {
        let fake = Fake::start().await;
        let client = reqwest::Client::new();
        let api = BankApi::new(client, &fake.base, None, Duration::ZERO, Duration::ZERO);
        assert!(!api.is_configured() && fake.plain_api().is_configured());
        let err = api.booked_transaction(ACCOUNT, "tx-1").await.unwrap_err();
        let GatewayError::NotConfigured(msg) = &err else {
            panic!("{err:?}")
        };
        assert!(
            msg.contains(SECRET_ID_VAR) && msg.contains(SECRET_KEY_VAR),
            "{msg}"
        );
        assert!(msg.contains("set them and replay the event"), "{msg}");
        assert!(fake.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn one_call_serves_an_account_for_the_cache_window() {
        let fake = Fake::start().await;
        fake.list(200, list(&["tx-1", "tx-3"], &[]));
        let api = fake.api(Duration::ZERO, Duration::from_secs(60));
        let clone = api.clone();
        let (a, b) = tokio::join!(
            api.booked_transaction(ACCOUNT, "tx-1"),
            clone.booked_transaction(ACCOUNT, "tx-3"),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (tx("tx-1"), tx("tx-3")));
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        assert_eq!(fake.data_calls().len(), 1);
    }

    #[tokio::test]
    async fn a_transaction_missing_from_the_cache_is_asked_for_once_pacing_allows() {
        let fake = Fake::start().await;
        let interval = Duration::from_millis(300);
        let api = fake.api(interval, Duration::from_secs(60));
        fake.list(200, list(&["tx-1"], &[]));
        fake.list(200, list(&["tx-1", "tx-3"], &[]));
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        // The list is fresher than the interval: not asked again.
        let err = api.booked_transaction(ACCOUNT, "tx-3").await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(fake.data_calls().len(), 1);

        tokio::time::sleep(interval).await;
        let found = api.booked_transaction(ACCOUNT, "tx-3").await.unwrap();
        assert_eq!(found, tx("tx-3"));
        assert!(api.booked_transaction(ACCOUNT, "tx-9").await.is_err());
        assert_eq!(fake.data_calls().len(), 2);
    }

    #[tokio::test]
    async fn calls_leave_one_interval_apart_across_clones() {
        let fake = Fake::start().await;
        let interval = Duration::from_millis(200);
        let api = fake.api(interval, Duration::ZERO);
        let clone = api.clone();
        let (a, b) = tokio::join!(
            api.booked_transaction(ACCOUNT, "tx-1"),
            clone.booked_transaction("other-account", "tx-1"),
        );
        a.unwrap();
        b.unwrap();
        let calls = fake.calls.lock().unwrap();
        assert_eq!(calls.len(), 3, "one token, two data calls");
        for pair in calls.windows(2) {
            let gap = pair[1].at - pair[0].at;
            // Loopback jitter aside.
            assert!(gap >= interval - Duration::from_millis(20), "{gap:?}");
        }
    }

    #[tokio::test]
    async fn the_account_is_percent_encoded() {
        let fake = Fake::start().await;
        fake.plain_api()
            .booked_transaction("acc/1?x", "tx-1")
            .await
            .unwrap();
        let path = fake.data_calls()[0].0.clone();
        assert_eq!(path, "/api/v2/accounts/acc%2F1%3Fx/transactions/");
    }

    #[tokio::test]
    async fn debug_shows_neither_secrets_nor_token() {
        let fake = Fake::start().await;
        let api = fake.plain_api();
        api.booked_transaction(ACCOUNT, "tx-1").await.unwrap();
        let shown = format!("{api:?}");
        for hidden in [ID, KEY, "tok-1"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
        assert!(shown.contains(&fake.base), "{shown}");
    }
}
