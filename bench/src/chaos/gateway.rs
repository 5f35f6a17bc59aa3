//! A fake GoCardless API on loopback, for the one call the workload cannot avoid: a
//! `payments.confirmed` whose mandate the worker does not know yet (its `mandates.created`
//! overtaken) makes the worker fetch the member first (`GET /mandates/{id}`, then
//! `GET /customers/{id}`, DESIGN.md "Domain rules"). It answers from the workload's model, so
//! the member it describes is the one `mandates.created` describes. Anything else is a 404 and
//! counted: the workload is built so that nothing else is ever asked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::workload::Mandate;

/// Calls the fake API answered, by kind.
#[derive(Debug, Default)]
pub struct Calls {
    pub mandates: AtomicU64,
    pub customers: AtomicU64,
    /// Anything the workload should never cause (answered 404).
    pub unexpected: AtomicU64,
}

/// The running fake API; stops when dropped.
pub struct FakeGateway {
    pub addr: SocketAddr,
    pub calls: Arc<Calls>,
    task: JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the API knows: each mandate by id and by its customer's id.
struct Model {
    mandates: HashMap<String, Mandate>,
    customers: HashMap<String, Mandate>,
}

impl FakeGateway {
    pub async fn start(mandates: &[Mandate]) -> anyhow::Result<Self> {
        let model = Arc::new(Model {
            mandates: mandates.iter().map(|m| (m.id.clone(), m.clone())).collect(),
            customers: mandates
                .iter()
                .map(|m| (m.customer_id.clone(), m.clone()))
                .collect(),
        });
        let calls = Arc::new(Calls::default());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (m, c) = (model.clone(), calls.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, c) = (m.clone(), c.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (m, c) = (m.clone(), c.clone());
                        async move { Ok::<_, Infallible>(answer(&m, &c, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, calls, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(model: &Model, calls: &Calls, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let json = |v: serde_json::Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .expect("a valid response")
    };
    if let Some(m) = path
        .strip_prefix("/mandates/")
        .and_then(|id| model.mandates.get(id))
    {
        calls.mandates.fetch_add(1, Ordering::Relaxed);
        return json(serde_json::json!({"mandates": {
            "id": m.id,
            "created_at": m.created_at,
            "status": "active",
            "links": {"customer": m.customer_id},
            "metadata": {"mandate_type": m.mandate_type},
        }}));
    }
    if let Some(m) = path
        .strip_prefix("/customers/")
        .and_then(|id| model.customers.get(id))
    {
        calls.customers.fetch_add(1, Ordering::Relaxed);
        return json(serde_json::json!({"customers": {
            "id": m.customer_id,
            "given_name": m.given_name,
            "family_name": m.family_name,
            "company_name": null,
            "email": m.email,
            "address_line1": null,
            "city": null,
            "region": null,
            "postal_code": null,
        }}));
    }
    calls.unexpected.fetch_add(1, Ordering::Relaxed);
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::new(Bytes::from_static(br#"{"error":{"code":404}}"#)))
        .expect("a valid response")
}
