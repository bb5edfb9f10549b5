//! CONNACK (MQTT 3.1.1 section 3.2, MQTT 5.0 section 3.2).

use bytes::{BufMut, BytesMut};

use super::reason::connack_v311;
use super::wire::{prop, PropWriter, Reader};
use super::{ConnAck, ConnAckProperties, DecodeError, EncodeError, ProtocolVersion};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(r.malformed("CONNACK reserved flags set"));
    }
    let reason_code = r.u8()?;
    let properties = if version.is_v5() && r.remaining() > 0 {
        read_props(r)?
    } else {
        ConnAckProperties::default()
    };
    r.finish()?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

fn read_props(r: &mut Reader) -> Result<ConnAckProperties, DecodeError> {
    let mut p = ConnAckProperties::default();
    r.properties(|r, id| {
        match id {
            prop::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            prop::RECEIVE_MAXIMUM => p.receive_maximum = Some(r.u16()?),
            prop::MAXIMUM_QOS => p.maximum_qos = Some(r.flag_byte()?),
            prop::RETAIN_AVAILABLE => p.retain_available = Some(r.flag_byte()?),
            prop::MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(r.u32()?),
            prop::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            prop::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            prop::REASON_STRING => p.reason_string = Some(r.string()?),
            prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(r.flag_byte()?)
            }
            prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifiers_available = Some(r.flag_byte()?)
            }
            prop::SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available = Some(r.flag_byte()?)
            }
            prop::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            prop::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            prop::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            prop::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            prop::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn props(p: &ConnAckProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.u32(prop::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)
        .u16(prop::RECEIVE_MAXIMUM, p.receive_maximum)
        .byte(prop::MAXIMUM_QOS, p.maximum_qos)
        .byte(prop::RETAIN_AVAILABLE, p.retain_available)
        .u32(prop::MAXIMUM_PACKET_SIZE, p.maximum_packet_size)
        .string(
            prop::ASSIGNED_CLIENT_IDENTIFIER,
            &p.assigned_client_identifier,
        )
        .u16(prop::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum)
        .string(prop::REASON_STRING, &p.reason_string)
        .users(&p.user_properties)
        .byte(
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE,
            p.wildcard_subscription_available,
        )
        .byte(
            prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            p.subscription_identifiers_available,
        )
        .byte(
            prop::SHARED_SUBSCRIPTION_AVAILABLE,
            p.shared_subscription_available,
        )
        .u16(prop::SERVER_KEEP_ALIVE, p.server_keep_alive)
        .string(prop::RESPONSE_INFORMATION, &p.response_information)
        .string(prop::SERVER_REFERENCE, &p.server_reference)
        .string(prop::AUTHENTICATION_METHOD, &p.authentication_method)
        .binary(prop::AUTHENTICATION_DATA, &p.authentication_data);
    w
}

pub fn len(c: &ConnAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + props(&c.properties).len()
    } else {
        2
    }
}

pub fn encode(
    c: &ConnAck,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u8(u8::from(c.session_present));
    if version.is_v5() {
        buf.put_u8(c.reason_code);
        let w = props(&c.properties);
        w.check()?;
        w.write(buf);
    } else {
        buf.put_u8(connack_v311(c.reason_code));
    }
    Ok(())
}
