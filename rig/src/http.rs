//! HTTP/1.1 GET with hyper: over TCP to the agent's `--metrics-addr`
//! (`/healthz`, `/metrics`), and over the engine's Unix socket
//! (`hyperlocal`) for the benchmark's own view of Docker.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;

use crate::runtime;

/// How long a TCP connect may take: the agent listens on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole GET may take before it counts as unanswered.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a GET got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {path}: {source}")]
    Request {
        path: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("GET {path}: reading the body: {source}")]
    Body {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("GET {path}: no answer within {timeout:?}")]
    Timeout { path: String, timeout: Duration },
}

/// The TCP client: a new connection for every request (no pool), so that an
/// agent restarted on the same port is never asked over a stale connection.
fn tcp_client() -> &'static Client<HttpConnector, Empty<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Empty<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector)
    })
}

/// `GET path` from `addr` (`host:port`): the status code and the body as
/// text; the error text when nothing (or no complete answer) came back.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let uri: Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let (status, body) = runtime()
        .block_on(get(tcp_client(), uri, path, GET_TIMEOUT))
        .map_err(|e| format!("{addr}: {e}"))?;
    let body = String::from_utf8(body.to_vec()).map_err(|e| format!("body not utf-8: {e}"))?;
    Ok((status.as_u16(), body))
}

/// Sends `GET uri` and reads the whole body, within `timeout`.
async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: Uri,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let exchange = async {
        let response = open(client, uri, path).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| HttpError::Body {
                path: path.to_string(),
                source,
            })?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            path: path.to_string(),
            timeout,
        })?
}

/// Sends `GET uri`; the response with its body still to be read.
async fn open<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: Uri,
    path: &str,
) -> Result<Response<Incoming>, HttpError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    client.get(uri).await.map_err(|source| HttpError::Request {
        path: path.to_string(),
        source,
    })
}

/// GETs to a Unix socket (the engine's), over kept-alive connections: what
/// is timed is the engine's answer, not a connection set-up.
#[derive(Clone)]
pub struct UnixHttp {
    client: Client<UnixConnector, Empty<Bytes>>,
    /// The socket every request goes to.
    socket: PathBuf,
}

impl UnixHttp {
    /// A client of `socket`; connects on the first request.
    pub fn new(socket: impl Into<PathBuf>) -> UnixHttp {
        UnixHttp {
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
            socket: socket.into(),
        }
    }

    fn uri(&self, path: &str) -> Uri {
        hyperlocal::Uri::new(&self.socket, path).into()
    }

    /// `GET path`: status and whole body, within `timeout`.
    pub async fn get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        get(&self.client, self.uri(path), path, timeout).await
    }

    /// `GET path` for a streamed answer (say, `/events`): the response, its
    /// body to be read frame by frame.
    pub async fn open(&self, path: &str) -> Result<Response<Incoming>, HttpError> {
        open(&self.client, self.uri(path), path).await
    }
}
