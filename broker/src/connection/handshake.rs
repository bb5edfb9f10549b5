//! The CONNECT handshake: read CONNECT within the connect timeout, validate
//! it, authenticate, and decide the CONNACK.
//!
//! Refusals are answered with the CONNACK reason code the specification
//! asks for (the encoder maps it to the 3.1.1 return code), then the
//! connection is closed. Anything that is not a well-formed CONNECT before
//! one arrived closes the socket without a reply, as both versions require.

use std::sync::Arc;

use bytes::BytesMut;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::auth::ClientIdBinding;
use crate::broker::Broker;
use crate::counters;
use crate::framed::{self, FramedError};
use crate::hooks::{AuthDecision, AuthRequest, ClientIdentity};
use crate::policy::{self, Publisher};
use crate::protocol::{
    self, reason, topic, ConnAck, Connect, DecodeError, Packet, ProtocolVersion,
};

use super::{CertificateUser, ConnectionInfo};

/// Why the handshake did not produce a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no CONNECT within the connect timeout")]
    Timeout,
    #[error("connection closed before CONNECT")]
    Closed,
    #[error("i/o error before CONNECT: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid first packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("first packet is {0:?}, not CONNECT")]
    NotConnect(protocol::PacketType),
    #[error("first byte is not a CONNECT's")]
    NotConnectByte,
    #[error("CONNECT refused with reason 0x{0:02x}")]
    Refused(u8),
}

/// A validated, authenticated CONNECT.
pub struct Accepted {
    pub connect: Connect,
    pub client_id: String,
    /// True when the server assigned the client id (v5 Assigned Client Identifier).
    pub assigned_id: bool,
    pub username: Option<String>,
    /// The user name comes from the client certificate.
    pub certificate: bool,
}

/// The whole login of a new socket: with `over_limit` (max_connections
/// clients logged in) only the protocol level is read and the socket
/// refused; otherwise the CONNECT (at most max_connect_size) is read and
/// authenticated under one deadline (connect_timeout_ms). `None`: refused
/// or failed, the socket is done.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    info: &ConnectionInfo,
    broker: &Arc<Broker>,
    over_limit: bool,
) -> Option<Accepted> {
    // Memory before login is bounded: the first packet may be at most
    // max_connect_size, and reading it plus authentication share one
    // deadline.
    let first_packet_max = broker.config.limits.first_packet_max();
    let connect_timeout = Duration::from_millis(broker.config.server.connect_timeout_ms);
    let deadline = Instant::now() + connect_timeout;
    if over_limit {
        // Over max_connections: read no more than the protocol level to
        // answer in the client's version, then close.
        counters::inc(&broker.metrics.connections_refused);
        let version = Box::pin(timeout_at(deadline, read_version(stream))).await;
        let Ok(Some(version)) = version else {
            return None;
        };
        tracing::warn!("refusing connection: max_connections reached");
        refuse(stream, version, reason::QUOTA_EXCEEDED).await;
        return None;
    }
    let read = read_connect(stream, rbuf, first_packet_max);
    let connect = match Box::pin(timeout_at(deadline, read)).await {
        Ok(Ok(c)) => c,
        Ok(Err(HandshakeError::Decode(DecodeError::UnsupportedProtocol { level }))) => {
            tracing::debug!(level, "unsupported protocol version");
            let code = reason::UNSUPPORTED_PROTOCOL_VERSION;
            refuse(stream, ProtocolVersion::V311, code).await;
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("no CONNECT within the connect timeout");
            return None;
        }
    };
    let version = connect.protocol;
    let accept = accept(broker, info, connect);
    match Box::pin(timeout_at(deadline, accept)).await {
        // max_connections counts connected clients, not sockets that have
        // not logged in (those are bounded by max_pending_connections).
        Ok(Ok(_)) if at_max_connections(broker) => {
            counters::inc(&broker.metrics.connections_refused);
            tracing::warn!("refusing connection: max_connections reached");
            refuse(stream, version, reason::QUOTA_EXCEEDED).await;
            None
        }
        Ok(Ok(a)) => Some(a),
        Ok(Err(code)) => {
            counters::inc(&broker.metrics.connections_refused);
            tracing::info!(reason = %reason::describe(code), "CONNECT refused");
            refuse(stream, version, code).await;
            None
        }
        Err(_) => {
            counters::inc(&broker.metrics.connections_refused);
            tracing::info!("CONNECT refused: authentication not done within the connect timeout");
            refuse(stream, version, reason::SERVER_BUSY).await;
            None
        }
    }
}

/// Reads the first packet, which must be a CONNECT of at most `max_size`
/// bytes: a larger one is refused from its fixed header, before it is
/// buffered, and another packet type from its first byte.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_size: u32,
) -> Result<Connect, HandshakeError> {
    let first_is_connect = |b: u8| b >> 4 == 1;
    let read = framed::read_packet_where(
        stream,
        buf,
        ProtocolVersion::V311,
        max_size,
        first_is_connect,
    );
    match read.await {
        Ok(Packet::Connect(c)) => Ok(*c),
        Ok(other) => Err(HandshakeError::NotConnect(other.packet_type())),
        Err(FramedError::Closed) => Err(HandshakeError::Closed),
        Err(FramedError::Io(e)) => Err(HandshakeError::Io(e)),
        Err(FramedError::Decode(e)) => Err(HandshakeError::Decode(e)),
        Err(FramedError::UnexpectedFirstByte(_)) => Err(HandshakeError::NotConnectByte),
    }
}

/// Reads no more than the start of a CONNECT (fixed header, protocol name
/// and level: at most 16 bytes) to learn the client's protocol version, for
/// a refusal in its version. `None` when the bytes are not a CONNECT's.
pub async fn read_version<S: AsyncRead + Unpin>(stream: &mut S) -> Option<ProtocolVersion> {
    let mut head = [0u8; 16];
    let mut len = 0;
    loop {
        if let Some(answer) = version_from_head(&head[..len]) {
            return answer;
        }
        let n = stream.read(head.get_mut(len..)?).await.ok()?;
        if n == 0 {
            return None;
        }
        len += n;
    }
}

/// `Some(answer)` once `head` holds enough of a CONNECT to know its version.
fn version_from_head(head: &[u8]) -> Option<Option<ProtocolVersion>> {
    let (&first, rest) = head.split_first()?;
    if first != 0x10 {
        return Some(None);
    }
    // Remaining length: up to four bytes, the last without the top bit.
    let varint = rest.iter().position(|b| b & 0x80 == 0)?;
    if varint > 3 {
        return Some(None);
    }
    let body = rest.get(varint + 1..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    if name_len > 6 {
        return Some(None);
    }
    let level = *body.get(2 + name_len)?;
    Some(Some(if level == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }))
}

/// True when max_connections clients are connected.
pub fn at_max_connections(broker: &Broker) -> bool {
    let connected = broker
        .metrics
        .clients_connected
        .load(std::sync::atomic::Ordering::Relaxed);
    usize::try_from(connected).unwrap_or(usize::MAX) >= broker.config.server.max_connections
}

/// Validates a CONNECT and runs the authenticator. `Err(reason)` is the
/// CONNACK reason code to refuse with.
pub async fn accept(
    broker: &Arc<Broker>,
    info: &ConnectionInfo,
    mut connect: Connect,
) -> Result<Accepted, u8> {
    // CONNECT user properties are not used: free them before any wait.
    connect.properties.user_properties = Vec::new();
    let (client_id, assigned_id) = validate(broker, &connect)?;
    let certificate = matches!(info.certificate_user, CertificateUser::Name(_));
    let username = authenticate(broker, info, &connect, &client_id).await?;
    let client_id = bind_client_id(broker, &connect, username.as_deref(), client_id)?;
    if !broker.has_room_for_session(&client_id) {
        tracing::warn!(client_id = ?client_id, max = broker.config.limits.max_sessions, "session limit reached: CONNECT refused");
        return Err(reason::QUOTA_EXCEEDED);
    }
    if let Some(will) = &connect.will {
        let identity = ClientIdentity {
            client_id: Arc::from(client_id.as_str()),
            username: username.clone(),
            certificate,
        };
        // The same policy as PUBLISH: `$SYS`, deny lists, ACL.
        policy::may_publish(broker, Publisher::Client(&identity), &will.topic)?;
    }
    Ok(Accepted {
        connect,
        client_id,
        assigned_id,
        username,
        certificate,
    })
}

/// Checks what the CONNECT asks for against the limits; returns the client
/// id (assigned when empty) and whether it was assigned for the client.
fn validate(broker: &Broker, connect: &Connect) -> Result<(String, bool), u8> {
    let limits = &broker.config.limits;
    let v5 = connect.protocol.is_v5();
    let mut client_id = connect.client_id.clone();
    let mut assigned_id = false;
    if client_id.is_empty() {
        if !v5 && !connect.clean_start {
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
        client_id = format!("edgemq-{:016x}", broker.next_id() ^ rand_seed());
        assigned_id = v5;
    }
    // Over the length limit, or the reserved prefix of the bridge's
    // internal sessions (a client must not take a bridge lane over).
    if client_id.len() > limits.max_client_id_len
        || client_id.starts_with(crate::bridge::CLIENT_ID_PREFIX)
    {
        return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
    }
    if let Some(will) = &connect.will {
        if !topic::valid_topic_name(&will.topic) || !topic_within_limits(broker, &will.topic) {
            return Err(reason::TOPIC_NAME_INVALID);
        }
        // Kept for the connection's life: bounded like a PUBLISH's.
        if will.properties.user_properties.len() > limits.max_user_properties {
            return Err(reason::QUOTA_EXCEEDED);
        }
    }
    // 3.1.1 has no Server Keep Alive: a client asking for more than
    // max_keepalive (0 = never counts as more) is refused, as Mosquitto does.
    let max_keepalive = limits.max_keepalive;
    if !v5
        && max_keepalive < u16::MAX
        && (connect.keep_alive == 0 || connect.keep_alive > max_keepalive)
    {
        return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
    }
    if connect.properties.authentication_method.is_some() {
        // Enhanced (AUTH packet) authentication is not offered.
        return Err(reason::BAD_AUTHENTICATION_METHOD);
    }
    Ok((client_id, assigned_id))
}

/// The user name the client logs in as: its verified certificate's, or
/// the authenticator's answer to the CONNECT's credentials.
async fn authenticate(
    broker: &Broker,
    info: &ConnectionInfo,
    connect: &Connect,
    client_id: &str,
) -> Result<Option<String>, u8> {
    match &info.certificate_user {
        // The certificate was verified in the TLS handshake: it is the
        // credential, and CONNECT's user name and password are ignored.
        CertificateUser::Name(name) => Ok(Some(name.to_string())),
        CertificateUser::Missing => {
            tracing::warn!(peer = %info.peer, "login refused: no client certificate name");
            Err(reason::NOT_AUTHORIZED)
        }
        CertificateUser::NotUsed => {
            let request = AuthRequest {
                peer: info.peer,
                anonymous_allowed: info.anonymous_allowed,
                client_id,
                username: connect.username.as_deref(),
                password: connect.password.as_deref(),
            };
            match broker.auth.authenticate(request).await {
                AuthDecision::Allow { username } => Ok(username),
                AuthDecision::Deny(code) => Err(code),
            }
        }
    }
}

/// Applies `[auth] client_id_binding`: an assigned id follows the user
/// name, and a client id bound to another user is refused.
fn bind_client_id(
    broker: &Broker,
    connect: &Connect,
    username: Option<&str>,
    mut client_id: String,
) -> Result<String, u8> {
    let binding = broker.config.auth.client_id_binding;
    if let (true, ClientIdBinding::Username | ClientIdBinding::UsernamePrefix, Some(user)) =
        (connect.client_id.is_empty(), binding, username)
    {
        // An assigned id follows the binding too.
        client_id = match binding {
            ClientIdBinding::Username => user.to_string(),
            _ => format!("{user}-{:016x}", broker.next_id() ^ rand_seed()),
        };
    }
    if binding != ClientIdBinding::None {
        let bound = match username {
            Some(user) => binding.allows(user, &client_id),
            None => broker.auth.id_owner(&client_id).is_none(),
        };
        // The session's owner too: kept across restarts, it also covers ids
        // that two user names' prefixes share and certificate identities.
        let owned_by_other = broker
            .session_owner(&client_id)
            .is_some_and(|owner| username != Some(&*owner));
        if !bound || owned_by_other {
            tracing::info!(user = ?username, client_id = ?client_id, "client id bound to another user");
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
    }
    Ok(client_id)
}

/// Sends a refusing CONNACK (best effort) in the client's version.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, version: ProtocolVersion, code: u8) {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        ..ConnAck::default()
    });
    let mut out = BytesMut::new();
    if protocol::encode(&connack, version, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

/// Topic length and level limits from config.
pub fn topic_within_limits(broker: &Broker, name: &str) -> bool {
    policy::within_limits(&broker.config.limits, name)
}

/// Per-process salt so assigned client ids differ across restarts.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_sixteen_bytes_at_most() {
        let v311 = [0x10, 0xff, 0xff, 0x3f, 0, 4, b'M', b'Q', b'T', b'T', 4, 2];
        assert_eq!(version_from_head(&v311), Some(Some(ProtocolVersion::V311)));
        let v5 = [0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 5];
        assert_eq!(version_from_head(&v5), Some(Some(ProtocolVersion::V5)));
        assert_eq!(version_from_head(&v5[..8]), None, "needs more bytes");
        assert_eq!(version_from_head(&[0x30, 0]), Some(None), "not a CONNECT");
        let long_name = [0x10, 20, 0, 200, b'M'];
        assert_eq!(version_from_head(&long_name), Some(None));
        let bad_varint = [0x10, 0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(version_from_head(&bad_varint), Some(None));
    }
}
