//! HTTPS for the webhook listener, and GoCardless's client certificates.
//!
//! With a client CA, the handshake asks every client for a certificate but lets one without
//! (or with a foreign one) through: Paystack, Flutterwave and PayQI send none, and a
//! GoCardless delivery without the right one must get an HTTP 403, not a broken handshake.
//! The chain is then checked against the CA once per connection ([`on_connect`]) and the
//! verdict stored with the connection for the handler.

use std::any::Any;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use anyhow::{bail, Context};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// What a connection proved about its client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// A certificate chaining to the configured CA.
    Verified,
    /// None, or one the CA did not sign.
    Missing,
}

/// Builds the TLS server config; with `client_ca`, also the verifier used per connection.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<(ServerConfig, Option<Arc<dyn ClientCertVerifier>>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let (config, verifier) = match client_ca {
        None => (
            builder.with_no_client_auth().with_single_cert(certs, key)?,
            None,
        ),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .context("INGEST_CLIENT_CA: a certificate could not be used as a CA")?;
            }
            let strict: Arc<dyn ClientCertVerifier> =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("INGEST_CLIENT_CA")?;
            let lenient = Arc::new(AskButAllow(strict.clone()));
            (
                builder
                    .with_client_cert_verifier(lenient)
                    .with_single_cert(certs, key)?,
                Some(strict),
            )
        }
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, verifier))
}

/// The per-connection hook: records whether the client proved a certificate from the CA.
pub fn on_connect(
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        let Some(verifier) = &verifier else { return };
        let verdict = conn
            .downcast_ref::<TlsStream<TcpStream>>()
            .and_then(|tls| tls.get_ref().1.peer_certificates())
            .and_then(|chain| chain.split_first())
            .map(|(end, intermediates)| {
                match verifier.verify_client_cert(end, intermediates, UnixTime::now()) {
                    Ok(_) => ClientCert::Verified,
                    Err(e) => {
                        tracing::info!(error = %e, "client certificate refused");
                        ClientCert::Missing
                    }
                }
            })
            .unwrap_or(ClientCert::Missing);
        ext.insert(verdict);
    }
}

/// Asks for a client certificate, accepts the handshake whatever comes, but still checks the
/// handshake signature, so a presented certificate is one whose key the client holds.
#[derive(Debug)]
struct AskButAllow(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AskButAllow {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("reading the key from {}", path.display()))?
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}
