//! HTTPS with rustls, and GoCardless's client certificates: with `INGEST_CLIENT_CA` set, a
//! GoCardless delivery needs a certificate from that CA (else 403); the other gateways send
//! none and are unaffected.

use std::path::{Path, PathBuf};

use payhook_shared::testing::{unique_name, TestEnv};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::helpers::*;

/// A CA, a server certificate for localhost, and a client certificate, all as PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_identity: String,
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = ca();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_identity: client_identity(&ca),
    }
}

/// A client certificate signed by `ca`, with its key, as one PEM (reqwest's Identity).
fn client_identity(ca: &CertifiedIssuer<'static, KeyPair>) -> String {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["gocardless-client".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

async fn tls_app(pki: &Pki, require_client_ca: bool) -> TestApp {
    let dir = std::env::temp_dir().join(unique_name("payhook_tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let env = TestEnv::new();
    let mut config = test_config(&env);
    config.ingest.ingest_tls_cert = Some(write(&dir, "server.pem", &pki.server_cert));
    config.ingest.ingest_tls_key = Some(write(&dir, "server.key", &pki.server_key));
    if require_client_ca {
        config.ingest.ingest_client_ca = Some(write(&dir, "ca.pem", &pki.ca_pem));
    }
    spawn_app_with(env, config).await
}

fn client(pki: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn send_with(app: &TestApp, client: &reqwest::Client, gw: Gateway) -> u16 {
    let body = gw.sample("ev1");
    app.post_with(
        client,
        gw.name(),
        body.clone(),
        &gw.sign(NEW_SECRET, body.as_bytes()),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn webhooks_are_served_over_https() {
    let pki = pki();
    let app = tls_app(&pki, false).await;
    assert_eq!(
        send_with(&app, &client(&pki, None), Gateway::GoCardless).await,
        204
    );
    assert_eq!(app.count("webhook_events").await, 1);
}

#[tokio::test]
async fn gocardless_with_a_client_certificate_from_the_ca_is_accepted() {
    let pki = pki();
    let app = tls_app(&pki, true).await;
    let client = client(&pki, Some(&pki.client_identity));
    assert_eq!(send_with(&app, &client, Gateway::GoCardless).await, 204);
    assert_eq!(app.count("webhook_events").await, 1);
}

#[tokio::test]
async fn gocardless_without_a_client_certificate_is_forbidden() {
    let pki = pki();
    let app = tls_app(&pki, true).await;
    assert_eq!(
        send_with(&app, &client(&pki, None), Gateway::GoCardless).await,
        403
    );
    app.assert_nothing_persisted().await;
}

#[tokio::test]
async fn gocardless_with_a_certificate_from_another_ca_is_forbidden() {
    let pki = pki();
    let app = tls_app(&pki, true).await;
    let stranger = client_identity(&ca());
    assert_eq!(
        send_with(&app, &client(&pki, Some(&stranger)), Gateway::GoCardless).await,
        403
    );
    app.assert_nothing_persisted().await;
}

#[tokio::test]
async fn gateways_that_send_no_client_certificate_are_unaffected_by_the_client_ca() {
    let pki = pki();
    let app = tls_app(&pki, true).await;
    let client = client(&pki, None);
    for gw in [Gateway::Paystack, Gateway::Flutterwave, Gateway::PayQi] {
        assert_eq!(send_with(&app, &client, gw).await, gw.accepted(), "{gw:?}");
    }
    assert_eq!(app.count("webhook_events").await, 3);
}
