//! A minimal MQTT connection on edgemq's codec over plain TCP.
//!
//! Devices own their packet ids and see every PUBACK, as real firmware with
//! a small MQTT stack does; this is also far lighter than a full client per
//! device, so one process can drive thousands of them.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use edgemq::framed::{self, FramedError};
use edgemq::protocol::{self, Connect, Packet, ProtocolVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const MAX_PACKET: u32 = 1024 * 1024;

/// One open MQTT connection.
pub struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
}

/// Connects, sends CONNECT and waits for a successful CONNACK.
/// Returns the connection and the broker's session-present flag.
pub async fn connect(
    addr: &str,
    connect: Connect,
    timeout: Duration,
) -> anyhow::Result<(Conn, bool)> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let version = connect.protocol;
        let (reader, writer) = stream.into_split();
        let mut conn = Conn {
            reader,
            writer,
            buf: BytesMut::with_capacity(256),
            out: BytesMut::with_capacity(256),
            version,
        };
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.next().await? {
            Packet::ConnAck(ack) if ack.reason_code == 0 => Ok((conn, ack.session_present)),
            Packet::ConnAck(ack) => {
                bail!("connection refused, reason code {:#04x}", ack.reason_code)
            }
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("connect timed out")?
}

impl Conn {
    /// Writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        self.out.clear();
        protocol::encode(packet, self.version, &mut self.out)?;
        self.writer.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads the next packet. Cancel-safe: bytes already read stay buffered.
    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        match framed::read_packet(&mut self.reader, &mut self.buf, self.version, MAX_PACKET).await {
            Err(FramedError::Closed) => bail!("broker closed the connection"),
            r => Ok(r?),
        }
    }
}

/// Waits for the next packet of `conn`, or forever when there is none.
pub async fn next_on(conn: &mut Option<Conn>) -> anyhow::Result<Packet> {
    match conn {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}
