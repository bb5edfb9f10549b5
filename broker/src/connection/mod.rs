//! One task per client connection.
//!
//! [`serve`] runs the CONNECT handshake ([`handshake`]), attaches the
//! session, then loops: decode every complete packet in the read buffer and
//! handle it ([`inbound`]), move deliveries from the session's mailbox into
//! the write buffer ([`outbound`]), write the whole buffer (within
//! `write_timeout_ms`: a client that stops reading is disconnected), and
//! wait for the next event (socket readable, mailbox notified, takeover,
//! shutdown, keep alive deadline). The task owns its socket, its codec
//! state and its session; it touches shared state only through short,
//! synchronous broker calls.
//!
//! The read buffer ([`readbuf`]) is held only while bytes are in flight:
//! an idle connection waits for readability without one. It grows to the
//! size of the packet being read (the codec reports the frame length from
//! the fixed header, and rejects packets over the maximum before they are
//! buffered) and is released when a large packet has been consumed. Small
//! payloads are copied out of it, so queued messages never pin it. The
//! write buffer is released whenever nothing more is owed. Network input never
//! panics: every malformed packet closes this connection only, with the v5
//! DISCONNECT reason code from [`DecodeError::reason_code`].

mod flow;
mod handshake;
mod inbound;
mod outbound;
mod readbuf;
mod refusal;
mod revocation;
mod write;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::Instrument;

use crate::broker::Broker;
use crate::counters;
use crate::hooks::{BoxFuture, ClientIdentity, PersistError};
use crate::protocol::{
    self, reason, ConnAck, ConnAckProperties, DecodeError, Disconnect, DisconnectProperties,
    LastWill, Packet, ProtocolVersion,
};
use crate::router::{Delivery, Message};
use crate::session::aliases::{InboundAliases, OutboundAliases};
use crate::session::{Session, NEVER_EXPIRES};

pub use handshake::HandshakeError;
pub use readbuf::ReadReady;
use readbuf::{next_read_hint, Backing, MIN_READ};

/// How long the server's last words (DISCONNECT, queued acks) may take.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

/// Facts about the socket, from the listener.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub anonymous_allowed: bool,
    /// The user name a TLS client certificate gives, on listeners with
    /// `use_identity_as_username`.
    pub certificate_user: CertificateUser,
    /// Held until the client has logged in: the server's count of sockets
    /// not logged in yet from this address (`max_pending_per_address`).
    pub pending: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// What a listener with `use_identity_as_username` learnt from the TLS
/// handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CertificateUser {
    /// The listener takes user names from CONNECT.
    #[default]
    NotUsed,
    /// The listener wants a certificate name, and there is none.
    Missing,
    /// The verified certificate's Common Name.
    Name(Arc<str>),
}

/// The client's own limits, from its CONNECT (v5) or the protocol maxima.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    receive_maximum: u16,
    maximum_packet_size: u32,
    topic_alias_maximum: u16,
}

/// An acknowledgement and, while its message is not yet durable, the wait.
type WaitingAck = (Option<BoxFuture<'static, Result<(), PersistError>>>, Packet);

/// Why a connection ends.
#[derive(Debug)]
enum Exit {
    /// DISCONNECT from the client: the will is discarded.
    Client,
    /// v5 DISCONNECT 0x04: publish the will.
    ClientWithWill,
    /// Socket closed or failed.
    Closed,
    KeepAlive,
    /// A write batch was not taken by the client within write_timeout_ms.
    WriteTimeout,
    /// The session's queue stayed full beyond slow_consumer_timeout_ms.
    SlowConsumer,
    TakenOver,
    Shutdown,
    /// The client broke the protocol; v5 reason code and a description.
    Protocol(u8, &'static str),
    Decode(DecodeError),
}

/// The state of one connected client.
struct Conn {
    broker: Arc<Broker>,
    conn_id: u64,
    version: ProtocolVersion,
    identity: ClientIdentity,
    session: Session,
    /// Boxed: most clients have none, and it is large.
    will: Option<Box<LastWill>>,
    client: ClientLimits,
    in_aliases: InboundAliases,
    out_aliases: OutboundAliases,
    /// Deliveries taken from the mailbox (or retained on subscribe) not yet sent.
    pending: VecDeque<Delivery>,
    /// Retained messages owed to new subscriptions, streamed by `pump`.
    retained: VecDeque<outbound::RetainedSend>,
    /// PUBACK/PUBREC packets in arrival order, each waiting (if `Some`) for
    /// its message to be durable.
    waiting_acks: VecDeque<WaitingAck>,
    /// Set when a durable write failed and the connection must close once
    /// the acknowledgements queued behind it are sent (see [`refusal`]):
    /// the v5 reason code and a description.
    closing: Option<(u8, &'static str)>,
    /// A message waiting for room in full queues, and what waits behind it.
    flow: Option<Box<flow::FlowState>>,
    wbuf: BytesMut,
}

/// Serves one client connection until it ends. `over_limit`: the server is
/// at max_connections, so the CONNECT is answered with a refusal.
pub async fn serve<S>(stream: S, info: ConnectionInfo, broker: Arc<Broker>, over_limit: bool)
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin + Send,
{
    let span = tracing::info_span!("conn", peer = %info.peer, client_id = tracing::field::Empty);
    serve_inner(stream, info, broker, over_limit)
        .instrument(span)
        .await
}

async fn serve_inner<S>(mut stream: S, info: ConnectionInfo, broker: Arc<Broker>, over_limit: bool)
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin + Send,
{
    let mut rbuf = BytesMut::new();
    // The handshake, attach and goodbye futures are boxed: they are large
    // (timers, the authenticator) and short-lived, and inline they would
    // size every idle connection's task.
    let login = handshake::login(&mut stream, &mut rbuf, &info, &broker, over_limit);
    let Some(accepted) = Box::pin(login).await else {
        return;
    };
    // Listed by the HTTP API until the connection closes.
    let _peer = broker
        .peers
        .register(&accepted.client_id, info.peer, accepted.connect.protocol);
    // Logged in: no longer a pending socket of its address.
    drop(info);
    // Escaped: a client id is client-chosen (no forged lines in the log).
    let client_id_field = tracing::field::debug(accepted.client_id.as_str());
    tracing::Span::current().record("client_id", client_id_field);
    let (mut conn, kicked, connack_props, keep_alive) = Box::pin(attach(&broker, accepted)).await;
    conn.encode(&Packet::ConnAck(connack_props));
    conn.resend_inflight();
    broker.metrics.client_connected();
    let shutdown = broker.shutdown_signal();
    let exit = conn
        .run(&mut stream, &mut rbuf, kicked, shutdown, keep_alive)
        .await;
    Box::pin(conn.finish(&mut stream, exit)).await;
    broker.metrics.client_disconnected();
}

/// Opens the session for an accepted CONNECT and builds the CONNACK.
async fn attach(
    broker: &Arc<Broker>,
    accepted: handshake::Accepted,
) -> (Conn, oneshot::Receiver<()>, ConnAck, u16) {
    let limits = &broker.config.limits;
    let c = accepted.connect;
    let v5 = c.protocol.is_v5();
    let requested_expiry = match (v5, c.clean_start) {
        (true, _) => c.properties.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    let expiry = requested_expiry.min(limits.max_session_expiry);
    let client_id: Arc<str> = Arc::from(accepted.client_id.as_str());
    let conn_id = broker.next_id();
    let opened = broker
        .open_session_for(
            client_id.clone(),
            accepted.username.as_deref(),
            c.clean_start,
            expiry,
            conn_id,
        )
        .await;
    let (props, keep_alive) = connack_properties(
        limits,
        &c,
        (expiry != requested_expiry).then_some(expiry),
        accepted.assigned_id.then(|| accepted.client_id.clone()),
    );
    tracing::info!(
        version = ?c.protocol,
        clean_start = c.clean_start,
        keep_alive,
        session_present = opened.session_present,
        "client connected"
    );
    let client = ClientLimits {
        receive_maximum: c.properties.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
        topic_alias_maximum: c.properties.topic_alias_maximum.unwrap_or(0),
    };
    let connack = ConnAck {
        session_present: opened.session_present,
        reason_code: reason::SUCCESS,
        properties: props,
    };
    let conn = Conn {
        broker: broker.clone(),
        conn_id,
        version: c.protocol,
        identity: ClientIdentity {
            client_id,
            username: accepted.username,
            certificate: accepted.certificate,
        },
        session: opened.session,
        will: c.will.map(Box::new),
        client,
        in_aliases: InboundAliases::new(if v5 { limits.max_topic_aliases } else { 0 }),
        // Our aliases towards the client: its maximum, capped by ours.
        out_aliases: OutboundAliases::new(client.topic_alias_maximum.min(limits.max_topic_aliases)),
        pending: VecDeque::new(),
        retained: VecDeque::new(),
        waiting_acks: VecDeque::new(),
        closing: None,
        flow: None,
        wbuf: BytesMut::new(),
    };
    (conn, opened.kicked, connack, keep_alive)
}

/// The v5 CONNACK properties edgemq answers with (and the keep alive it
/// grants): its own limits, and what it changed of the client's request.
fn connack_properties(
    limits: &crate::config::Limits,
    c: &crate::protocol::Connect,
    changed_expiry: Option<u32>,
    assigned_id: Option<String>,
) -> (ConnAckProperties, u16) {
    let mut props = ConnAckProperties::default();
    let mut keep_alive = c.keep_alive;
    if c.protocol.is_v5() {
        if keep_alive > limits.max_keepalive || (keep_alive == 0 && limits.max_keepalive < u16::MAX)
        {
            keep_alive = limits.max_keepalive;
            props.server_keep_alive = Some(keep_alive);
        }
        props.session_expiry_interval = changed_expiry;
        props.receive_maximum = Some(limits.max_inflight);
        props.maximum_packet_size = Some(limits.max_packet_size);
        props.topic_alias_maximum = Some(limits.max_topic_aliases);
        props.assigned_client_identifier = assigned_id;
    }
    (props, keep_alive)
}

impl Conn {
    /// The event loop; returns why the connection ends.
    async fn run<S>(
        &mut self,
        stream: &mut S,
        rbuf: &mut BytesMut,
        mut kicked: oneshot::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
        keep_alive: u16,
    ) -> Exit
    where
        S: AsyncRead + AsyncWrite + ReadReady + Unpin,
    {
        let max_packet = self.broker.config.limits.max_packet_size;
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = Instant::now() + grace;
        let mailbox = self.session.mailbox.clone();
        let mut reloads = self.broker.auth.reloads();
        let mut read_hint = MIN_READ;
        let mut backing = Backing::default();
        loop {
            // The keep alive deadline moves once per batch of packets (one
            // clock read, not one per packet). Reading stops while
            // max_inflight acknowledgements wait (for durability or for
            // room: TCP back-pressure on a publisher that outruns the store
            // or a subscriber).
            match self
                .handle_input(rbuf, max_packet, backing.size(rbuf))
                .await
            {
                Ok(true) => deadline = Instant::now() + grace,
                Ok(false) => {}
                Err(exit) => return exit,
            }
            if self.input_finished() {
                return Exit::Closed;
            }
            self.pump();
            if !self.wbuf.is_empty() {
                let events = write::Events {
                    kicked: &mut kicked,
                    shutdown: &mut shutdown,
                    mailbox: &mailbox,
                    deadline: (keep_alive > 0).then_some(deadline),
                };
                if let Some(exit) = self.write_batch(stream, events).await {
                    return exit;
                }
            }
            if let (Some((code, why)), true) = (self.closing, self.waiting_acks.is_empty()) {
                // Every acknowledgement that could be sent is written.
                return Exit::Protocol(code, why);
            }
            let owed = !self.pending.is_empty() || !self.retained.is_empty();
            let more = self.can_send_more() && (owed || !mailbox.is_empty());
            let wake_on_mail = self.can_send_more() && self.pending.is_empty();
            // A spilled backlog is paged back in from the store once the
            // queue has run empty (see session::mailbox).
            let spill = match wake_on_mail && mailbox.is_empty() {
                true => mailbox.spill_state(),
                false => None,
            };
            let page_size = self.broker.config.limits.max_queued_messages.clamp(1, 1000);
            let fetch = spill.map(|(from, _)| {
                self.broker
                    .persistence
                    .fetch(&self.session.client_id, from, page_size)
            });
            let can_read = self.can_read();
            let held = self.is_held();
            tokio::select! {
                biased;
                _ = &mut kicked => return Exit::TakenOver,
                _ = shutdown.changed() => return Exit::Shutdown,
                _ = mailbox.evicted() => return Exit::SlowConsumer,
                _ = revocation::reloaded(&mut reloads) => {
                    if let Err(why) = self.still_authorized() {
                        return Exit::Protocol(reason::NOT_AUTHORIZED, why);
                    }
                }
                r = readbuf::read_some(stream, rbuf, max_packet, read_hint), if can_read => match r {
                    Ok((0, _)) if self.finish_input_at_eof() => {}
                    Ok((0, _)) | Err(_) => return Exit::Closed,
                    Ok((n, spare)) => {
                        counters::add(&self.broker.metrics.bytes_received, n);
                        read_hint = next_read_hint(read_hint, n, spare);
                    }
                },
                r = first_durable(&mut self.waiting_acks), if !self.waiting_acks.is_empty() => {
                    match r {
                        Ok(()) => self.release_acks(),
                        Err(e) => self.on_write_refused(e),
                    }
                    // Time spent not reading does not count against the client.
                    deadline = Instant::now() + grace;
                }
                _ = flow::room(self.flow.as_deref().map(|f| &f.blocked)), if held => {
                    self.retry_blocked();
                    deadline = Instant::now() + grace;
                }
                _ = std::future::ready(()), if more => {}
                page = async {
                    match fetch {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if spill.is_some() => {
                    let seq = spill.map_or(0, |(_, seq)| seq);
                    if let Err(exit) = self.page_in(page, seq, page_size) {
                        return exit;
                    }
                }
                _ = mailbox.notified(), if wake_on_mail => {}
                _ = sleep_until(deadline), if keep_alive > 0 => return Exit::KeepAlive,
            }
        }
    }

    /// Appends a page of the spilled backlog read from the store.
    fn page_in(
        &mut self,
        page: Result<Vec<Message>, PersistError>,
        seq: u64,
        page_size: usize,
    ) -> Result<(), Exit> {
        match page {
            Ok(messages) => {
                crate::broker::spill::page_in(&self.session, messages, seq, page_size);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spilled backlog");
                Err(Exit::Protocol(
                    reason::UNSPECIFIED_ERROR,
                    "persistence failure",
                ))
            }
        }
    }

    /// Says goodbye (v5 DISCONNECT for server-side reasons), handles the
    /// will, and hands the session back to the broker.
    async fn finish<S: AsyncWrite + Unpin>(mut self, stream: &mut S, exit: Exit) {
        // (reason code, reason string) of the server's DISCONNECT. Reason
        // strings are allowed on DISCONNECT whatever Request Problem
        // Information says (MQTT 5.0 section 3.1.2.11.7).
        let goodbye = match &exit {
            Exit::Protocol(code, why) => {
                tracing::info!(reason = code, why, "closing connection: protocol error");
                Some((*code, why.to_string()))
            }
            Exit::Decode(e) => {
                tracing::info!(error = %e, "closing connection: malformed packet");
                Some((e.reason_code(), e.to_string()))
            }
            Exit::KeepAlive => Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout".into())),
            // The client is not reading: no DISCONNECT of its own, only the
            // bounded final flush of what is pending.
            Exit::WriteTimeout => {
                counters::inc(&self.broker.metrics.disconnects_write_timeout);
                tracing::info!(
                    timeout_ms = self.broker.config.limits.write_timeout_ms,
                    "closing connection: client not reading (write timeout)"
                );
                None
            }
            Exit::SlowConsumer => {
                self.count_slow_consumer();
                Some((reason::QUOTA_EXCEEDED, "slow consumer".into()))
            }
            Exit::TakenOver => Some((reason::SESSION_TAKEN_OVER, "session taken over".into())),
            Exit::Shutdown => Some((reason::SERVER_SHUTTING_DOWN, "server shutting down".into())),
            Exit::Client | Exit::ClientWithWill | Exit::Closed => None,
        };
        tracing::info!(?exit, "client disconnected");
        if let (Some((code, why)), true) = (goodbye, self.version.is_v5()) {
            self.encode(&Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: DisconnectProperties {
                    reason_string: Some(why),
                    ..DisconnectProperties::default()
                },
            }));
        }
        if let Some(will) = self.will.take() {
            if !matches!(exit, Exit::Client) {
                self.publish_will(*will, matches!(exit, Exit::Shutdown));
            }
        }
        // Unsent deliveries go back to the session: kept if it persists,
        // handed to other shared-group members if it ends. The session is
        // released before the socket closes, so a client that saw the close
        // and reconnects finds it parked.
        let unsent: Vec<Delivery> = self.pending.drain(..).collect();
        self.session.mailbox.requeue_front(unsent);
        self.broker.close_session(self.conn_id, self.session);
        if !self.wbuf.is_empty() && !matches!(exit, Exit::Closed) {
            let _ = timeout(FINAL_FLUSH, stream.write_all(&self.wbuf)).await;
        }
        let _ = timeout(FINAL_FLUSH, stream.shutdown()).await;
    }

    /// Publishes the will now or after its delay (capped by the session
    /// expiry: the will goes out when the session ends, if that is sooner).
    fn publish_will(&self, will: LastWill, now: bool) {
        // Re-checked now: rights may have changed since CONNECT (SIGHUP).
        let publisher = crate::policy::Publisher::Client(&self.identity);
        if crate::policy::may_publish(&self.broker, publisher, &will.topic).is_err() {
            counters::inc(&self.broker.metrics.dropped_denied);
            return tracing::info!("will not published: no longer allowed");
        }
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        let delay = if now {
            0
        } else {
            delay.min(self.session.expiry_interval)
        };
        let p = will.properties;
        let properties = protocol::PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Default::default()
        };
        let message = Message::new(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            properties,
            Some(self.session.client_id.clone()),
        );
        self.broker
            .schedule_will(self.session.client_id.clone(), Arc::new(message), delay);
    }
}

/// Completes when the first waiting acknowledgement may be sent.
async fn first_durable(waiting: &mut VecDeque<WaitingAck>) -> Result<(), PersistError> {
    match waiting.front_mut() {
        Some((Some(durable), _)) => durable.await,
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_io;

#[cfg(test)]
mod task_size {
    //! Every idle connection costs at least its task's future: keep it in a
    //! budget (memory per idle connection is a target: BENCHMARKS.md), so a
    //! large value held across an `.await` shows up here, not in production.

    #[test]
    fn connection_future_stays_within_budget() {
        let config = std::sync::Arc::new(crate::config::Config::default());
        let broker = crate::broker::Broker::new(
            config,
            std::sync::Arc::new(crate::hooks::MemoryOnly),
            std::sync::Arc::new(crate::hooks::ListenerPolicy),
        );
        let (stream, _peer) = tokio::io::duplex(64);
        let info = super::ConnectionInfo {
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            anonymous_allowed: true,
            certificate_user: super::CertificateUser::NotUsed,
            pending: None,
        };
        let future = super::serve(stream, info, broker, false);
        let size = std::mem::size_of_val(&future);
        // Debug builds lay futures out less tightly than release (2.4 KB).
        let budget = if cfg!(debug_assertions) { 8192 } else { 2560 };
        assert!(size <= budget, "connection future is {size} bytes");
        assert!(std::mem::size_of::<super::Conn>() <= 640);
    }
}
