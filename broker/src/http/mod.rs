//! The operator's HTTP endpoint on hyper (HTTP/1.1): `/metrics`
//! (OpenMetrics), `/healthz`, the read-only JSON API under `/api/v1/` and the
//! status page at `/`.
//!
//! Invariants:
//! * Read-only: GET and HEAD only; nothing here changes broker state.
//! * Bounded: at most `max_connections` connections are served at once
//!   (further ones are closed at accept), each for at most
//!   `request_timeout_secs`; request bodies are never read; API answers are
//!   paged with at most `max_page_size` items.
//! * With `password_file`, every path but `/healthz` needs HTTP basic auth
//!   by a user of that file (checked off the runtime's threads, since the
//!   hashes are deliberately slow). With `cert_file`/`key_file` it is HTTPS.
//! * Loopback-only by default: `check-config` warns about any other address
//!   without a password file and TLS.

pub mod api;
mod auth;
pub mod page;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::metrics::SyncHistogram;
use crate::sys::ExtraTopics;

pub use auth::HttpUsers;

pub use crate::config::http::HttpConfig;

/// Errors setting the endpoint up.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("[http] {file}: {message}")]
    File { file: String, message: String },
}

/// What the handlers read.
pub struct HttpState {
    pub broker: Arc<Broker>,
    pub extra: ExtraTopics,
    pub histogram: SyncHistogram,
    pub bridges: api::BridgeSource,
    pub store: api::StoreSource,
    pub users: Option<Arc<HttpUsers>>,
    pub max_page_size: usize,
}

/// Starts serving (a task that runs until the broker shuts down).
pub fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    config: &HttpConfig,
) -> Result<(), HttpError> {
    let tls = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => Some(auth::tls_acceptor(cert, key)?),
        _ => None,
    };
    sample_message_ages(state.broker.shutdown_signal());
    let mut shutdown = state.broker.shutdown_signal();
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let timeout = Duration::from_secs(config.request_timeout_secs);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (state, tls) = (state.clone(), tls.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_connection(TokioIo::new(s), state).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(stream), state).await,
                    }
                })
                .await;
                drop(permit);
            });
        }
    });
    Ok(())
}

/// Samples the message id clock once a second for the API's message ages
/// (see `message_age`), until the broker shuts down.
fn sample_message_ages(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = crate::broker::durable::epoch_ms();
            crate::message_age::sample(crate::message::next_message_id(), now);
        }
    });
}

async fn serve_connection<I>(io: I, state: Arc<HttpState>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .max_buf_size(16 * 1024)
        // One request per connection: no idle sockets held (the page polls
        // every two seconds; a scraper every few).
        .keep_alive(false)
        .serve_connection(io, service)
        .await;
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(state: &HttpState, req: Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == "/healthz" {
        let (status, body) = crate::metrics::health(&state.extra);
        let code = match status.starts_with("200") {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        return reply(code, TEXT, body);
    }
    if let Some(users) = &state.users {
        if !auth::authorized(users, req.headers()).await {
            let mut r = reply(StatusCode::UNAUTHORIZED, TEXT, "authentication required\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"edgemq\""),
            );
            return r;
        }
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::render(&state.broker, &state.extra, &state.histogram),
        ),
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(page::PAGE.as_bytes()),
        ),
        _ => match path.strip_prefix("/api/v1/") {
            Some(resource) => match api::answer(state, resource, req.uri().query()) {
                Some(json) => reply(StatusCode::OK, "application/json", json),
                None => reply(StatusCode::NOT_FOUND, TEXT, "no such API resource\n"),
            },
            None => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::Config;

    #[test]
    fn lan_http_without_password_and_tls_is_warned_about() {
        let open = Config::from_toml("[http]\nlisten = \"0.0.0.0:9883\"\n", "t.toml").unwrap();
        let warnings = open.security_warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("http on 0.0.0.0:9883: unauthenticated, plaintext")),
            "{warnings:?}"
        );
        let old = Config::from_toml("[metrics]\nlisten = \"0.0.0.0:9883\"\n", "t.toml").unwrap();
        assert!(old
            .security_warnings()
            .iter()
            .any(|w| w.contains("http on")));
        let guarded = Config::from_toml(
            "[http]\nlisten = \"0.0.0.0:9883\"\npassword_file = \"p\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
            "t.toml",
        )
        .unwrap();
        assert!(!guarded
            .security_warnings()
            .iter()
            .any(|w| w.contains("http on")));
        let local = Config::from_toml("[http]\nlisten = \"127.0.0.1:9883\"\n", "t.toml").unwrap();
        assert!(!local
            .security_warnings()
            .iter()
            .any(|w| w.contains("http on")));
    }

    #[test]
    fn bad_http_sections_name_the_key() {
        for (text, key) in [
            ("[http]\ncert_file = \"c\"\n", "http.cert_file"),
            ("[http]\nmax_page_size = 0\n", "http.max_page_size"),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
        ] {
            let err = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
