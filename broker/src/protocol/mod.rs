//! MQTT 3.1.1 and 5.0 codec: IO-free, bytes in, packets out.
//!
//! The connection task owns a `BytesMut` read buffer and calls [`decode`]
//! until it returns `Ok(None)` ("need more bytes"). The fixed header and the
//! maximum packet size are checked before a packet is buffered in full, so a
//! hostile remaining length cannot make us allocate. Every malformed input is
//! an error carrying the v5 reason code to send back, never a panic.
//!
//! Layout: one module per packet (as in rumqtt's mqttbytes), shared
//! primitives in `wire`, the data model in `packet`, reason codes in
//! `reason`, topic name/filter rules in `topic`.

mod auth;
mod connack;
mod connect;
mod disconnect;
pub mod packet;
mod puback;
mod publish;
pub mod reason;
mod suback;
mod subscribe;
pub mod topic;
mod unsuback;
mod unsubscribe;
pub mod wire;

use bytes::{BufMut, BytesMut};

pub use packet::*;
use wire::{put_varint, varint_len, Reader};

/// Why a packet could not be decoded; each maps to a v5 reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed {packet:?} packet: {reason}")]
    Malformed {
        packet: PacketType,
        reason: &'static str,
    },
    #[error("protocol error in {packet:?} packet: {reason}")]
    Protocol {
        packet: PacketType,
        reason: &'static str,
    },
    #[error("malformed fixed header: {0}")]
    Header(&'static str),
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol { level: u8 },
    #[error("invalid topic name in PUBLISH")]
    TopicNameInvalid,
    #[error("topic alias 0")]
    TopicAliasInvalid,
}

impl DecodeError {
    /// The v5 reason code for the DISCONNECT (or CONNACK) that answers this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed { .. } | DecodeError::Header(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol { .. } => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid => reason::TOPIC_NAME_INVALID,
            DecodeError::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes, more than the 65,535 MQTT allows")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("packet of {0} bytes is larger than MQTT's 268,435,455-byte limit")]
    PacketTooLarge(usize),
    #[error("packet identifier 0 on a packet that needs one")]
    ZeroPacketId,
    #[error("{0} needs at least one topic filter")]
    Empty(&'static str),
    #[error("AUTH does not exist in MQTT 3.1.1")]
    AuthInV311,
}

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    pub flags: u8,
    /// Bytes of fixed header (1 + length of the remaining length).
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FixedHeader {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

fn packet_type(byte: u8) -> Result<PacketType, DecodeError> {
    Ok(match byte >> 4 {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => PacketType::Publish,
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 => PacketType::Auth,
        _ => return Err(DecodeError::Header("packet type 0 is reserved")),
    })
}

/// Reads the fixed header from the front of `buf` without consuming it.
/// `Ok(None)` means more bytes are needed to read it.
pub fn check_header(buf: &[u8], max_packet_size: u32) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = packet_type(first)?;
    let flags = first & 0x0F;
    let expected = match packet_type {
        PacketType::Publish => None,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0x02),
        _ => Some(0x00),
    };
    if expected.is_some_and(|e| e != flags) {
        return Err(DecodeError::Header("reserved fixed header flags are wrong"));
    }
    let mut remaining_len: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header = FixedHeader {
                packet_type,
                flags,
                header_len: 2 + i,
                remaining_len,
            };
            if header.frame_len() > max_packet_size as usize {
                return Err(DecodeError::PacketTooLarge {
                    size: header.frame_len(),
                    max: max_packet_size,
                });
            }
            return Ok(Some(header));
        }
    }
    Err(DecodeError::Header("remaining length longer than 4 bytes"))
}

/// Decodes one packet from the front of `buf`. `Ok(None)`: need more bytes
/// (`buf` untouched). `version` is the connection's protocol version; a
/// CONNECT carries its own. On success the packet's bytes are split off
/// `buf`; payloads share its memory.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let backing = buf.capacity();
    decode_in_buffer(buf, version, max_packet_size, backing)
}

/// [`decode`] from a read buffer whose allocation is `backing` bytes (its
/// owner knows; [`decode`] assumes `buf.capacity()`, a lower bound): small
/// payloads and binary fields are copied out of it, so a message kept long
/// does not keep the whole buffer alive (see [`wire::ZERO_COPY_MIN`]).
pub fn decode_in_buffer(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    backing: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = check_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    let _ = buf.split_to(header.header_len);
    let body = buf.split_to(header.remaining_len).freeze();
    let backing = backing.max(header.frame_len());
    let mut r = Reader::in_buffer(body, header.packet_type, backing);
    decode_body(&mut r, header.flags, version).map(Some)
}

fn decode_body(r: &mut Reader, flags: u8, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    Ok(match r.packet() {
        PacketType::Connect => Packet::Connect(Box::new(connect::decode(r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack::decode(r, version)?),
        PacketType::Publish => Packet::Publish(publish::decode(r, flags, version)?),
        PacketType::PubAck => Packet::PubAck(puback::decode(r, version)?),
        PacketType::PubRec => Packet::PubRec(puback::decode(r, version)?),
        PacketType::PubRel => Packet::PubRel(puback::decode(r, version)?),
        PacketType::PubComp => Packet::PubComp(puback::decode(r, version)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe::decode(r, version)?),
        PacketType::SubAck => Packet::SubAck(suback::decode(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe::decode(r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback::decode(r, version)?),
        PacketType::PingReq => {
            r.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            r.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(disconnect::decode(r, version)?),
        PacketType::Auth => {
            if !version.is_v5() {
                return Err(r.malformed("AUTH is reserved in MQTT 3.1.1"));
            }
            Packet::Auth(auth::decode(r)?)
        }
    })
}

/// Remaining length of the encoded packet (everything after the fixed header).
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(c) => connect::len(c),
        Packet::ConnAck(c) => connack::len(c, version),
        Packet::Publish(p) => publish::len(p, version),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            puback::len(a, version)
        }
        Packet::Subscribe(s) => subscribe::len(s, version),
        Packet::SubAck(s) => suback::len(s, version),
        Packet::Unsubscribe(u) => unsubscribe::len(u, version),
        Packet::UnsubAck(u) => unsuback::len(u, version),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => disconnect::len(d, version),
        Packet::Auth(a) => auth::len(a),
    }
}

/// Total encoded size (fixed header included), for Maximum Packet Size checks.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = remaining_len(packet, version);
    1 + varint_len(remaining) + remaining
}

fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => publish::flags(p),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0x02,
        _ => 0,
    };
    ((packet.packet_type() as u8) << 4) | flags
}

/// Appends the encoded packet to `buf`. A 3.1.1 encoding drops properties and
/// maps reason codes to 3.1.1 return codes. On error nothing is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if matches!(packet, Packet::Auth(_)) && !version.is_v5() {
        return Err(EncodeError::AuthInV311);
    }
    let remaining = remaining_len(packet, version);
    if remaining > wire::MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    let start = buf.len();
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first_byte(packet));
    put_varint(buf, remaining);
    let result = match packet {
        // A CONNECT carries its own protocol version.
        Packet::Connect(c) => connect::encode(c, buf),
        Packet::ConnAck(c) => connack::encode(c, version, buf),
        Packet::Publish(p) => publish::encode(p, version, buf),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            puback::encode(a, version, buf)
        }
        Packet::Subscribe(s) => subscribe::encode(s, version, buf),
        Packet::SubAck(s) => suback::encode(s, version, buf),
        Packet::Unsubscribe(u) => unsubscribe::encode(u, version, buf),
        Packet::UnsubAck(u) => unsuback::encode(u, version, buf),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => disconnect::encode(d, version, buf),
        Packet::Auth(a) => auth::encode(a, buf),
    };
    if result.is_err() {
        buf.truncate(start);
    }
    debug_assert!(result.is_err() || buf.len() - start == encoded_len(packet, version));
    result
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod zero_copy_tests;
