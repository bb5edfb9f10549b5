//! PUBLISH (MQTT 3.1.1 section 3.3, MQTT 5.0 section 3.3).
//!
//! The payload is the rest of the packet: a zero-copy slice of the read
//! buffer when it is large and most of that buffer, else an exact-size copy
//! (see `wire::ZERO_COPY_MIN`), so a small message waiting in a queue holds
//! only its own bytes. Topic names with wildcards are rejected here so no
//! layer above ever sees one.

use bytes::{BufMut, BytesMut};

use super::topic::valid_topic_name;
use super::wire::{check_len, prop, put_binary, PropWriter, Reader};
use super::{DecodeError, EncodeError, ProtocolVersion, Publish, PublishProperties, QoS};

pub fn decode(r: &mut Reader, flags: u8, version: ProtocolVersion) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or_else(|| r.malformed("PUBLISH QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(r.malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let retain = flags & 0x01 != 0;
    let topic = r.string()?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        let id = r.u16()?;
        if id == 0 {
            return Err(r.protocol("packet identifier 0"));
        }
        id
    };
    let properties = if version.is_v5() {
        read_props(r)?
    } else {
        PublishProperties::default()
    };
    if topic.is_empty() {
        if properties.topic_alias.is_none() {
            return Err(DecodeError::TopicNameInvalid);
        }
    } else if !valid_topic_name(&topic) {
        return Err(DecodeError::TopicNameInvalid);
    }
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        properties,
        payload,
    })
}

fn read_props(r: &mut Reader) -> Result<PublishProperties, DecodeError> {
    let mut p = PublishProperties::default();
    r.properties(|r, id| {
        match id {
            prop::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(r.flag_byte()?),
            prop::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            prop::TOPIC_ALIAS => {
                let alias = r.u16()?;
                if alias == 0 {
                    return Err(DecodeError::TopicAliasInvalid);
                }
                p.topic_alias = Some(alias)
            }
            prop::RESPONSE_TOPIC => {
                let t = r.string()?;
                if !valid_topic_name(&t) {
                    return Err(r.protocol("response topic contains wildcards"));
                }
                p.response_topic = Some(t)
            }
            prop::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
            prop::SUBSCRIPTION_IDENTIFIER => {
                let id = r.varint()?;
                if id == 0 {
                    return Err(r.protocol("subscription identifier 0"));
                }
                p.subscription_identifiers.push(id)
            }
            prop::CONTENT_TYPE => p.content_type = Some(r.string()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn props(p: &PublishProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.byte(prop::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator)
        .u32(prop::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval)
        .u16(prop::TOPIC_ALIAS, p.topic_alias)
        .string(prop::RESPONSE_TOPIC, &p.response_topic)
        .binary(prop::CORRELATION_DATA, &p.correlation_data)
        .users(&p.user_properties);
    for id in &p.subscription_identifiers {
        w.varint(prop::SUBSCRIPTION_IDENTIFIER, *id);
    }
    w.string(prop::CONTENT_TYPE, &p.content_type);
    w
}

/// Fixed-header flags (DUP, QoS, RETAIN).
pub fn flags(p: &Publish) -> u8 {
    (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

pub fn len(p: &Publish, version: ProtocolVersion) -> usize {
    let mut n = 2 + p.topic.len() + p.payload.len();
    if p.qos != QoS::AtMostOnce {
        n += 2;
    }
    if version.is_v5() {
        n += props(&p.properties).len();
    }
    n
}

pub fn encode(
    p: &Publish,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_len(p.topic.len(), "topic")?;
    if p.qos != QoS::AtMostOnce && p.pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    put_binary(buf, p.topic.as_bytes());
    if p.qos != QoS::AtMostOnce {
        buf.put_u16(p.pkid);
    }
    if version.is_v5() {
        let w = props(&p.properties);
        w.check()?;
        w.write(buf);
    }
    buf.put_slice(&p.payload);
    Ok(())
}
