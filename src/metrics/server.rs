//! The HTTP server of `/metrics` and `/healthz` (`--metrics-addr`). Any
//! local user can connect to it (README "Trust boundary"), so it is bounded
//! by construction: at most [`MAX_CONNECTIONS`] connections at once (further
//! ones wait in the kernel's backlog and cost the agent no descriptor), each
//! given [`HEADER_TIMEOUT`] to send its request's head and closed after
//! [`CONNECTION_LIFETIME`], so that idle or slow clients can never take the
//! descriptors the agent needs for the engine and etcd.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use super::{Metrics, Status};

/// Connections served at once: a scraper or two and a health check need a
/// handful; systemd's default limit is 1,024 descriptors.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection is kept at most, however busy: a scraper that
/// keeps its connection alive simply opens a new one.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `/metrics` and `/healthz` until the runtime ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, status: watch::Receiver<Status>) {
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
        let metrics = Arc::clone(&metrics);
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &metrics, *status.borrow());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
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

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    status: Status,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/healthz") if status.healthy() => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        (&Method::GET, "/healthz") if status.conflict => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "conflict: an agent following another engine holds this host\n".to_owned(),
        ),
        (&Method::GET, "/healthz") if status.standby => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "standby: another agent holds this host\n".to_owned(),
        ),
        (&Method::GET, "/healthz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "unhealthy: Docker or etcd unreachable, or the last reconcile failed\n".to_owned(),
        ),
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
