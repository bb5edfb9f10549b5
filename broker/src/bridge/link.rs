//! The bridge's network task: one MQTT connection to the cloud, driving the
//! IO-free [`LaneMachine`] (`lane_machine`), which owns the lanes' window,
//! packet ids, batching and the resend and dead-letter rules.
//!
//! Invariants: this task only moves bytes and carries out the machine's
//! actions. It pulls from a lane's mailbox only what the machine asks for
//! (`wants`), acknowledges a lane entry in the store only on an
//! [`Action::Delete`], [`Action::Expired`] or (after publishing it locally)
//! [`Action::DeadLetter`], and puts everything the machine holds back into
//! the mailboxes at shutdown. Downlink messages enter the local broker
//! through one call site, [`Bridge::publish_downlink`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::lane_machine::{AckKind, Action, Backoff, CloudLimits, LaneMachine, MachineConfig};
use super::stats::{add, BridgeStats};
use super::{Lane, CLIENT_ID_PREFIX};
use crate::broker::Broker;
use crate::config::bridge::{BatchMode, BridgeConfig, BridgeProtocol};
use crate::envelope::Format;
use crate::framed::{self, FramedError};
use crate::protocol::{
    self, reason, ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, QoS,
    Subscribe, SubscribeFilter,
};
use crate::router::Delivery;

/// Dead letters and downlink messages: the bridge's local publishes.
#[path = "local.rs"]
mod local;

const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// Packet id of the downlink SUBSCRIBE, sent when nothing is in flight.
const SUBSCRIBE_PKID: u16 = u16::MAX;

/// Lane entries read from the store at a time when a lane's backlog spilled.
const PAGE_SIZE: usize = 1000;

/// A plain or TLS connection to the cloud.
type Stream = Box<dyn crate::transport::Transport>;

/// Why a connection to the cloud ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve or connect to {0}: {1}")]
    Connect(String, std::io::Error),
    // A 3.1.1 CONNACK return code or a v5 reason code: shown as the byte.
    #[error("cloud refused the connection with reason code {0:#04x}")]
    Refused(u8),
    #[error("cloud connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet from the cloud: {0}")]
    Decode(#[from] protocol::DecodeError),
    #[error("cannot encode: {0}")]
    Encode(#[from] protocol::EncodeError),
    #[error("cloud did not answer in time")]
    Timeout,
    #[error("shutting down")]
    Shutdown,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cloud answered {} (transient): retrying after a backoff", reason::describe(*.0))]
    Transient(u8),
}

impl From<FramedError> for LinkError {
    fn from(e: FramedError) -> Self {
        match e {
            FramedError::Closed => LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()),
            FramedError::Io(e) => LinkError::Io(e),
            FramedError::Decode(e) => LinkError::Decode(e),
            FramedError::UnexpectedFirstByte(b) => LinkError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected first byte 0x{b:02x}"),
            )),
        }
    }
}

pub struct Bridge {
    broker: Arc<Broker>,
    config: BridgeConfig,
    lanes: Vec<Lane>,
    stats: Arc<BridgeStats>,
    machine: LaneMachine,
    backoff: Backoff,
    /// Local publisher id of downlink messages (never forwarded back).
    downlink_publisher: Arc<str>,
}

impl Bridge {
    pub(super) fn new(
        broker: Arc<Broker>,
        config: BridgeConfig,
        lanes: Vec<Lane>,
        stats: Arc<BridgeStats>,
    ) -> Bridge {
        let downlink_publisher: Arc<str> =
            Arc::from(format!("{CLIENT_ID_PREFIX}{}", config.name).as_str());
        let version = match config.protocol {
            BridgeProtocol::V5 => ProtocolVersion::V5,
            BridgeProtocol::V311 => ProtocolVersion::V311,
        };
        let machine = LaneMachine::new(MachineConfig {
            version,
            mode: config.batch.mode,
            max_messages: config.batch.max_messages,
            max_bytes: config.batch.max_bytes,
            linger: Duration::from_millis(config.batch.linger_ms),
            envelope_topic: config.batch.envelope_topic.clone().unwrap_or_default(),
            format: Format {
                encoding: config.batch.encoding,
                compression: config.batch.compression,
            },
            max_inflight: config.max_inflight,
            prefixes: lanes.iter().map(|l| l.rule.remote_prefix.clone()).collect(),
            own_publisher: downlink_publisher.clone(),
        });
        let backoff = Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms);
        Bridge {
            broker,
            config,
            lanes,
            stats,
            machine,
            backoff,
            downlink_publisher,
        }
    }

    fn version(&self) -> ProtocolVersion {
        match self.config.protocol {
            BridgeProtocol::V5 => ProtocolVersion::V5,
            BridgeProtocol::V311 => ProtocolVersion::V311,
        }
    }

    /// Connects, serves, reconnects with exponential backoff and jitter,
    /// until the broker shuts down; then parks the lane sessions.
    pub async fn run(mut self) {
        let mut shutdown = self.broker.shutdown_signal();
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.connection() => r,
                _ = shutdown.changed() => Err(LinkError::Shutdown),
            };
            self.stats.link_up.store(0, Ordering::Relaxed);
            let actions = self
                .machine
                .disconnected(result.as_ref().is_err_and(closed_by_cloud));
            if let Err(e) = self.perform(actions, &mut BytesMut::new()).await {
                tracing::debug!(bridge = %self.config.name, error = %e, "after disconnect");
            }
            self.stats.inflight.store(0, Ordering::Relaxed);
            match result {
                Err(LinkError::Shutdown) | Ok(()) => break,
                Err(e) => tracing::warn!(bridge = %self.config.name, error = %e, "cloud link down"),
            }
            let delay = self
                .backoff
                .next_delay(started.elapsed(), rand::random::<u64>());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        for (lane, deliveries) in self.machine.take_all() {
            if let Some(l) = self.lanes.get(lane) {
                l.session.mailbox.requeue_front(deliveries);
            }
        }
        for lane in self.lanes.drain(..) {
            self.broker.close_session(lane.conn_id, lane.session);
        }
    }

    async fn connection(&mut self) -> Result<(), LinkError> {
        let mut stream = self.connect().await?;
        let version = self.version();
        let mut rbuf = BytesMut::with_capacity(4096);
        let connack = self.handshake(&mut stream, &mut rbuf).await?;
        let limits = if version.is_v5() {
            CloudLimits::from_connack(&connack)
        } else {
            CloudLimits::default()
        };
        self.machine.connected(limits, connack.session_present);
        tracing::info!(bridge = %self.config.name, address = %self.config.address,
            window = self.machine.window(), max_packet_size = ?limits.maximum_packet_size,
            maximum_qos = limits.maximum_qos as u8, retain_available = limits.retain_available,
            "cloud link up");
        self.stats.link_up.store(1, Ordering::Relaxed);
        let keepalive = Duration::from_secs(u64::from(self.config.keepalive_secs.max(1)));
        let mut ping = tokio::time::interval(keepalive);
        ping.tick().await;
        let mut wbuf = BytesMut::new();
        // Packets that arrived with the CONNACK (SUBACK, a first downlink
        // message): handled now, not when the next bytes happen to arrive.
        while let Some(packet) = framed::next_buffered(&mut rbuf, version, MAX_PACKET)? {
            self.on_packet(packet, version, &mut wbuf).await?;
        }
        loop {
            self.pull_lanes().await;
            let actions = self.machine.poll(Instant::now(), wall_ms());
            self.perform(actions, &mut wbuf).await?;
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                add(&self.stats.bytes_sent, wbuf.len());
                wbuf.clear();
            }
            let depth: usize = self.lanes.iter().map(|l| l.session.mailbox.len()).sum();
            let depth = depth.saturating_add(self.machine.held());
            self.stats.lane_depth.store(depth as u64, Ordering::Relaxed);
            self.stats
                .inflight
                .store(self.machine.inflight() as u64, Ordering::Relaxed);
            let room = self.machine.inflight() < usize::from(self.machine.window());
            let wake = self.machine.next_wakeup();
            tokio::select! {
                r = framed::read_packet(&mut stream, &mut rbuf, version, MAX_PACKET) => {
                    self.on_packet(r?, version, &mut wbuf).await?;
                    while let Some(packet) = framed::next_buffered(&mut rbuf, version, MAX_PACKET)? {
                        self.on_packet(packet, version, &mut wbuf).await?;
                    }
                }
                _ = self.any_mail(), if room => {}
                _ = sleep_until(wake), if wake.is_some() => {}
                _ = ping.tick() => protocol::encode(&Packet::PingReq, version, &mut wbuf)?,
            }
        }
    }

    /// Moves deliveries from the lanes' mailboxes into the machine, as many
    /// as it wants; pages a spilled backlog in from the store first. An
    /// orphan lane that is empty is deleted.
    async fn pull_lanes(&mut self) {
        for i in 0..self.lanes.len() {
            if self.lanes[i].finished {
                continue;
            }
            let want = self.machine.wants(i);
            if want == 0 {
                continue;
            }
            let mailbox = self.lanes[i].session.mailbox.clone();
            if mailbox.is_empty() {
                if let Some((from, seq)) = mailbox.spill_state() {
                    let client_id = self.lanes[i].session.client_id.clone();
                    if let Ok(page) = self
                        .broker
                        .persistence
                        .fetch(&client_id, from, PAGE_SIZE)
                        .await
                    {
                        crate::broker::spill::page_in(&self.lanes[i].session, page, seq, PAGE_SIZE);
                    }
                }
            }
            let mut batch = Vec::new();
            mailbox.drain(want, &mut batch);
            if !batch.is_empty() {
                self.machine.queued(i, batch, Instant::now());
            } else if self.lanes[i].orphan
                && mailbox.spill_state().is_none()
                && self.machine.lane_idle(i)
            {
                self.finish_orphan(i);
            }
        }
    }

    /// An orphan lane's backlog is all forwarded: delete its session.
    fn finish_orphan(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        lane.finished = true;
        lane.session.set_expiry(0);
        self.broker
            .persistence
            .remove_session(&lane.session.client_id);
        tracing::info!(bridge = %self.config.name, lane = %lane.session.client_id,
            "orphan bridge lane drained and deleted");
    }

    /// Carries out the machine's actions: packets into `wbuf`, lane entries
    /// deleted or dead-lettered. A transient refusal ends the connection.
    async fn perform(
        &mut self,
        actions: Vec<Action>,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        let version = self.version();
        let mut transient = None;
        for action in actions {
            match action {
                Action::Publish {
                    publish,
                    messages,
                    raw_bytes,
                    ..
                } => {
                    protocol::encode(&Packet::Publish(publish.clone()), version, wbuf)?;
                    add(&self.stats.messages_sent, messages);
                    if self.config.batch.mode == BatchMode::Envelope {
                        add(&self.stats.envelope_raw_bytes, raw_bytes);
                        add(&self.stats.envelope_wire_bytes, publish.payload.len());
                        add(&self.stats.batches_sent, 1);
                    }
                }
                Action::Send(packet) => protocol::encode(&packet, version, wbuf)?,
                Action::Delete { lane, delivery } => self.ack_lane(lane, &delivery),
                Action::Expired { lane, delivery } => {
                    add(&self.stats.messages_expired, 1);
                    tracing::debug!(bridge = %self.config.name, topic = %delivery.message.topic,
                        "message expired in its lane: not forwarded");
                    self.ack_lane(lane, &delivery);
                }
                Action::DeadLetter {
                    lane,
                    delivery,
                    reason,
                } => self.dead_letter(lane, delivery, reason).await,
                Action::Disconnect { reason_code } => transient = Some(reason_code),
            }
        }
        match transient {
            Some(code) => Err(LinkError::Transient(code)),
            None => Ok(()),
        }
    }

    /// Resolves the address (DNS on every attempt), connects, and wraps the
    /// socket in TLS when `[bridge.tls]` is set.
    async fn connect(&self) -> Result<Stream, LinkError> {
        let tcp = self.connect_tcp().await?;
        let Some(tls) = &self.config.tls else {
            return Ok(Box::new(tcp));
        };
        let host = self
            .config
            .address
            .rsplit_once(':')
            .map_or(self.config.address.as_str(), |(h, _)| h);
        let tls = super::tls::build(tls, host).map_err(LinkError::Tls)?;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tls.connector.connect(tls.server_name, tcp),
        )
        .await
        .map_err(|_| LinkError::Timeout)?
        .map_err(|e| LinkError::Tls(e.to_string()))?;
        Ok(Box::new(stream))
    }

    async fn connect_tcp(&self) -> Result<TcpStream, LinkError> {
        let addr = self.config.address.clone();
        let connect = async {
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            for a in tokio::net::lookup_host(addr.as_str()).await? {
                match TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| LinkError::Timeout)?
            .map_err(|e| LinkError::Connect(addr.clone(), e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// CONNECT/CONNACK and the downlink subscriptions; returns the CONNACK.
    async fn handshake(
        &mut self,
        stream: &mut Stream,
        rbuf: &mut BytesMut,
    ) -> Result<ConnAck, LinkError> {
        let version = self.version();
        let connect = Connect {
            protocol: version,
            // We resend everything unacknowledged ourselves on every connect.
            clean_start: true,
            keep_alive: self.config.keepalive_secs,
            client_id: self.config.client_id.clone(),
            will: None,
            username: self.config.username.clone(),
            password: self.config.password.clone().map(Bytes::from),
            properties: ConnectProperties::default(),
        };
        let mut out = BytesMut::new();
        protocol::encode(&Packet::Connect(Box::new(connect)), version, &mut out)?;
        if !self.config.downlinks.is_empty() {
            let filters = self
                .config
                .downlinks
                .iter()
                .map(|d| {
                    SubscribeFilter::new(
                        d.filter.clone(),
                        QoS::from_u8(d.qos).unwrap_or(QoS::AtLeastOnce),
                    )
                })
                .collect();
            protocol::encode(
                &Packet::Subscribe(Subscribe {
                    pkid: SUBSCRIBE_PKID,
                    filters,
                    ..Default::default()
                }),
                version,
                &mut out,
            )?;
        }
        stream.write_all(&out).await?;
        let read = framed::read_packet(stream, rbuf, version, MAX_PACKET);
        let connack = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| LinkError::Timeout)??;
        match connack {
            Packet::ConnAck(a) if a.reason_code == 0 => Ok(a),
            Packet::ConnAck(a) => Err(LinkError::Refused(a.reason_code)),
            _ => Err(LinkError::Refused(reason::PROTOCOL_ERROR)),
        }
    }

    /// Completes when some lane has something to send (or spilled backlog).
    async fn any_mail(&self) {
        let waits = self
            .lanes
            .iter()
            .filter(|l| !l.finished)
            .map(|l| Box::pin(l.session.mailbox.notified()))
            .collect::<Vec<_>>();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures_select_all(waits).await;
    }

    fn ack_lane(&self, lane: usize, d: &Delivery) {
        if d.qos != QoS::AtMostOnce {
            if let Some(l) = self.lanes.get(lane) {
                self.broker
                    .persistence
                    .ack(&l.session.client_id, d.message.id);
            }
        }
    }

    async fn on_packet(
        &mut self,
        packet: Packet,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        let actions = match packet {
            Packet::PubAck(a) => self.machine.acked(AckKind::PubAck, a.pkid, a.reason_code),
            Packet::PubRec(a) => self.machine.acked(AckKind::PubRec, a.pkid, a.reason_code),
            Packet::PubComp(a) => self.machine.acked(AckKind::PubComp, a.pkid, a.reason_code),
            Packet::Publish(p) => {
                self.downlink(p, version, wbuf).await?;
                Vec::new()
            }
            Packet::PubRel(a) => {
                self.machine.downlink_released(a.pkid);
                protocol::encode(
                    &Packet::PubComp(PubAck {
                        pkid: a.pkid,
                        ..Default::default()
                    }),
                    version,
                    wbuf,
                )?;
                Vec::new()
            }
            Packet::Disconnect(d) => return Err(LinkError::Refused(d.reason_code)),
            _ => Vec::new(),
        };
        self.perform(actions, wbuf).await
    }
}

/// True when the cloud ended the connection (a possible reaction to the
/// message at the head of the window), not a timeout, TLS or our shutdown.
fn closed_by_cloud(e: &LinkError) -> bool {
    use std::io::ErrorKind;
    match e {
        LinkError::Io(io) => matches!(
            io.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        ),
        LinkError::Refused(code) => *code != reason::SERVER_SHUTTING_DOWN,
        LinkError::Decode(_) => true,
        _ => false,
    }
}

/// Wall-clock milliseconds since the Unix epoch (envelope timestamps).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Sleeps until `at`; never completes for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Completes when the first of `futures` completes.
async fn futures_select_all(
    mut futures: Vec<std::pin::Pin<Box<impl std::future::Future<Output = ()>>>>,
) {
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
