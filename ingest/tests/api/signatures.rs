//! Signature checks, per gateway: the right signature (with either secret of a rotation) is
//! accepted; anything else is refused with the gateway's status and nothing is stored.

use crate::helpers::*;

/// Sends `body` with `headers` and asserts the refusal: status, JSON error, nothing stored.
async fn assert_refused(gw: Gateway, body: &str, headers: Vec<(String, String)>) {
    let app = spawn_app().await;
    let res = app.post(gw.name(), body.to_owned(), &headers).await;
    assert_eq!(res.status().as_u16(), gw.rejected(), "{gw:?}");
    let err: serde_json::Value = res.json().await.unwrap();
    assert!(
        err["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{err}"
    );
    app.assert_nothing_persisted().await;
}

async fn assert_accepted(gw: Gateway, body: &str, headers: Vec<(String, String)>) {
    let app = spawn_app().await;
    let res = app.post(gw.name(), body.to_owned(), &headers).await;
    assert_eq!(
        res.status().as_u16(),
        gw.accepted(),
        "{gw:?}: {:?}",
        res.text().await
    );
    assert_eq!(app.count("webhook_deliveries").await, 1);
    assert_eq!(app.count("webhook_events").await, 1);
}

/// `headers` with the signature header's value replaced by `f(value)`.
fn with_signature(
    gw: Gateway,
    body: &str,
    f: impl Fn(String) -> Option<String>,
) -> Vec<(String, String)> {
    gw.sign(NEW_SECRET, body.as_bytes())
        .into_iter()
        .filter_map(|(k, v)| {
            if k == gw.signature_header() {
                f(v).map(|v| (k, v))
            } else {
                Some((k, v))
            }
        })
        .collect()
}

macro_rules! every_gateway {
    ($($module:ident => $gw:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            const GW: Gateway = $gw;

            #[tokio::test]
            async fn a_valid_signature_is_accepted() {
                let body = GW.sample("ev1");
                assert_accepted(GW, &body, GW.sign(NEW_SECRET, body.as_bytes())).await;
            }

            #[tokio::test]
            async fn a_signature_made_with_the_previous_secret_is_accepted() {
                let body = GW.sample("ev1");
                assert_accepted(GW, &body, GW.sign(OLD_SECRET, body.as_bytes())).await;
            }

            #[tokio::test]
            async fn a_signature_made_with_an_unknown_secret_is_refused() {
                let body = GW.sample("ev1");
                assert_refused(GW, &body, GW.sign("not-our-secret-at-all", body.as_bytes())).await;
            }

            #[tokio::test]
            async fn a_missing_signature_header_is_refused() {
                let body = GW.sample("ev1");
                assert_refused(GW, &body, with_signature(GW, &body, |_| None)).await;
            }

            #[tokio::test]
            async fn an_empty_signature_header_is_refused() {
                let body = GW.sample("ev1");
                assert_refused(GW, &body, with_signature(GW, &body, |_| Some(String::new()))).await;
            }

            #[tokio::test]
            async fn a_truncated_signature_is_refused() {
                let body = GW.sample("ev1");
                let headers = with_signature(GW, &body, |s| Some(s[..s.len() / 2].to_owned()));
                assert_refused(GW, &body, headers).await;
            }
        }
    )*};
}

every_gateway! {
    gocardless => Gateway::GoCardless,
    paystack => Gateway::Paystack,
    flutterwave => Gateway::Flutterwave,
    payqi => Gateway::PayQi,
}

/// The gateways whose signature is a hex HMAC of the body (Flutterwave's is the secret itself).
macro_rules! hex_gateways {
    ($($module:ident => $gw:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            const GW: Gateway = $gw;

            #[tokio::test]
            async fn a_signature_of_another_body_is_refused() {
                let body = GW.sample("ev1");
                let headers = GW.sign(NEW_SECRET, body.as_bytes());
                assert_refused(GW, &body.replace("ev1", "ev2"), headers).await;
            }

            #[tokio::test]
            async fn an_upper_case_hex_signature_is_accepted() {
                let body = GW.sample("ev1");
                assert_accepted(GW, &body, with_signature(GW, &body, |s| Some(s.to_uppercase()))).await;
            }

            #[tokio::test]
            async fn an_odd_length_signature_is_refused() {
                let body = GW.sample("ev1");
                let headers = with_signature(GW, &body, |s| Some(s[..s.len() - 1].to_owned()));
                assert_refused(GW, &body, headers).await;
            }

            #[tokio::test]
            async fn a_non_hex_signature_is_refused() {
                let body = GW.sample("ev1");
                let headers = with_signature(GW, &body, |s| Some(s.replace(|c: char| c.is_ascii_digit(), "z")));
                assert_refused(GW, &body, headers).await;
            }

            #[tokio::test]
            async fn the_right_signature_with_one_byte_appended_is_refused() {
                let body = GW.sample("ev1");
                let headers = with_signature(GW, &body, |s| Some(format!("{s}00")));
                assert_refused(GW, &body, headers).await;
            }
        }
    )*};
}

hex_gateways! {
    gocardless_hex => Gateway::GoCardless,
    paystack_hex => Gateway::Paystack,
    payqi_hex => Gateway::PayQi,
}

#[tokio::test]
async fn flutterwave_refuses_the_secret_hash_in_another_case() {
    let body = Gateway::Flutterwave.sample("ev1");
    let headers = with_signature(Gateway::Flutterwave, &body, |s| Some(s.to_uppercase()));
    assert_refused(Gateway::Flutterwave, &body, headers).await;
}

mod payqi_timestamp {
    use super::*;

    fn headers_at(body: &str, ts: Option<String>) -> Vec<(String, String)> {
        let mut h = vec![(
            "X-PayQI-Signature".to_owned(),
            Gateway::PayQi.signature(NEW_SECRET, body.as_bytes()),
        )];
        if let Some(ts) = ts {
            h.push(("X-PayQI-Timestamp".to_owned(), ts));
        }
        h
    }

    #[tokio::test]
    async fn a_timestamp_inside_the_window_is_accepted() {
        let body = Gateway::PayQi.sample("ev1");
        assert_accepted(
            Gateway::PayQi,
            &body,
            headers_at(&body, Some((now() - 290).to_string())),
        )
        .await;
    }

    #[tokio::test]
    async fn a_timestamp_older_than_the_window_is_refused() {
        let body = Gateway::PayQi.sample("ev1");
        assert_refused(
            Gateway::PayQi,
            &body,
            headers_at(&body, Some((now() - 310).to_string())),
        )
        .await;
    }

    #[tokio::test]
    async fn a_timestamp_in_the_future_beyond_the_window_is_refused() {
        let body = Gateway::PayQi.sample("ev1");
        assert_refused(
            Gateway::PayQi,
            &body,
            headers_at(&body, Some((now() + 310).to_string())),
        )
        .await;
    }

    #[tokio::test]
    async fn a_missing_timestamp_is_refused() {
        let body = Gateway::PayQi.sample("ev1");
        assert_refused(Gateway::PayQi, &body, headers_at(&body, None)).await;
    }

    #[tokio::test]
    async fn a_timestamp_that_is_not_a_number_is_refused() {
        let body = Gateway::PayQi.sample("ev1");
        assert_refused(
            Gateway::PayQi,
            &body,
            headers_at(&body, Some("yesterday".into())),
        )
        .await;
    }
}
