//! The bridge task: one MQTT connection to the cloud, owned end to end.
//!
//! We assign the packet ids and keep every unacknowledged delivery in
//! `inflight`; when the link drops they go back to the front of their lanes
//! (in send order), so the next connection sends them again first. A lane
//! entry is acknowledged in the store only on the cloud's PUBACK (or PUBCOMP).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{BatchMode, BridgeConfig, BridgeProtocol};
use super::stats::{add, BridgeStats};
use super::{Lane, CLIENT_ID_PREFIX};
use crate::broker::Broker;
use crate::envelope::{self, Format};
use crate::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, PublishProperties,
    QoS, Subscribe, SubscribeFilter,
};
use crate::router::{Delivery, Message};

const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// A plain or TLS connection to the cloud.
type Stream = Box<dyn crate::server::Transport>;

/// Why a connection to the cloud ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve or connect to {0}: {1}")]
    Connect(String, std::io::Error),
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
}

/// One PUBLISH to the cloud waiting for its acknowledgement.
struct InFlight {
    /// Send order, to requeue in order after a link loss.
    seq: u64,
    lane: usize,
    deliveries: Vec<Delivery>,
}

pub struct Bridge {
    broker: Arc<Broker>,
    config: BridgeConfig,
    lanes: Vec<Lane>,
    stats: Arc<BridgeStats>,
    inflight: HashMap<u16, InFlight>,
    next_pkid: u16,
    next_seq: u64,
    /// Downlink QoS 2 packet ids received and not yet released.
    incoming_qos2: std::collections::HashSet<u16>,
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
        let downlink_publisher = Arc::from(format!("{CLIENT_ID_PREFIX}{}", config.name).as_str());
        Bridge {
            broker,
            config,
            lanes,
            stats,
            inflight: HashMap::new(),
            next_pkid: 0,
            next_seq: 0,
            incoming_qos2: Default::default(),
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
        let mut backoff = self.config.reconnect_min_ms.max(1);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.connection() => r,
                _ = shutdown.changed() => Err(LinkError::Shutdown),
            };
            self.stats.link_up.store(0, Ordering::Relaxed);
            self.requeue_inflight();
            match result {
                Err(LinkError::Shutdown) | Ok(()) => break,
                Err(e) => tracing::warn!(bridge = %self.config.name, error = %e, "cloud link down"),
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = self.config.reconnect_min_ms.max(1);
            }
            let jitter = u64::from(rand::random::<u16>()) % (backoff / 2 + 1);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(backoff + jitter)) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(self.config.reconnect_max_ms.max(backoff));
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        for lane in self.lanes.drain(..) {
            self.broker.close_session(lane.conn_id, lane.session);
        }
    }

    /// Puts every unacknowledged delivery back at the front of its lane.
    fn requeue_inflight(&mut self) {
        let mut by_seq: BTreeMap<u64, InFlight> =
            self.inflight.drain().map(|(_, f)| (f.seq, f)).collect();
        // Newest first, each pushed to the front: the oldest ends up first.
        while let Some((_, f)) = by_seq.pop_last() {
            if let Some(lane) = self.lanes.get(f.lane) {
                lane.session.mailbox.requeue_front(f.deliveries);
            }
        }
        self.stats.inflight.store(0, Ordering::Relaxed);
    }

    async fn connection(&mut self) -> Result<(), LinkError> {
        let mut stream = self.connect().await?;
        let version = self.version();
        let mut rbuf = BytesMut::with_capacity(4096);
        let receive_max = self.handshake(&mut stream, &mut rbuf).await?;
        tracing::info!(bridge = %self.config.name, address = %self.config.address, "cloud link up");
        self.stats.link_up.store(1, Ordering::Relaxed);
        let keepalive = Duration::from_secs(u64::from(self.config.keepalive_secs.max(1)));
        let mut ping = tokio::time::interval(keepalive);
        ping.tick().await;
        let mut wbuf = BytesMut::new();
        loop {
            self.pump(receive_max, version, &mut wbuf).await?;
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                add(&self.stats.bytes_sent, wbuf.len());
                wbuf.clear();
            }
            let depth: usize = self.lanes.iter().map(|l| l.session.mailbox.len()).sum();
            self.stats.lane_depth.store(depth as u64, Ordering::Relaxed);
            let room = self.inflight.len() < receive_max;
            tokio::select! {
                r = stream.read_buf(&mut rbuf) => {
                    if r? == 0 {
                        return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    while let Some(packet) = protocol::decode(&mut rbuf, version, MAX_PACKET)? {
                        self.on_packet(packet, version, &mut wbuf).await?;
                    }
                }
                _ = self.any_mail(), if room => {}
                _ = ping.tick() => protocol::encode(&Packet::PingReq, version, &mut wbuf)?,
            }
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

    /// CONNECT/CONNACK and the downlink subscriptions; returns the window.
    async fn handshake(
        &mut self,
        stream: &mut Stream,
        rbuf: &mut BytesMut,
    ) -> Result<usize, LinkError> {
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
            let pkid = self.pkid();
            protocol::encode(
                &Packet::Subscribe(Subscribe {
                    pkid,
                    filters,
                    ..Default::default()
                }),
                version,
                &mut out,
            )?;
        }
        stream.write_all(&out).await?;
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(p) = protocol::decode(rbuf, version, MAX_PACKET)? {
                    return Ok::<_, LinkError>(p);
                }
                if stream.read_buf(rbuf).await? == 0 {
                    return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        })
        .await
        .map_err(|_| LinkError::Timeout)??;
        match connack {
            Packet::ConnAck(a) if a.reason_code == 0 => {
                let cloud_max = a.properties.receive_maximum.unwrap_or(u16::MAX);
                Ok(usize::from(cloud_max.min(self.config.max_inflight)))
            }
            Packet::ConnAck(a) => Err(LinkError::Refused(a.reason_code)),
            _ => Err(LinkError::Refused(protocol::reason::PROTOCOL_ERROR)),
        }
    }

    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Completes when some lane has something to send (or spilled backlog).
    async fn any_mail(&self) {
        let waits = self
            .lanes
            .iter()
            .map(|l| Box::pin(l.session.mailbox.notified()));
        if self.lanes.is_empty() {
            return std::future::pending().await;
        }
        futures_select_all(waits.collect()).await;
    }

    /// Moves lane deliveries into PUBLISH packets while the window allows.
    async fn pump(
        &mut self,
        receive_max: usize,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        while self.inflight.len() < receive_max {
            let Some((lane, batch)) = self.next_batch().await else {
                return Ok(());
            };
            let deliveries: Vec<Delivery> = batch
                .into_iter()
                .filter(|d| {
                    let own = d.message.publisher.as_deref() == Some(&*self.downlink_publisher);
                    if own {
                        // A downlink message: never sent back up. Done with it.
                        self.ack_lane(lane, d);
                    }
                    !own
                })
                .collect();
            if deliveries.is_empty() {
                continue;
            }
            let publish = self.build_publish(lane, &deliveries, version)?;
            protocol::encode(&Packet::Publish(publish.clone()), version, wbuf)?;
            add(&self.stats.messages_sent, deliveries.len());
            if publish.qos == QoS::AtMostOnce {
                for d in &deliveries {
                    self.ack_lane(lane, d);
                }
            } else {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.inflight.insert(
                    publish.pkid,
                    InFlight {
                        seq,
                        lane,
                        deliveries,
                    },
                );
                self.stats
                    .inflight
                    .store(self.inflight.len() as u64, Ordering::Relaxed);
            }
            if wbuf.len() > 64 * 1024 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The next batch from the highest-priority lane that has one. Pages a
    /// spilled backlog in from the store first.
    async fn next_batch(&mut self) -> Option<(usize, Vec<Delivery>)> {
        let max = match self.config.batch.mode {
            BatchMode::Mirror => 1,
            BatchMode::Envelope => self.config.batch.max_messages,
        };
        for i in 0..self.lanes.len() {
            let mailbox = self.lanes[i].session.mailbox.clone();
            if mailbox.is_empty() {
                if let Some((from, seq)) = mailbox.spill_state() {
                    let client_id = self.lanes[i].session.client_id.clone();
                    let page_size = 1000;
                    if let Ok(page) = self
                        .broker
                        .persistence
                        .fetch(&client_id, from, page_size)
                        .await
                    {
                        let complete = page.len() < page_size;
                        let session = &self.lanes[i].session;
                        let page = page
                            .into_iter()
                            .map(|m| crate::storage::durable::delivery_for(session, Arc::new(m)))
                            .collect();
                        mailbox.refill(page, seq, complete);
                    }
                }
            }
            let linger = Duration::from_millis(self.config.batch.linger_ms);
            if self.config.batch.mode == BatchMode::Envelope
                && !mailbox.is_empty()
                && mailbox.len() < max
                && !linger.is_zero()
            {
                // A batch goes out when full or after linger_ms.
                tokio::time::sleep(linger).await;
            }
            let mut batch = Vec::new();
            mailbox.drain(max, &mut batch);
            if self.config.batch.mode == BatchMode::Envelope {
                // Respect max_bytes: keep what fits, put the rest back.
                let mut bytes = 0;
                let encoding = self.config.batch.encoding;
                let cut = batch
                    .iter()
                    .position(|d| {
                        bytes += envelope_message(d, "").size_hint(encoding);
                        bytes > self.config.batch.max_bytes
                    })
                    .map_or(batch.len(), |p| p.max(1));
                let rest = batch.split_off(cut);
                mailbox.requeue_front(rest);
            }
            if !batch.is_empty() {
                return Some((i, batch));
            }
        }
        None
    }

    fn build_publish(
        &mut self,
        lane: usize,
        deliveries: &[Delivery],
        version: ProtocolVersion,
    ) -> Result<Publish, LinkError> {
        let rule = &self.lanes[lane].rule;
        let prefix = rule.remote_prefix.clone();
        match self.config.batch.mode {
            BatchMode::Mirror => {
                let d = &deliveries[0];
                // The router granted min(published, rule QoS) already;
                // stored QoS 0 (store_qos0) arrives as QoS 1 so its lane
                // entry is acknowledged by the cloud.
                let qos = d.qos;
                let pkid = if qos == QoS::AtMostOnce {
                    0
                } else {
                    self.pkid()
                };
                let mut properties = d.message.properties.clone();
                properties.subscription_identifiers.clear();
                properties.topic_alias = None;
                Ok(Publish {
                    dup: false,
                    qos,
                    retain: d.message.retain,
                    topic: format!("{prefix}{}", d.message.topic),
                    pkid,
                    properties,
                    payload: d.message.payload.clone(),
                })
            }
            BatchMode::Envelope => {
                let messages: Vec<envelope::Message> = deliveries
                    .iter()
                    .map(|d| envelope_message(d, &prefix))
                    .collect();
                let format = Format {
                    encoding: self.config.batch.encoding,
                    compression: self.config.batch.compression,
                };
                let raw: usize = messages.iter().map(|m| m.size_hint(format.encoding)).sum();
                let body = envelope::encode(&messages, format)
                    .map_err(|e| LinkError::Io(std::io::Error::other(e.to_string())))?;
                add(&self.stats.envelope_raw_bytes, raw);
                add(&self.stats.envelope_wire_bytes, body.len());
                add(&self.stats.batches_sent, 1);
                let properties = PublishProperties {
                    content_type: version.is_v5().then(|| format.content_type()),
                    ..PublishProperties::default()
                };
                Ok(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: self.config.batch.envelope_topic.clone().unwrap_or_default(),
                    pkid: self.pkid(),
                    properties,
                    payload: Bytes::from(body),
                })
            }
        }
    }

    fn ack_lane(&self, lane: usize, d: &Delivery) {
        if d.qos != QoS::AtMostOnce {
            let client_id = &self.lanes[lane].session.client_id;
            self.broker.persistence.ack(client_id, d.message.id);
        }
    }

    async fn on_packet(
        &mut self,
        packet: Packet,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        match packet {
            Packet::PubAck(a) | Packet::PubComp(a) => self.complete(a.pkid),
            Packet::PubRec(a) => {
                if a.reason_code >= 0x80 {
                    self.complete(a.pkid);
                } else {
                    protocol::encode(
                        &Packet::PubRel(PubAck {
                            pkid: a.pkid,
                            ..Default::default()
                        }),
                        version,
                        wbuf,
                    )?;
                }
            }
            Packet::Publish(p) => self.downlink(p, version, wbuf).await?,
            Packet::PubRel(a) => {
                self.incoming_qos2.remove(&a.pkid);
                protocol::encode(
                    &Packet::PubComp(PubAck {
                        pkid: a.pkid,
                        ..Default::default()
                    }),
                    version,
                    wbuf,
                )?;
            }
            Packet::Disconnect(d) => return Err(LinkError::Refused(d.reason_code)),
            _ => {}
        }
        Ok(())
    }

    /// The cloud acknowledged a PUBLISH: its lane entries are done.
    fn complete(&mut self, pkid: u16) {
        if let Some(f) = self.inflight.remove(&pkid) {
            for d in &f.deliveries {
                self.ack_lane(f.lane, d);
            }
        }
        self.stats
            .inflight
            .store(self.inflight.len() as u64, Ordering::Relaxed);
    }

    /// A cloud message: publish it locally under its mapped topic, then
    /// acknowledge it to the cloud once it is durable here.
    async fn downlink(
        &mut self,
        p: Publish,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        add(&self.stats.messages_received, 1);
        let rule = self
            .config
            .downlinks
            .iter()
            .find(|d| protocol::topic::matches(&d.filter, &p.topic))
            .cloned();
        let duplicate = p.qos == QoS::ExactlyOnce && !self.incoming_qos2.insert(p.pkid);
        if let (Some(rule), false) = (rule, duplicate) {
            let topic = p
                .topic
                .strip_prefix(rule.strip_prefix.as_str())
                .unwrap_or(&p.topic)
                .to_string();
            let size = p.payload.len();
            if crate::policy::may_publish_downlink(&self.broker, &self.config.name, &topic, size) {
                let qos = p
                    .qos
                    .min(QoS::from_u8(rule.qos).unwrap_or(QoS::AtLeastOnce));
                let message = Message::new(
                    topic,
                    p.payload.clone(),
                    qos,
                    p.retain,
                    p.properties.clone(),
                    Some(self.downlink_publisher.clone()),
                );
                if let Err(e) = self.broker.publish(Arc::new(message)).wait().await {
                    // Not acknowledged: the cloud sends it again.
                    tracing::error!(bridge = %self.config.name, error = %e, "downlink message not stored");
                    return Ok(());
                }
            }
        }
        let ack = PubAck {
            pkid: p.pkid,
            ..Default::default()
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => protocol::encode(&Packet::PubAck(ack), version, wbuf)?,
            QoS::ExactlyOnce => protocol::encode(&Packet::PubRec(ack), version, wbuf)?,
        }
        Ok(())
    }
}

/// The envelope form of a delivery, with the rule's remote prefix.
fn envelope_message(d: &Delivery, prefix: &str) -> envelope::Message {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    envelope::Message {
        topic: format!("{prefix}{}", d.message.topic),
        timestamp_ms: now_ms,
        qos: d.qos as u8,
        retain: d.message.retain,
        payload: d.message.payload.clone(),
        user_properties: d.message.properties.user_properties.clone(),
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
