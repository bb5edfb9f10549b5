//! One raw MQTT connection: connect, subscribe, and a framed reader, all on
//! edgemq's codec. Publishing is done by the scenarios, which pre-encode
//! packets into large buffers and write them in one call.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use edgemq::framed::{self, FramedError};
use edgemq::protocol::{
    self, ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe,
    SubscribeFilter, SubscribeProperties,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// Reads packets from a socket half.
pub struct PacketReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl PacketReader {
    /// The next packet already buffered, without reading the socket.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(framed::next_buffered(
            &mut self.buf,
            self.version,
            MAX_PACKET,
        )?)
    }

    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        if let Some(packet) = self.try_next()? {
            return Ok(packet);
        }
        // Large reads: a subscriber here drains bursts of many packets.
        self.buf.reserve(64 * 1024);
        match framed::read_packet(&mut self.half, &mut self.buf, self.version, MAX_PACKET).await {
            Err(FramedError::Closed) => bail!("broker closed the connection"),
            r => Ok(r?),
        }
    }
}

pub struct Conn {
    pub reader: PacketReader,
    pub writer: OwnedWriteHalf,
    pub version: ProtocolVersion,
}

pub fn version(v5: bool) -> ProtocolVersion {
    if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

/// Connects with a clean session and waits for a successful CONNACK.
pub async fn connect(addr: &str, client_id: &str, v5: bool) -> anyhow::Result<Conn> {
    connect_with(addr, client_id, v5, true).await
}

/// Connects (clean or persistent session) and waits for a successful CONNACK.
pub async fn connect_with(
    addr: &str,
    client_id: &str,
    v5: bool,
    clean: bool,
) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let version = version(v5);
    let (read, mut writer) = stream.into_split();
    let connect = Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 600,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            receive_maximum: v5.then_some(u16::MAX),
            session_expiry_interval: (v5 && !clean).then_some(u32::MAX),
            ..Default::default()
        },
    }));
    let mut out = BytesMut::new();
    protocol::encode(&connect, version, &mut out)?;
    writer.write_all(&out).await?;
    let mut reader = PacketReader {
        half: read,
        buf: BytesMut::with_capacity(4096),
        version,
    };
    match tokio::time::timeout(Duration::from_secs(30), reader.next()).await?? {
        Packet::ConnAck(ConnAck { reason_code: 0, .. }) => {}
        other => bail!("connection refused: {other:?}"),
    }
    Ok(Conn {
        reader,
        writer,
        version,
    })
}

impl Conn {
    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        protocol::encode(
            &Packet::Disconnect(Default::default()),
            self.version,
            &mut out,
        )?;
        self.writer.write_all(&out).await?;
        self.writer.shutdown().await?;
        Ok(())
    }

    /// Subscribes to one filter and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let sub = Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: SubscribeProperties::default(),
            filters: vec![SubscribeFilter::new(filter, qos)],
        });
        let mut out = BytesMut::new();
        protocol::encode(&sub, self.version, &mut out)?;
        self.writer.write_all(&out).await?;
        loop {
            match self.reader.next().await? {
                Packet::SubAck(ack) if ack.reason_codes.iter().all(|c| *c < 0x80) => return Ok(()),
                Packet::SubAck(ack) => bail!("subscription refused: {:?}", ack.reason_codes),
                _ => {}
            }
        }
    }
}
