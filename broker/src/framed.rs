//! Reading whole MQTT packets from a byte stream: the one framed reader
//! shared by the handshake, the bridge's cloud link, firmware-sim,
//! edgemq-bench and the tests.
//!
//! Invariants:
//! - the size limit is checked from the fixed header by
//!   [`protocol::decode`] before the body is buffered, so a peer cannot make
//!   the reader buffer more than `max_size` bytes of one packet;
//! - cancel-safe: bytes already read stay in the caller's buffer, and a
//!   packet is taken out of it only when it is whole, so dropping a
//!   [`read_packet`] future (in a `select!`) loses nothing;
//! - never panics on what the peer sends: malformed bytes are a
//!   [`FramedError::Decode`], an early end of stream [`FramedError::Closed`].
//!
//! `protocol` itself stays IO-free; this module is the only place that
//! joins it to `AsyncRead` (and, for blocking test clients, `std::io::Read`).

#![warn(missing_docs, unreachable_pub)]

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{self, DecodeError, Packet, ProtocolVersion};

/// How many bytes a read asks room for when the buffer holds no whole packet.
const READ_CHUNK: usize = 4096;

/// Why no packet was read.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The stream ended (at a packet boundary or inside a packet).
    #[error("the peer closed the connection")]
    Closed,
    /// Reading the stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid packet, or it is larger than allowed.
    #[error("invalid packet: {0}")]
    Decode(#[from] DecodeError),
    /// The first byte of a packet is not one the caller accepts (checked
    /// before the packet is buffered; see [`read_packet_where`]).
    #[error("unexpected first byte 0x{0:02x}")]
    UnexpectedFirstByte(u8),
}

/// The next whole packet already in `buf`, without reading.
pub fn next_buffered(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: u32,
) -> Result<Option<Packet>, FramedError> {
    Ok(protocol::decode(buf, version, max_size)?)
}

/// Reads from `stream` into `buf` until it holds one whole packet of at most
/// `max_size` bytes and returns it; what follows it stays in `buf`.
pub async fn read_packet<R: AsyncRead + Unpin + ?Sized>(
    stream: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: u32,
) -> Result<Packet, FramedError> {
    read_packet_where(stream, buf, version, max_size, |_| true).await
}

/// [`read_packet`], refusing a packet whose first byte fails `first_ok` as
/// soon as that byte arrives (the handshake accepts only a CONNECT).
pub async fn read_packet_where<R: AsyncRead + Unpin + ?Sized>(
    stream: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: u32,
    first_ok: impl Fn(u8) -> bool,
) -> Result<Packet, FramedError> {
    loop {
        if let Some(&first) = buf.first() {
            if !first_ok(first) {
                return Err(FramedError::UnexpectedFirstByte(first));
            }
        }
        if let Some(packet) = protocol::decode(buf, version, max_size)? {
            return Ok(packet);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(buf).await? == 0 {
            return Err(FramedError::Closed);
        }
    }
}

/// [`read_packet`] over a blocking reader (the tests' raw socket clients).
pub fn read_packet_blocking<R: std::io::Read + ?Sized>(
    stream: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: u32,
) -> Result<Packet, FramedError> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        if let Some(packet) = protocol::decode(buf, version, max_size)? {
            return Ok(packet);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(FramedError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PubAck, Publish, QoS};
    use bytes::Bytes;

    fn encoded(packets: &[Packet], v: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in packets {
            protocol::encode(p, v, &mut out).unwrap();
        }
        out.to_vec()
    }

    #[tokio::test]
    async fn reads_packets_split_at_every_byte() {
        let v = ProtocolVersion::V5;
        let packets = vec![
            Packet::PingReq,
            Packet::PubAck(PubAck {
                pkid: 7,
                ..Default::default()
            }),
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "a/b".into(),
                pkid: 1,
                payload: Bytes::from_static(b"hello"),
                ..Default::default()
            }),
        ];
        let bytes = encoded(&packets, v);
        // A reader that hands out one byte per read.
        let (mut tx, mut rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in bytes {
                tx.write_all(&[b]).await.unwrap();
            }
        });
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for _ in 0..packets.len() {
            got.push(read_packet(&mut rx, &mut buf, v, 1024).await.unwrap());
        }
        writer.await.unwrap();
        assert!(matches!(
            read_packet(&mut rx, &mut buf, v, 1024).await,
            Err(FramedError::Closed)
        ));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Packet::PingReq);
        assert!(matches!(&got[1], Packet::PubAck(a) if a.pkid == 7));
        assert!(matches!(&got[2], Packet::Publish(p) if &p.payload[..] == b"hello"));
    }

    #[tokio::test]
    async fn refuses_oversize_from_the_header_and_a_bad_first_byte() {
        let v = ProtocolVersion::V311;
        let big = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; 500]),
            ..Default::default()
        });
        let bytes = encoded(&[big], v);
        let mut r: &[u8] = &bytes[..4];
        let mut buf = BytesMut::new();
        let err = read_packet(&mut r, &mut buf, v, 100).await.unwrap_err();
        assert!(matches!(err, FramedError::Decode(_)), "{err:?}");

        let bytes = encoded(&[Packet::PingReq], v);
        let mut r: &[u8] = &bytes;
        let mut buf = BytesMut::new();
        let err = read_packet_where(&mut r, &mut buf, v, 100, |b| b >> 4 == 1)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FramedError::UnexpectedFirstByte(0xc0)),
            "{err:?}"
        );
    }

    #[test]
    fn blocking_reader_reads_then_reports_closed() {
        let v = ProtocolVersion::V311;
        let bytes = encoded(&[Packet::PingResp, Packet::PingReq], v);
        let mut r: &[u8] = &bytes;
        let mut buf = BytesMut::new();
        assert_eq!(
            read_packet_blocking(&mut r, &mut buf, v, 16).unwrap(),
            Packet::PingResp
        );
        assert_eq!(
            read_packet_blocking(&mut r, &mut buf, v, 16).unwrap(),
            Packet::PingReq
        );
        assert!(matches!(
            read_packet_blocking(&mut r, &mut buf, v, 16),
            Err(FramedError::Closed)
        ));
    }
}
