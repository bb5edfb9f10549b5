//! MQTT over WebSocket (`ws` and `wss` listeners), for browser dashboards.
//!
//! The HTTP upgrade is done by tokio-tungstenite. A client that offers
//! subprotocols must offer `mqtt` (or the older `mqttv3.1`), which is echoed
//! back; one that offers none is accepted too, as Mosquitto does.
//!
//! MQTT is a byte stream and WebSocket frames may split or join packets
//! anywhere, so the connection task is not taught about frames: it gets one
//! end of an in-memory duplex pipe (bounded, `PIPE_BYTES` each way) and two
//! small pumps copy binary frames into the pipe and pipe output into binary
//! frames. Text frames break the MQTT-over-WebSocket rules and close the
//! connection. When either side ends, both pumps stop.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Bytes buffered in each direction between the pumps and the connection.
const PIPE_BYTES: usize = 64 * 1024;

/// Subprotocols we speak, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Upgrades `stream` to a WebSocket and returns the byte stream the
/// connection task reads MQTT from. `max_packet_size` bounds each frame.
#[allow(clippy::result_large_err)] // the callback's error is tungstenite's response
pub async fn accept<S>(
    stream: S,
    max_packet_size: u32,
    origins: OriginPolicy,
) -> Result<DuplexStream, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let frame_limit = usize::try_from(max_packet_size)
        .unwrap_or(usize::MAX)
        .saturating_add(16);
    let config = WebSocketConfig::default()
        .max_message_size(Some(frame_limit))
        .max_frame_size(Some(frame_limit));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            origins.check(request)?;
            choose_subprotocol(request, response)
        },
        Some(config),
    )
    .await
    .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(pump(ws, theirs));
    Ok(ours)
}

/// Which browser origins may open a WebSocket (cross-site WebSocket
/// hijacking: a page in a LAN browser must not reach the broker on the
/// user's behalf). A request without `Origin` is not from a browser and is
/// always allowed. With `allowed_origins` set, a present `Origin` must be
/// listed; without it, a listener that accepts anonymous clients accepts
/// only a same-origin request to an IP address or `localhost` (what
/// non-browser clients such as paho send; a DNS-rebinding page has its own
/// host name), and one that needs credentials accepts any origin.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    pub allowed: Vec<String>,
    pub anonymous: bool,
}

impl OriginPolicy {
    #[allow(clippy::result_large_err)] // tungstenite's error response
    fn check(&self, request: &Request) -> Result<(), ErrorResponse> {
        let Some(origin) = request.headers().get("Origin") else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let listed = self
            .allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
        let host = request.headers().get("Host").and_then(|h| h.to_str().ok());
        let same_local = host.is_some_and(|h| same_local_origin(origin, h));
        if listed || (self.allowed.is_empty() && (!self.anonymous || same_local)) {
            return Ok(());
        }
        tracing::info!(origin = ?origin, "WebSocket refused: origin not allowed");
        let mut refusal = ErrorResponse::new(Some("origin not allowed".into()));
        *refusal.status_mut() = StatusCode::FORBIDDEN;
        Err(refusal)
    }
}

/// True when `origin` (`scheme://authority`) names the same authority as the
/// `Host` header and that host is an IP address or `localhost`.
fn same_local_origin(origin: &str, host: &str) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    if !authority.eq_ignore_ascii_case(host) {
        return false;
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The handshake callback: picks `mqtt` from the offered subprotocols.
#[allow(clippy::result_large_err)] // the signature is tungstenite's
fn choose_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<String> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    match SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
    {
        Some(chosen) => {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
            Ok(response)
        }
        None => {
            let mut refusal = ErrorResponse::new(Some("subprotocol mqtt required".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

/// Copies frames to the pipe and the pipe to frames until either side ends.
async fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut pipe_rx, mut pipe_tx) = tokio::io::split(pipe);
    let mut inbound = tokio::spawn(async move {
        while let Some(frame) = ws_rx.next().await {
            let data = match frame {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Text(_)) => {
                    tracing::debug!("text frame on an MQTT WebSocket: closing");
                    break;
                }
                Ok(Message::Close(_)) | Err(_) => break,
            };
            if pipe_tx.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = pipe_tx.shutdown().await;
    });
    let mut inbound_ended = false;
    let mut buf = bytes::BytesMut::with_capacity(4096);
    loop {
        buf.reserve(4096);
        tokio::select! {
            read = pipe_rx.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let frame = Message::Binary(buf.split().freeze());
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            },
            _ = &mut inbound => {
                inbound_ended = true;
                break;
            }
        }
    }
    let _ = ws_tx.close().await;
    if !inbound_ended
        && tokio::time::timeout(std::time::Duration::from_secs(1), &mut inbound)
            .await
            .is_err()
    {
        inbound.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_local_origin_is_an_ip_or_localhost_of_the_same_authority() {
        use super::same_local_origin as f;
        assert!(f("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(f("https://[::1]:8443", "[::1]:8443"));
        assert!(f("http://localhost:9001", "localhost:9001"));
        assert!(
            !f("http://evil.example:9001", "evil.example:9001"),
            "DNS rebinding"
        );
        assert!(!f("http://evil.example", "127.0.0.1:9001"), "cross-site");
        assert!(!f("null", "127.0.0.1:9001"));
    }
}
