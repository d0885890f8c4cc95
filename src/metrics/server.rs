//! The HTTP server of `/metrics` and `/healthz` (`--metrics-addr`), for
//! the agent and for `render`, each an [`Exporter`]. Any local user can
//! connect to it (docs/security.md "Trust boundary"), so it is bounded by
//! construction: at most [`MAX_CONNECTIONS`] connections at once (further
//! ones wait in the kernel's backlog, first come first served, and cost the
//! agent no descriptor), each given [`HEADER_TIMEOUT`] to send its request's
//! head, answered once and closed (no keep-alive), and closed after
//! [`CONNECTION_LIFETIME`] whatever it does. Idle or slow clients can never
//! take the descriptors the agent needs for the engine and etcd, and a
//! client that holds every slot holds each for seconds, not minutes: a
//! scraper waiting behind it is served within [`CONNECTION_LIFETIME`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// What a process serves: its metrics, and its health for `/healthz`.
pub trait Exporter: Send + Sync + 'static {
    /// The Prometheus text exposition of every metric.
    fn metrics(&self) -> String;
    /// `Ok` for 200, or the line `/healthz` answers with 503.
    fn health(&self) -> Result<(), &'static str>;
}

/// Connections served at once: a scraper or two and a health check need a
/// handful; systemd's default limit is 1,024 descriptors.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection is kept at most: one request and its answer (a
/// scrape takes milliseconds), so that a client cannot hold a slot longer.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(6);

/// Serves `/metrics` and `/healthz` on `listener` (bound at start-up, so
/// that a busy port is a configuration error) in a task of its own, until
/// the runtime ends.
pub fn spawn(listener: std::net::TcpListener, exporter: Arc<dyn Exporter>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(serve(listener, exporter));
    Ok(())
}

async fn serve(listener: TcpListener, exporter: Arc<dyn Exporter>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first: while every slot is taken, nothing more is
        // accepted, so a flood of connections costs no descriptor here.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return; // never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(error = %error, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = Arc::clone(&exporter);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, exporter.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                // One request per connection: a client re-sending requests
                // on one connection would keep its slot for the lifetime.
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    debug!(%peer, error = %error, "metrics connection ended with an error");
                }
                Err(_) => debug!(%peer, "metrics connection closed after its lifetime"),
            }
            drop(slot);
        });
    }
}

fn respond(request: &Request<Incoming>, exporter: &dyn Exporter) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            exporter.metrics(),
        ),
        (&Method::GET, "/healthz") => match exporter.health() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
